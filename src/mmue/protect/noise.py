"""Noise parameterisation: how the protection's image noise is stored and turned into pixels.

``PixelNoise`` is the paper's: one int8 pattern per image, per pixel, |noise| <= eps (in a ``ProtectionState``).
It is the one seam the engine goes through to read and write noise, so shared patterns (one per cluster of
images) can plug in beside it.
"""
from __future__ import annotations

import torch

from .pgd import apply_noise, quantise
from .store import ProtectionState


class PixelNoise:
    def __init__(self, eps_px: int):
        self.eps_px = eps_px

    def delta(self, state: ProtectionState, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The current noise of images ``idx`` as float [B,3,S,S] in [0,1] units."""
        return state.noise[idx].to(device).float() / 255

    def protected(self, state: ProtectionState, idx: torch.Tensor, x_u8: torch.Tensor) -> torch.Tensor:
        """The protected 8-bit images (what a victim would train on) as float in [0,1]."""
        return apply_noise(x_u8, state.noise[idx].to(x_u8.device)).float() / 255

    def store(self, state: ProtectionState, idx: torch.Tensor, x_u8: torch.Tensor, delta: torch.Tensor) -> None:
        """Write back the optimised ``delta``, quantised to the nearest valid 8-bit image within eps."""
        state.noise[idx] = quantise(x_u8, delta, self.eps_px).cpu()

    def __repr__(self) -> str:
        return f"PixelNoise(eps={self.eps_px}/255)"
