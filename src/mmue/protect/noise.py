"""Noise parameterisation: how the protection's image noise is stored, stepped and turned into pixels.

``PixelNoise`` is the paper's: one int8 pattern per image, per pixel, |noise| <= eps (in a ``ProtectionState``).
``SharedNoise`` builds every image's noise from shared float patterns (``state.patterns``): the mean of the
patterns its code names, one per cluster (``ClusterNoise``) or one per caption word; a PGD step moves each pattern
by the sign of the gradient summed over its images in the batch, and every image's written noise is its mix,
quantised and clipped to the valid pixel range. The engine reads, steps and writes noise only
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


class SharedNoise(PixelNoise):
    """Noise built from shared patterns: image i's noise is the mean of the patterns named by its row of ``codes``
    ([N, K] of any non-negative ids, -1 = none). K = 1 is one pattern per cluster (``ClusterNoise``); K > 1 a
    code of several parts (one pattern per caption word, ``share="words"``), so few patterns still give nearly
    every image its own noise."""

    def __init__(self, eps_px: int, codes: torch.Tensor, block: int = 1):
        super().__init__(eps_px)
        self.block = block   # the random baseline's patterns: constant on block x block squares
        codes = codes.long().reshape(len(codes), -1)
        valid = codes >= 0
        ids, inverse = torch.unique(codes[valid], return_inverse=True)
        self.codes = torch.full_like(codes, -1)
        self.codes[valid] = inverse
        self.ids = ids   # the original id (cluster or token) of each pattern
        self.k = len(ids)
        self.weights = valid.float() / valid.sum(1, keepdim=True).clamp_min(1)

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

    def mix(self, patterns: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The noise of images ``idx``: the weighted mean of their patterns."""
        c, w = self.codes[idx.cpu()], self.weights[idx.cpu()]
        picked = patterns[c.clamp_min(0).to(patterns.device)]
        return (picked * w.to(picked)[:, :, None, None, None]).sum(1)

    def write_all(self, state: ProtectionState, images) -> None:
        """Every image's int8 noise from its patterns (chunked: the images may live on disk)."""
        for s in range(0, len(self.codes), 1024):
            x = images[s:s + 1024]
            state.noise[s:s + len(x)] = quantise(x, self.mix(state.patterns, torch.arange(s, s + len(x))),
                                                 self.eps_px)

    def step(self, state, idx, delta, grad, alpha, x, eps):
        """Each pattern moves by the sign of the gradient summed over the images of the batch that use it
        (weighted as in their mean), then every image of the batch takes its new mix."""
        c, w = self.codes[idx.cpu()].to(grad.device), self.weights[idx.cpu()].to(grad)
        valid = c >= 0
        per_part = grad[:, None] * w[:, :, None, None, None]
        summed = torch.zeros((self.k, *grad.shape[1:]), device=grad.device, dtype=grad.dtype)
        summed.index_add_(0, c[valid], per_part[valid])
        used = torch.unique(c[valid]).cpu()
        p = state.patterns[used].to(grad.device)
        state.patterns[used] = (p - alpha * summed[used.to(grad.device)].sign()).clamp(-eps, eps).cpu()
        return project(self.mix(state.patterns, idx).to(delta.device), x, eps)

    def __repr__(self) -> str:
        blocks = f", blocks={self.block}px" if self.block > 1 else ""
        parts = self.codes.shape[1]
        what = f"clusters={self.k}" if parts == 1 else f"words={self.k}, per image={parts}"
        return f"{type(self).__name__}(eps={self.eps_px}/255, {what}{blocks})"


class ClusterNoise(SharedNoise):
    """One pattern per cluster of images: ``assign`` [N] is each image's cluster."""

    def __init__(self, eps_px: int, assign: torch.Tensor, block: int = 1):
        super().__init__(eps_px, assign.long()[:, None], block)
