"""The model's preprocessing (resize shorter side, center crop) to [0,1] tensors.

Images are kept as uint8 [N,3,S,S] in memory (12 KB each at 64 px); conversion to float happens per batch.
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF
from tqdm.auto import tqdm

from .diskarray import DiskArray
from .types import PairSet, pil_to_u8


def preprocess(img: Image.Image, size: int) -> torch.Tensor:
    """uint8 [3,size,size]: bicubic resize of the shorter side to ``size``, then center crop (open_clip's eval)."""
    if img.size != (size, size):
        img = TF.center_crop(TF.resize(img, size, interpolation=InterpolationMode.BICUBIC, antialias=True), size)
    return pil_to_u8(img)


def load_images(pairs: PairSet, size: int, progress: bool = True, cache: str | Path | None = None):
    """All images of ``pairs`` preprocessed to uint8 [N,3,size,size]: a tensor, or with ``cache`` a
    ``DiskArray`` in that file (reused when it already holds the right shape), so RAM stays flat."""
    shape = (pairs.n_images, 3, size, size)
    if cache is not None:
        cache = Path(cache)
        done = cache.with_name(cache.name + ".done")
        if done.is_file() and done.read_text() == f"{shape}":
            return DiskArray(cache, shape, "uint8")
        out = DiskArray(cache, shape, "uint8", create=True)
    else:
        out = torch.empty(shape, dtype=torch.uint8)
    chunk = 256
    bar = tqdm(total=pairs.n_images, desc=f"load {pairs.source.name}", disable=None if progress else True, leave=False)
    for s in range(0, pairs.n_images, chunk):
        rows = range(s, min(s + chunk, pairs.n_images))
        out[s:s + len(rows)] = torch.stack([preprocess(pairs.open_image(i), size) for i in rows])
        bar.update(len(rows))
    bar.close()
    if cache is not None:
        done.write_text(f"{shape}")
    return out


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    return images_u8.float().div_(255.0)
