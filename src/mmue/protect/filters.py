"""Gradient filters: what PGD does to the gradient before taking its sign.

``sign(grad)`` gives per-pixel noise; ``sign(blur(grad))`` gives spatially coherent, low-frequency noise that
survives JPEG and resizing better (translation-invariant attacks).
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


def make_filter(grad_blur: float) -> GradientFilter:
    return GaussianBlur(grad_blur) if grad_blur else GradientFilter()
