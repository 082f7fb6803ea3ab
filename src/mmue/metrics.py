"""Image<->text retrieval metrics, multi-caption aware, with the random-guess level.

Keys follow open_clip (``image_to_text_R@1`` ...); values are fractions in [0,1], ranks are 1-based.
Image->text is a hit at K when *any* of the image's captions ranks in the top K (CLIP paper / CLIP_benchmark).
Ties count in the item's favour (strictly greater scores rank ahead), which matters only for degenerate
features.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

KS = (1, 5, 10)


@torch.no_grad()
def retrieval_ranks(image_features: torch.Tensor, text_features: torch.Tensor, caption_image: Sequence[int],
                    chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """0-based ranks: per image, of its best caption among all texts; per text, of its image among all images."""
    img = image_features.float()
    txt = text_features.float()
    owner = torch.as_tensor(caption_image, dtype=torch.long, device=txt.device)
    n, m = img.shape[0], txt.shape[0]
    t2i = torch.empty(m, dtype=torch.long)
    for s in range(0, m, chunk):
        sim = txt[s:s + chunk] @ img.T                                   # [c, N]
        true = sim.gather(1, owner[s:s + chunk, None])
        t2i[s:s + chunk] = (sim > true).sum(1).cpu()
    i2t = torch.empty(n, dtype=torch.long)
    for s in range(0, n, chunk):
        sim = img[s:s + chunk] @ txt.T                                   # [c, M]
        rows = torch.arange(s, min(s + chunk, n), device=txt.device)
        mine = owner[None, :] == rows[:, None]                            # [c, M] captions of each image
        best_true = sim.masked_fill(~mine, float("-inf")).max(1, keepdim=True).values
        i2t[s:s + chunk] = (sim > best_true).sum(1).cpu()
    return i2t, t2i


def random_guess(caption_image: Sequence[int], n_images: int, ks: Sequence[int] = KS) -> dict[str, float]:
    """Expected Recall@K of a uniformly random ranking (exact, hypergeometric for several captions)."""
    m = len(caption_image)
    counts = torch.bincount(torch.as_tensor(caption_image), minlength=n_images).tolist()
    out = {}
    for k in ks:
        kk = min(k, m)
        miss = [math.comb(m - c, kk) / math.comb(m, kk) if m - c >= kk else 0.0 for c in counts]
        out[f"image_to_text_R@{k}"] = 1.0 - sum(miss) / n_images
        out[f"text_to_image_R@{k}"] = min(k, n_images) / n_images
    return out


def retrieval_metrics(image_features: torch.Tensor, text_features: torch.Tensor, caption_image: Sequence[int],
                      ks: Sequence[int] = KS) -> dict[str, float]:
    i2t, t2i = retrieval_ranks(image_features, text_features, caption_image)
    out: dict[str, float] = {}
    for name, ranks in (("image_to_text", i2t), ("text_to_image", t2i)):
        for k in ks:
            out[f"{name}_R@{k}"] = (ranks < k).float().mean().item()
        out[f"{name}_median_rank"] = float(ranks.float().median().floor().item() + 1)
        out[f"{name}_mean_rank"] = ranks.float().mean().item() + 1
    out["n_images"] = int(image_features.shape[0])
    out["n_texts"] = int(text_features.shape[0])
    return out


def mean_recall(metrics: dict[str, float]) -> float:
    """Average of R@1/5/10 in both directions: the model-selection score for 'best epoch'."""
    keys = [f"{d}_R@{k}" for d in ("image_to_text", "text_to_image") for k in KS]
    return sum(metrics[k] for k in keys) / len(keys)


def format_table(rows: dict[str, dict[str, float]], ks: Sequence[int] = KS) -> str:
    """Fixed-width table of R@K in percent, one row per named result (e.g. 'clean', 'random guess')."""
    head = ["", *[f"i2t R@{k}" for k in ks], *[f"t2i R@{k}" for k in ks], "i2t medR", "t2i medR"]
    width = max([len(h) for h in head] + [len(n) for n in rows]) + 2
    lines = ["".join(h.rjust(10) if i else h.ljust(width) for i, h in enumerate(head))]
    for name, m in rows.items():
        cells = [f"{100 * m[f'{d}_R@{k}']:.1f}" for d in ("image_to_text", "text_to_image") for k in ks]
        cells += [f"{m[f'{d}_median_rank']:.0f}" if f"{d}_median_rank" in m else "-"
                  for d in ("image_to_text", "text_to_image")]
        lines.append(name.ljust(width) + "".join(c.rjust(10) for c in cells))
    return "\n".join(lines)
