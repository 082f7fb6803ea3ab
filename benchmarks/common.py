"""What the benchmarks share: the model / data-size / device flags, quiet logging, and synthetic pairs."""
from __future__ import annotations

import argparse
import logging

import torch

from mmue.data.encoded import EncodedPairs


def bench_parser(doc: str, model: str = "mmue-tiny-rn", images: int = 256, batch_size: int = 64,
                 device: str = "cpu") -> argparse.ArgumentParser:
    """An argument parser with ``--model --images --batch-size --device`` at this benchmark's defaults."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--model", default=model, help="surrogate architecture")
    ap.add_argument("--images", type=int, default=images, help="synthetic images")
    ap.add_argument("--batch-size", type=int, default=batch_size)
    ap.add_argument("--device", default=device)
    return ap


def quiet() -> None:
    logging.getLogger().setLevel(logging.ERROR)


def fake_pairs(n: int, size: int, codec, seed: int = 0) -> EncodedPairs:
    """``n`` random uint8 images at ``size`` px, each with one 8-word caption from a small vocabulary."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    words = ["red", "circle", "blue", "square", "a", "large", "small", "star", "and", "green"]
    bodies = [codec.encode(" ".join(words[int(j)] for j in torch.randint(10, (8,), generator=g))) for _ in range(n)]
    return EncodedPairs(images, bodies, list(range(n)), [[i] for i in range(n)])
