"""The model's preprocessing (resize shorter side, center crop) to [0,1] tensors, and the protection's whole-image
view (the whole image squashed to S x S, with its native size kept beside it).

Images are kept as uint8 [N,3,S,S] in memory (12 KB each at 64 px); conversion to float happens per batch.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF
from tqdm.auto import tqdm

from ..workers import ordered_map
from .diskarray import DiskArray
from .types import DataError, PairSet, check_image, pil_to_u8


def preprocess(img: Image.Image, size: int, fit: str = "crop") -> torch.Tensor:
    """uint8 [3,size,size]. ``crop``: bicubic resize of the shorter side to ``size``, then center crop (open_clip's
    eval); ``squash``: the whole image resized to size x size, aspect not kept (the same for a square image)."""
    if img.size != (size, size):
        if fit == "squash":
            img = TF.resize(img, [size, size], interpolation=InterpolationMode.BICUBIC, antialias=True)
        else:
            img = TF.center_crop(TF.resize(img, size, interpolation=InterpolationMode.BICUBIC, antialias=True), size)
    return pil_to_u8(img)


def open_checked(pairs: PairSet, i: int) -> Image.Image:
    """Image i, or a ``DataError`` that names the file, its row and the fix."""
    try:
        return check_image(pairs.open_image(i), pairs.image_path(i))
    except DataError as e:
        raise DataError(f"{pairs.where(i)}: {e} (or pass --skip-bad-images to leave it out)") from e


def bad_images(pairs: PairSet, progress: bool = True) -> list[dict]:
    """Every image that cannot be protected: index, source, CSV rows and the reason (one decode per image)."""
    bad = []
    for i in tqdm(range(pairs.n_images), desc="check images", disable=None if progress else True, leave=False):
        try:
            check_image(pairs.open_image(i), pairs.image_path(i))
        except DataError as e:
            bad.append({"index": i, "source": pairs.images[i], "rows": [c + 2 for c in pairs.image_captions[i]],
                        "error": str(e)})
    return bad


def load_images(pairs: PairSet, size: int, progress: bool = True, cache: str | Path | None = None):
    """All images of ``pairs`` preprocessed to uint8 [N,3,size,size]: a tensor, or with ``cache`` a
    ``DiskArray`` in that file (reused when it already holds the right shape), so RAM stays flat."""
    return _load(pairs, size, "crop", progress, cache, False)[0]


def load_sized_images(pairs: PairSet, size: int, progress: bool = True, cache: str | Path | None = None,
                      fit: str = "crop"):
    """(images, sizes): the images as ``load_images`` (``fit="squash"``: each whole, squashed to size x size) and
    each one's native (width, height) [N,2] after EXIF orientation."""
    return _load(pairs, size, fit, progress, cache, True)


def _read(pairs: PairSet, i: int, size: int, fit: str) -> tuple[tuple[int, int], torch.Tensor]:
    img = open_checked(pairs, i)
    return img.size, preprocess(img, size, fit)


def _load(pairs: PairSet, size: int, fit: str, progress: bool, cache: str | Path | None, want_sizes: bool):
    shape = (pairs.n_images, 3, size, size)
    marker = f"{shape}" if fit == "crop" else f"{shape} {fit}"
    if cache is not None:
        cache = Path(cache)
        done, sizes_file = cache.with_name(cache.name + ".done"), cache.with_name(cache.name + ".sizes.json")
        if done.is_file() and done.read_text() == marker and (not want_sizes or sizes_file.is_file()):
            sizes = torch.tensor(json.loads(sizes_file.read_text())) if want_sizes else None
            return DiskArray(cache, shape, "uint8"), sizes
        out = DiskArray(cache, shape, "uint8", create=True)
    else:
        out = torch.empty(shape, dtype=torch.uint8)
    sizes = torch.empty((pairs.n_images, 2), dtype=torch.long)
    chunk = 256
    bar = tqdm(total=pairs.n_images, desc=f"load {pairs.source.name}", disable=None if progress else True, leave=False)
    for s in range(0, pairs.n_images, chunk):
        rows = range(s, min(s + chunk, pairs.n_images))
        batch = list(ordered_map(lambda i: _read(pairs, i, size, fit), rows))   # threads: full-size photos
        sizes[s:s + len(rows)] = torch.tensor([wh for wh, _ in batch])
        out[s:s + len(rows)] = torch.stack([x for _, x in batch])
        bar.update(len(rows))
    bar.close()
    if cache is not None:
        sizes_file.write_text(json.dumps(sizes.tolist()))
        done.write_text(marker)
    return out, (sizes if want_sizes else None)


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    return images_u8.float().div_(255.0)
