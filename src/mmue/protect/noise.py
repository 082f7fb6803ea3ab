"""Noise parameterisation: how the protection's image noise is stored, stepped and turned into pixels.

``PixelNoise`` is the paper's: one int8 pattern per image, per pixel, |noise| <= eps (in a ``ProtectionState``).
``ClusterNoise`` shares one float pattern per cluster of images (``state.patterns``); a PGD step moves each
pattern by the sign of the gradient summed over its images in the batch, and every image's written noise is its
cluster's pattern, quantised and clipped to the valid pixel range. The engine reads, steps and writes noise only
through these objects.
"""
from __future__ import annotations

import torch

from .pgd import apply_noise, project, quantise, random_noise, sign_step
from .store import ProtectionState


class PixelNoise:
    def __init__(self, eps_px: int):
        self.eps_px = eps_px

    def init(self, state: ProtectionState, g: torch.Generator, random: bool) -> None:
        """Nothing to add: the per-image noise in ``state`` is the variable."""

    def delta(self, state: ProtectionState, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The current noise of images ``idx`` as float [B,3,S,S] in [0,1] units."""
        return state.noise[idx].to(device).float() / 255

    def step(self, state: ProtectionState, idx: torch.Tensor, delta: torch.Tensor, grad: torch.Tensor,
             alpha: float, x: torch.Tensor, eps: float) -> torch.Tensor:
        """One error-minimising sign step on the noise of images ``idx``; returns their new ``delta``."""
        return sign_step(delta, grad, alpha, x, eps)

    def protected(self, state: ProtectionState, idx: torch.Tensor, x_u8: torch.Tensor) -> torch.Tensor:
        """The protected 8-bit images (what a victim would train on) as float in [0,1]."""
        return apply_noise(x_u8, state.noise[idx].to(x_u8.device)).float() / 255

    def store(self, state: ProtectionState, idx: torch.Tensor, x_u8: torch.Tensor, delta: torch.Tensor) -> None:
        """Write back the optimised ``delta``, quantised to the nearest valid 8-bit image within eps."""
        state.noise[idx] = quantise(x_u8, delta, self.eps_px).cpu()

    def __repr__(self) -> str:
        return f"PixelNoise(eps={self.eps_px}/255)"


class ClusterNoise(PixelNoise):
    def __init__(self, eps_px: int, assign: torch.Tensor, block: int = 1):
        super().__init__(eps_px)
        self.block = block   # the random baseline's patterns: constant on block x block squares
        self.assign = assign.long()
        self.k = int(assign.max()) + 1 if len(assign) else 0

    def init(self, state: ProtectionState, g: torch.Generator, random: bool) -> None:
        """Zero patterns (or random ones, the ``random`` baseline), written to every image's noise."""
        shape = (self.k, *state.noise.shape[1:])
        eps = self.eps_px / 255
        if not random:
            state.patterns = torch.zeros(shape)
        elif self.block > 1:
            state.patterns = random_noise(shape, self.eps_px, g, self.block).float() / 255
        else:
            state.patterns = (torch.rand(shape, generator=g) * 2 - 1) * eps

    def write_all(self, state: ProtectionState, images) -> None:
        """Every image's int8 noise from its cluster's pattern (chunked: the images may live on disk)."""
        for s in range(0, len(self.assign), 1024):
            x = images[s:s + 1024]
            idx = torch.arange(s, s + len(x))
            state.noise[s:s + len(x)] = quantise(x, state.patterns[self.assign[idx]], self.eps_px)

    def step(self, state, idx, delta, grad, alpha, x, eps):
        c = self.assign[idx].to(grad.device)
        used = torch.unique(c)
        summed = torch.zeros((self.k, *grad.shape[1:]), device=grad.device, dtype=grad.dtype).index_add_(0, c, grad)
        p = state.patterns[used.cpu()].to(grad.device)
        state.patterns[used.cpu()] = (p - alpha * summed[used].sign()).clamp(-eps, eps).cpu()
        return project(state.patterns[c.cpu()].to(delta.device), x, eps)

    def __repr__(self) -> str:
        blocks = f", blocks={self.block}px" if self.block > 1 else ""
        return f"ClusterNoise(eps={self.eps_px}/255, clusters={self.k}{blocks})"
