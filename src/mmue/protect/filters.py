"""Gradient filters: what PGD does to the gradient before taking its sign (the step goes *against* the
filtered gradient).

``sign(grad)`` gives per-pixel noise; ``sign(blur(grad))`` gives spatially coherent, low-frequency noise that
survives JPEG and resizing better (translation-invariant attacks); ``BlockSum`` gives noise constant on squares
(from zero, every step moves a whole square: at 8 px the squares are JPEG's blocks and a ViT's patches);
``TileSum`` gives periodic noise, one small tile repeated over the image (a texture: the same wherever a crop
starts, and at an 8 px period the same offset on every one of a ViT's 8 px patches);
``ChannelSum`` gives grey noise, the same on the three colour channels (luminance only, which JPEG keeps best);
``Ascend`` negates the gradient, so the same step maximises the loss (error-maximising noise, TAP).
``balanced_sum`` combines several surrogates' gradients with equal weight before the filter.
"""
from __future__ import annotations

import math

import torch


class GradientFilter:
    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        return grad

    def __repr__(self) -> str:
        return "Identity()"


class GaussianBlur(GradientFilter):
    def __init__(self, sigma: float):
        self.sigma = sigma

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF
        s = self.sigma
        return TF.gaussian_blur(grad, [2 * math.ceil(3 * s) + 1] * 2, [s, s])

    def __repr__(self) -> str:
        return f"GaussianBlur(sigma={self.sigma})"


def _squares(grad: torch.Tensor, side: int) -> torch.Tensor:
    """``grad`` [..., H, W] zero-padded at the bottom right to whole ``side`` x ``side`` squares, viewed as
    [..., rows, side, cols, side]."""
    h, w = grad.shape[-2:]
    padded = torch.nn.functional.pad(grad, (0, -w % side, 0, -h % side))
    *lead, hp, wp = padded.shape
    return padded.reshape(*lead, hp // side, side, wp // side, side)


def _inner_repr(inner: GradientFilter) -> str:
    return "" if type(inner) is GradientFilter else f"{inner!r}, "


class BlockSum(GradientFilter):
    """``inner``'s gradient summed over ``block`` x ``block`` squares (aligned at the top left), the same value on
    each square's pixels: a sign step then moves every square as one."""

    def __init__(self, block: int, inner: GradientFilter | None = None):
        self.block, self.inner = block, inner or GradientFilter()

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        b, (h, w) = self.block, grad.shape[-2:]
        sums = _squares(self.inner(grad), b).sum((-3, -1))
        return sums.repeat_interleave(b, -2).repeat_interleave(b, -1)[..., :h, :w]

    def __repr__(self) -> str:
        return f"BlockSum({_inner_repr(self.inner)}block={self.block})"


class TileSum(GradientFilter):
    """``inner``'s gradient summed over every position with the same coordinates modulo ``period`` (the image
    folded onto one ``period`` x ``period`` tile), then repeated: a sign step moves the tile, and so every copy of
    it. The fold is anchored at the top left; a ragged edge is a partial copy."""

    def __init__(self, period: int, inner: GradientFilter | None = None):
        self.period, self.inner = period, inner or GradientFilter()

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        p, (h, w) = self.period, grad.shape[-2:]
        squares = _squares(self.inner(grad), p)
        rows, cols = squares.shape[-4], squares.shape[-2]
        tile = squares.sum((-4, -2))
        return tile.repeat(*([1] * (tile.dim() - 2)), rows, cols)[..., :h, :w]

    def __repr__(self) -> str:
        return f"TileSum({_inner_repr(self.inner)}period={self.period})"


class ChannelSum(GradientFilter):
    """``inner``'s gradient summed over the colour channels, the same value on each: a sign step then moves the
    three channels together, so the noise is grey (luminance only), the part of an image that JPEG's chroma
    subsampling and coarser chroma quantisation leave alone."""

    def __init__(self, inner: GradientFilter | None = None):
        self.inner = inner or GradientFilter()

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        return self.inner(grad).sum(-3, keepdim=True).expand_as(grad)

    def __repr__(self) -> str:
        return f"ChannelSum({_inner_repr(self.inner).rstrip(', ')})"


class Ascend(GradientFilter):
    def __init__(self, inner: GradientFilter):
        self.inner = inner

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        return -self.inner(grad)

    def __repr__(self) -> str:
        return f"Ascend({self.inner!r})"


def make_filter(grad_blur: float = 0.0, objective: str = "minimise", block: int = 1, tile: int = 1,
                colour: str = "rgb") -> GradientFilter:
    f = GaussianBlur(grad_blur) if grad_blur else GradientFilter()
    if block > 1:
        f = BlockSum(block, f)
    if tile > 1:
        f = TileSum(tile, f)
    if colour == "grey":
        f = ChannelSum(f)
    return Ascend(f) if objective == "maximise" else f


def balanced_sum(grads: list[torch.Tensor]) -> torch.Tensor:
    """The sum of several surrogates' gradients, each first scaled to mean absolute value 1 per image, so that each
    has the same say in the sign a PGD step takes (summed raw, the largest decides it)."""
    return sum(g / g.abs().mean(dim=tuple(range(1, g.dim())), keepdim=True).clamp_min(1e-20) for g in grads)
