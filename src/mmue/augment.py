"""Training-time augmentation of a victim (and the protection's view of it): random-resized-crop + flip, of the
model-size image (``rrc_flip``) or of the whole photo at its native aspect (``rrc_flip_whole``)."""
from __future__ import annotations

import math
import re

import torch


_CROP = re.compile(r"crop-(0\.\d+|1)")


def crop_scale(spec: str) -> float | None:
    """S of a ``crop-S`` spec (a bicubic random-resized-crop at S..1 of the area, no flip; ``crop-0.9`` is
    open_clip_train's default training view), or None when ``spec`` is not one (S must be in [0.05, 1])."""
    m = _CROP.fullmatch(spec)
    return float(m.group(1)) if m and float(m.group(1)) >= 0.05 else None


def rrc_flip(pixels: torch.Tensor, g: torch.Generator, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """Random-resized-crop + horizontal flip, independently per image, from a seeded generator."""
    return random_resized_crop(pixels, g, scale, ratio, flip=True)


def random_resized_crop(pixels: torch.Tensor, g: torch.Generator, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3),
                        flip: bool = False, bicubic: bool = False) -> torch.Tensor:
    """Random-resized-crop back to the input size, per image, differentiable in ``pixels``; ``flip``: then a
    horizontal flip with probability 1/2; ``bicubic``: bicubic resampling (open_clip's training transform)
    instead of bilinear."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF
    mode = InterpolationMode.BICUBIC if bicubic else InterpolationMode.BILINEAR
    n, _, h, w = pixels.shape
    out = torch.empty_like(pixels)
    for i in range(n):
        r = torch.rand(4, generator=g).tolist()
        area = h * w * (scale[0] + r[0] * (scale[1] - scale[0]))
        aspect = math.exp(math.log(ratio[0]) + r[1] * (math.log(ratio[1]) - math.log(ratio[0])))
        ch = min(h, max(1, round(math.sqrt(area / aspect))))
        cw = min(w, max(1, round(math.sqrt(area * aspect))))
        top, left = int(r[2] * (h - ch + 1)), int(r[3] * (w - cw + 1))
        crop = TF.resized_crop(pixels[i], top, left, ch, cw, [h, w], interpolation=mode, antialias=True)
        out[i] = TF.horizontal_flip(crop) if flip and torch.rand(1, generator=g).item() < 0.5 else crop
    return out.clamp_(0, 1)


def rrc_flip_whole(pixels: torch.Tensor, sizes: torch.Tensor, g: torch.Generator, out_size: int, scale=(0.5, 1.0),
                   ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """A trainer's random-resized-crop + flip of whole photos: boxes drawn in each photo's native pixels
    (``sizes`` [B,2] = width, height), so crops have the photo's true aspect and reach its ends, read from the
    photo squashed to [B,3,L,L] (``pixels``, L > ``out_size`` keeps detail) and resized to ``out_size``
    (antialiased)."""
    from torchvision.transforms.v2 import functional as TF
    n, _, side, _ = pixels.shape
    out = torch.empty((n, pixels.shape[1], out_size, out_size), dtype=pixels.dtype)
    for i in range(n):
        w, h = (float(v) for v in sizes[i])
        r = torch.rand(4, generator=g).tolist()
        area = w * h * (scale[0] + r[0] * (scale[1] - scale[0]))
        aspect = math.exp(math.log(ratio[0]) + r[1] * (math.log(ratio[1]) - math.log(ratio[0])))
        ch, cw = min(h, math.sqrt(area / aspect)), min(w, math.sqrt(area * aspect))
        top, left = r[2] * (h - ch), r[3] * (w - cw)
        sy, sx = side / h, side / w                       # native px -> squashed grid
        t, lft = int(top * sy), int(left * sx)
        hh, ww = max(1, min(side - t, round(ch * sy))), max(1, min(side - lft, round(cw * sx)))
        crop = TF.resized_crop(pixels[i], t, lft, hh, ww, [out_size, out_size], antialias=True)
        out[i] = TF.horizontal_flip(crop) if torch.rand(1, generator=g).item() < 0.5 else crop
    return out.clamp_(0, 1)
