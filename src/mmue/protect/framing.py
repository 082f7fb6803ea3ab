"""Framing: how the noise on the model's S x S grid covers a full-size photo, and what a trainer then sees of it.

The store holds what a trainer's default preprocessing shows the model (resize the shorter side to S, centre
square: open_clip's), and the noise lives on that S x S grid. At export the pattern is stretched to the photo's
shorter side, so that the trainer's resize brings it back to the grid at full resolution, and *tiled* along the
longer side from the centre square outwards (``tile_index``): a landscape photo carries copies of the same
pattern at the same scale out to both ends, edge to edge, so a random crop anywhere sees it as the centre does.

Resizing is linear, so the trainer's view of *photo + noise* is its view of the photo (the store) plus its view
of the noise. The latter is not the grid noise itself: stretched over the native pixels and resized back down
(bicubic, antialiased) it comes back blurred by a fixed small kernel (``resize_kernel``: 54 % of an impulse
stays on its pixel after a bilinear stretch), so the surrogate sees the noise through that kernel (``blur``)
for every photo whose shorter side is not S.

For images already at the model's size (S x S) framing is the identity: the 64 px path is unchanged.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F


def trainer_crop(width: int, height: int, grid: int) -> tuple[int, int, int, int]:
    """(left, top, crop width, crop height) in native pixels of what resize-shorter-side-to-``grid`` + centre crop
    keeps, with torchvision's own rounding (the longer side resized to int(grid * long / short) px, the crop offset
    rounded; so the crop is a little wider than tall on a landscape photo): one copy of the pattern goes exactly
    there, and the others tile out from it."""
    if width == height:
        return 0, 0, width, height
    if width > height:
        new = int(grid * width / height)
        scale = width / new
        return round(int(round((new - grid) / 2.0)) * scale), 0, round(grid * scale), height
    new = int(grid * height / width)
    scale = height / new
    return 0, round(int(round((new - grid) / 2.0)) * scale), width, round(grid * scale)


def tile_index(length: int, side: int, offset: int) -> torch.Tensor:
    """Indices into a pattern of ``side`` px covering ``length`` px, its copy starting at ``offset``."""
    return (torch.arange(length) - offset) % side


def stretch_taps(length: int, side: int, offset: int, grid: int, stretch: str = "bilinear"
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One axis of ``native_noise``: for each of ``length`` native pixels, the two grid cells it takes its value
    from and the weight of the first (the second gets the rest), for a ``grid``-px pattern stretched to ``side`` px
    (bilinear as ``F.interpolate`` with ``align_corners=False``; nearest: one cell, weight 1) and tiled over
    ``length`` px from ``offset`` (``tile_index``). (i0 [length] long, i1 [length] long, w0 [length] float64)."""
    pos = tile_index(length, side, offset).double()
    if stretch == "nearest":
        i0 = (pos * grid / side).floor().long().clamp_(max=grid - 1)
        return i0, i0, torch.ones(length, dtype=torch.float64)
    src = ((pos + 0.5) * grid / side - 0.5).clamp_(min=0)
    i0 = src.floor().long().clamp_(max=grid - 1)
    return i0, (i0 + 1).clamp_(max=grid - 1), 1 - (src - i0)


@lru_cache(maxsize=2)
def resize_kernel(stretch: str = "bilinear", scale: int = 8, grid: int = 32) -> torch.Tensor:
    """The 1-D kernel [5] that grid noise comes back through after a ``stretch`` (bilinear or nearest) by
    ``scale`` and a trainer's antialiased bicubic resize back to the grid (measured by pushing an impulse through
    both; what stays on the impulse's own pixel, bilinear: 50-57 % for any scale from 1.5 to 50; nearest: 68-75 %
    from 2 to 50, uneven below 2)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF
    impulse = torch.zeros(1, 1, grid, grid)
    impulse[..., grid // 2, grid // 2] = 1
    up = F.interpolate(impulse, size=(grid * scale, grid * scale), mode=stretch,
                       **({"align_corners": False} if stretch == "bilinear" else {}))
    back = TF.resize(up, [grid, grid], interpolation=InterpolationMode.BICUBIC, antialias=True)[0, 0]
    row = back[grid // 2, grid // 2 - 2:grid // 2 + 3]
    k = row / row[2].sqrt()          # the 2-D response is separable: k outer k
    return k / k.sum()


def blur(noise: torch.Tensor, stretch: str = "bilinear") -> torch.Tensor:
    """``noise`` [N,3,S,S] through ``resize_kernel``, wrapping around the edges (the pattern is tiled)."""
    k = resize_kernel(stretch).to(noise.device, noise.dtype)
    c = noise.shape[1]
    x = F.pad(noise, (2, 2, 2, 2), mode="circular")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


class Framing:
    """What the trainer sees of ``x + delta`` (the stored view and the grid noise of a batch): the sum, with the
    noise blurred by the trainer's resize for images whose shorter side is not the grid's."""

    def __init__(self, sizes: torch.Tensor | None, grid: int, stretch: str = "bilinear"):
        self.stretch = stretch
        self.resized = sizes.min(1).values != grid if sizes is not None else None
        self.trivial = self.resized is None or not bool(self.resized.any())

    def __call__(self, x: torch.Tensor, delta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if self.trivial:
            return x + delta
        resized = self.resized[idx.cpu()].to(delta.device)
        if not bool(resized.any()):
            return x + delta
        return x + torch.where(resized[:, None, None, None], blur(delta, self.stretch), delta)

    def __repr__(self) -> str:
        if self.trivial:
            return "Framing(identity: every image is the grid's size)"
        return f"Framing({int(self.resized.sum())}/{len(self.resized)} seen through the trainer's resize)"
