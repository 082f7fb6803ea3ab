"""Turn a ``ProtectionState`` into a publishable dataset: lossless PNGs, a CSV, a manifest.

Images are written as ``out/images/<path relative to the images' common folder>.png`` (stems kept); the CSV
keeps the input's name, columns and separator, with the new image paths and the triggered captions. With
``out_format="webdataset"`` the same content goes into tar shards under ``out/shards`` instead.
Noise computed at the model's resolution is mapped back onto the image's native pixels (the center square
that the model's preprocessing crops); for images already at the model's size this is exact.
"""
from __future__ import annotations

import hashlib
from collections import Counter
import io
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from ..data.pairs import PairSet, write_pairs
from ..data.types import pil_to_u8
from ..data.webdataset import ShardWriter
from ..fileio import atomic_write, atomic_write_json
from ..models.tokens import TokenCodec
from ..quality import psnr
from .pgd import apply_noise
from .placement import insert_trigger
from .store import ProtectionState


def output_paths(pairs: PairSet) -> list[str]:
    """Relative output path of each image: under images/, mirrored from their common folder, as .png. Distinct
    sources never share an output: where two would (``photo.png`` and ``photo.jpg``), each keeps its own
    extension in the name (``photo-png.png``, ``photo-jpg.png``); the manifest records source -> file."""
    absolute = [Path(os.path.normpath(pairs.root / p)) for p in pairs.images]
    common = Path(os.path.commonpath([str(a.parent) for a in absolute]))
    rel = [a.relative_to(common) for a in absolute]
    plain = [r.with_suffix(".png") for r in rel]
    taken = Counter(str(p).lower() for p in plain)   # case-insensitive: the copy may land on such a disk
    out = [r.with_name(f"{r.stem}-{r.suffix.lstrip('.').lower() or 'noext'}.png") if taken[str(p).lower()] > 1 else p
           for r, p in zip(rel, plain)]
    seen: Counter = Counter()
    for i, o in enumerate(out):   # still equal (photo.JPG and photo.jpg): a numbered suffix, in input order
        seen[str(o).lower()] += 1
        if seen[str(o).lower()] > 1:
            out[i] = o.with_name(f"{o.stem}-{seen[str(o).lower()]}.png")
    if len({str(o).lower() for o in out}) != len(out):
        raise RuntimeError("output names still collide after disambiguation; please report this dataset's names")
    return [str(Path("images") / o) for o in out]


def native_noise(noise: torch.Tensor, width: int, height: int, eps_px: int) -> torch.Tensor:
    """int8 [3,H,W] noise on the native grid from model-resolution noise [3,S,S]."""
    s = noise.shape[-1]
    if (width, height) == (s, s):
        return noise
    side = min(width, height)
    up = F.interpolate(noise[None].float(), size=(side, side), mode="bilinear", align_corners=False)[0]
    out = torch.zeros(3, height, width)
    top, left = (height - side) // 2, (width - side) // 2
    out[:, top:top + side, left:left + side] = up
    return out.round().clamp(-eps_px, eps_px).to(torch.int8)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(pairs: PairSet, state: ProtectionState, codec: TokenCodec, out_dir: str | os.PathLike, eps_px: int,
           params: dict, progress: bool = True, out_format: str = "files", maxcount: int = 1000,
           trigger_words: list[int] | None = None) -> dict:
    """Write the protected copy into ``out_dir``; returns the manifest. Originals are only read.

    ``out_format``: ``files`` (PNGs + a CSV like the input) or ``webdataset`` (``shards/NNNNN.tar`` with
    ``key.png``, ``key.txt`` = the first caption, ``key.json`` = all captions; feeds open_clip directly).
    ``trigger_words``: before which word of each caption its image's trigger goes (default: all 0, a prefix).
    """
    if out_format not in ("files", "webdataset"):
        raise ValueError(f"out_format must be files or webdataset, got {out_format!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    triggers = [codec.trigger_text(t) if t.numel() else "" for t in state.triggers]
    words = trigger_words if trigger_words is not None else [0] * len(pairs.captions)
    captions = [insert_trigger(c, triggers[ci], w) for c, ci, w in zip(pairs.captions, pairs.caption_image, words)]
    rel_out = output_paths(pairs) if out_format == "files" else [f"{i:08d}" for i in range(pairs.n_images)]
    writer = ShardWriter(out / "shards", maxcount) if out_format == "webdataset" else None
    per_image, psnrs = [], []
    for i in tqdm(range(pairs.n_images), desc="write images", disable=None if progress else True, leave=False):
        src = pairs.open_image(i)
        x = pil_to_u8(src)
        noise = native_noise(state.noise[i], src.width, src.height, eps_px)
        y = apply_noise(x, noise)
        buf = io.BytesIO()
        Image.fromarray(y.permute(1, 2, 0).numpy()).save(buf, format="PNG")
        png = buf.getvalue()
        if writer is None:
            target = out / rel_out[i]
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, lambda tmp: tmp.write_bytes(png))
        else:
            caps = [captions[c] for c in pairs.image_captions[i]]
            writer.write(rel_out[i], {"png": png, "txt": caps[0].encode(),
                                      "json": json.dumps({"captions": caps, "source": pairs.images[i]}).encode()})
        p = psnr(x, y)
        psnrs.append(p)
        per_image.append({"source": pairs.images[i], "file": rel_out[i], "trigger": triggers[i],
                          "linf_px": int((y.to(torch.int16) - x.to(torch.int16)).abs().max()),
                          "psnr_db": None if p == float("inf") else round(p, 3),
                          "sha256": hashlib.sha256(png).hexdigest()})
    if writer is None:
        csv_path = out / pairs.source.name
        write_pairs(pairs, csv_path, captions, images=[rel_out[i] for i in pairs.caption_image])
        outputs = {"data": csv_path.name, "csv": csv_path.name, "csv_sha256": sha256(csv_path)}
    else:
        outputs = {"data": "shards/" + writer.close(), "out_format": "webdataset", "n_shards": len(writer.names)}
    finite = [p for p in psnrs if p != float("inf")]
    manifest = {
        **params,
        "n_images": pairs.n_images, "n_captions": len(pairs.captions), **outputs,
        "mean_psnr_db": round(sum(finite) / len(finite), 3) if finite else None,
        "min_psnr_db": round(min(finite), 3) if finite else None,
        "max_linf_px": max(r["linf_px"] for r in per_image),
        "images": per_image,
    }
    atomic_write_json(out / "manifest.json", manifest)
    return manifest
