"""Caption-code noise: image noise that spells out the caption's words, nothing optimised, no surrogate.

A control for the question "is any easily read image code a shortcut, or only error-minimising noise?". Each
image's noise is one ``--tile`` x ``--tile`` RGB tile repeated edge to edge, and the tile is a fixed random
projection of the TF-IDF of the image's caption words (a locality-sensitive code: captions that share words get
similar tiles), scaled so that one standard deviation is ``eps / 1.5`` and clipped to ``eps``. A victim could
read it with a linear map on either side: the same tile under every 8 px ViT patch, a periodic texture for a
convolution, and a bag of words for the text tower. ``--basis quiet`` puts the code only in the ``--dims``
directions of tile space where the clean images' own patches vary least (their smallest principal components),
so that the pictures interfere with reading it as little as they can.

    python benchmarks/caption_code.py --train-data oc64/train.csv --out CODE --tile 8 --basis random
    mmue train --train-data CODE/train.csv --val-data oc64/test.csv --model mmue-tiny-vit --out VICTIM

The copy keeps the captions unchanged (so ``oracle-captions`` is the same data) and writes ``CODE/code.json``
(parameters and PSNR).
"""
from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import numpy as np
from PIL import Image

from mmue.data.csvfile import write_pairs
from mmue.data.pairs import read_pairs
from mmue.protect.clusters import caption_features

WORD = re.compile(r"[a-z0-9]+")


def tfidf(captions: list[str], caption_image: list[int] | None = None) -> np.ndarray:
    """[n_images, vocabulary] L2-normalised TF-IDF of each image's lower-case caption words, all its captions
    together (``caption_image``: each caption's image; default one image per caption): the project's caption
    features (``protect/clusters.py``) over words rather than a tokenizer's ids, so the code does not depend on
    any model."""
    caption_image = list(range(len(captions))) if caption_image is None else caption_image
    words = [WORD.findall(c.lower()) for c in captions]
    vocab = {w: i for i, w in enumerate(sorted({w for ws in words for w in ws}))}
    image_captions = [[] for _ in range(max(caption_image, default=-1) + 1)]
    for c, i in enumerate(caption_image):
        image_captions[i].append(c)
    bodies = [[vocab[w] for w in ws] for ws in words]
    return caption_features(bodies, image_captions, dims=max(1, len(vocab))).numpy()


def quiet_basis(images: list[np.ndarray], tile: int, dims: int) -> np.ndarray:
    """[tile*tile*3, dims] orthonormal: the directions in which the images' tile-aligned patches vary least."""
    patches = []
    for a in images:
        h, w = a.shape[0] // tile * tile, a.shape[1] // tile * tile
        p = a[:h, :w].astype(np.float64).reshape(h // tile, tile, w // tile, tile, 3).transpose(0, 2, 1, 3, 4)
        patches.append(p.reshape(-1, tile * tile * 3))
    p = np.concatenate(patches)
    p -= p.mean(0)
    _, vectors = np.linalg.eigh(p.T @ p / max(1, len(p)))   # ascending variance
    return vectors[:, :dims]


def code_tiles(x: np.ndarray, tile: int, eps_px: int, seed: int, basis: np.ndarray | None = None) -> np.ndarray:
    """[n, tile, tile, 3] int16 tiles within ±eps_px: a seeded Gaussian projection of each row of ``x`` (into
    ``basis``'s span when given), one standard deviation = eps/1.5."""
    rng = np.random.default_rng(seed)
    d = tile * tile * 3
    if basis is None:
        z = x @ rng.standard_normal((x.shape[1], d)).astype(np.float32)
    else:
        z = (x @ rng.standard_normal((x.shape[1], basis.shape[1])).astype(np.float32)) @ basis.T
    z = z / np.maximum(z.std(1, keepdims=True), 1e-12)
    return np.clip(np.round(z / 1.5 * eps_px), -eps_px, eps_px).astype(np.int16).reshape(len(x), tile, tile, 3)


def apply_tile(image: np.ndarray, tile: np.ndarray) -> np.ndarray:
    """``image`` (uint8 HxWx3) plus ``tile`` repeated over it from the top-left corner, clipped to 0..255."""
    h, w = image.shape[:2]
    t = tile.shape[0]
    noise = np.tile(tile, (math.ceil(h / t), math.ceil(w / t), 1))[:h, :w]
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def write_copy(train_csv: Path, out: Path, tile: int, basis_kind: str, dims: int, eps_px: int, seed: int) -> dict:
    pairs = read_pairs(train_csv)
    images = [np.asarray(pairs.open_image(i).convert("RGB")) for i in range(len(pairs.images))]
    basis = quiet_basis(images, tile, dims) if basis_kind == "quiet" else None
    tiles = code_tiles(tfidf(pairs.captions, pairs.caption_image), tile, eps_px, seed, basis)
    sq, px = 0.0, 0
    for i, rel in enumerate(pairs.images):
        b = apply_tile(images[i], tiles[i])
        sq += float(((b.astype(np.float64) - images[i]) ** 2).sum())
        px += b.size
        dst = (out / rel).with_suffix(".png")   # lossless, whatever the source format
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(b).save(dst)
    write_pairs(pairs, out / "train.csv",
                images=[str(Path(pairs.images[i]).with_suffix(".png")) for i in pairs.caption_image])
    rms = math.sqrt(sq / max(1, px))
    info = {"train_data": str(train_csv), "tile": tile, "basis": basis_kind, "dims": dims if basis is not None
            else tile * tile * 3, "eps_px": eps_px, "seed": seed, "images": len(images),
            "distinct_codes": len({t.tobytes() for t in tiles}), "psnr_db": 20 * math.log10(255 / max(rms, 1e-12))}
    (out / "code.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="folder for the copy (refused if it has a train.csv)")
    ap.add_argument("--tile", type=int, default=8, help="tile side in pixels (8: the ViT's patch)")
    ap.add_argument("--basis", choices=("random", "quiet"), default="random",
                    help="the whole tile space, or the images' least-varying patch directions")
    ap.add_argument("--dims", type=int, default=48, help="--basis quiet: how many directions")
    ap.add_argument("--eps", type=int, default=8, help="bound in pixel levels")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.tile < 1 or not 1 <= args.eps <= 255 or not 1 <= args.dims <= args.tile ** 2 * 3:
        raise SystemExit(f"--tile must be >= 1, --eps 1..255 and --dims 1..{max(1, args.tile) ** 2 * 3} "
                         f"(a {args.tile} px RGB tile); got --tile {args.tile} --eps {args.eps} --dims {args.dims}")
    if (args.out / "train.csv").exists():
        raise SystemExit(f"{args.out / 'train.csv'} exists: choose a new --out")
    print(json.dumps(write_copy(args.train_data, args.out, args.tile, args.basis, args.dims, args.eps, args.seed)))


if __name__ == "__main__":
    main()
