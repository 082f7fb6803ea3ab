"""Views: what the surrogate sees of a protected image during PGD (expectation over transformation).

Each view is a callable ``view(pixels, generator) -> pixels`` on [N,3,H,W] in [0,1], differentiable in
``pixels``, with a readable ``repr``. ``parse_view`` reads the ``eot`` spec of a ``ProtectConfig``:
``none``, ``rrc-flip``, ``crop-S``, ``jpeg`` (``jpeg-Q``, ``jpeg-L-H``), ``resize-S``, or several joined by ``|``
(one drawn per PGD step).
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F

from ..augment import crop_scale, random_resized_crop, rrc_flip
from .jpeg import diff_jpeg


class View:
    def __call__(self, pixels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Identity(View):
    def __call__(self, pixels, g):
        return pixels


class CropFlip(View):
    """The victim's random-resized-crop (scale 0.5-1) + horizontal flip, per image."""

    def __call__(self, pixels, g):
        return rrc_flip(pixels, g)


class Crop(View):
    """A trainer's random-resized-crop at ``low``..100 % of the area (aspect 3/4..4/3), bicubic, no flip:
    open_clip_train's default training view at ``low`` = 0.9. Even so mild a crop resamples every pixel."""

    def __init__(self, low: float):
        self.low = low

    def __call__(self, pixels, g):
        return random_resized_crop(pixels, g, scale=(self.low, 1.0), bicubic=True)

    def __repr__(self) -> str:
        return f"Crop(scale={self.low:g}..1)"


class Jpeg(View):
    """A differentiable JPEG round trip at a quality drawn uniformly from [low, high] per call."""

    def __init__(self, low: int = 10, high: int = 95):
        self.low, self.high = low, high

    def __call__(self, pixels, g):
        return diff_jpeg(pixels, int(torch.randint(self.low, self.high + 1, (1,), generator=g)))

    def __repr__(self) -> str:
        return f"Jpeg(quality={self.low}..{self.high})"


class Resize(View):
    """Down (antialiased) to ``size`` px and back up: a trainer that works at another resolution."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, pixels, g):
        h, w = pixels.shape[-2:]
        small = F.interpolate(pixels, size=(self.size, self.size), mode="bilinear", antialias=True,
                              align_corners=False)
        return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)

    def __repr__(self) -> str:
        return f"Resize({self.size})"


class RandomChoice(View):
    """One of ``views``, drawn per call."""

    def __init__(self, views: list[View]):
        self.views = views

    def __call__(self, pixels, g):
        return self.views[int(torch.randint(len(self.views), (1,), generator=g))](pixels, g)

    def __repr__(self) -> str:
        return f"RandomChoice({', '.join(map(repr, self.views))})"


def _one(spec: str) -> View:
    if spec == "none":
        return Identity()
    if spec == "rrc-flip":
        return CropFlip()
    if spec == "jpeg":
        return Jpeg()
    m = re.fullmatch(r"jpeg-(\d+)(?:-(\d+))?", spec)   # one quality, or a range of them
    if m and 1 <= int(m.group(1)) <= int(m.group(2) or m.group(1)) <= 100:
        return Jpeg(int(m.group(1)), int(m.group(2) or m.group(1)))
    if crop_scale(spec) is not None:
        return Crop(crop_scale(spec))
    m = re.fullmatch(r"resize-(\d+)", spec)
    if m and int(m.group(1)) >= 8:
        return Resize(int(m.group(1)))
    raise ValueError(f"a view must be none, rrc-flip, crop-S (0.05 <= S <= 1: bicubic crop at S..1 of the area), "
                     f"jpeg (quality 10..95), jpeg-Q or jpeg-L-H (qualities 1..100), resize-S (S >= 8 px) or "
                     f"several joined by '|' "
                     f"(got {spec!r})")


def parse_view(spec: str) -> View:
    parts = [p.strip() for p in spec.split("|")]
    return _one(parts[0]) if len(parts) == 1 else RandomChoice([_one(p) for p in parts])
