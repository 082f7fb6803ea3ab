"""Pure image-noise math in [0,1] pixel space: sign step, L∞ projection, valid range, 8-bit quantisation."""
from __future__ import annotations

import torch


def project(delta: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Clip ``delta`` to [-eps, eps] and so that ``x + delta`` stays in [0, 1]."""
    return torch.max(torch.min(delta.clamp(-eps, eps), 1 - x), -x)


def sign_step(delta: torch.Tensor, grad: torch.Tensor, alpha: float, x: torch.Tensor, eps: float) -> torch.Tensor:
    """One error-*minimising* PGD step: move against the gradient's sign, then project."""
    return project(delta - alpha * grad.sign(), x, eps)


def quantise(x_u8: torch.Tensor, delta: torch.Tensor, eps_px: int) -> torch.Tensor:
    """int8 noise in pixel units such that ``x_u8 + noise`` is the 8-bit image nearest to ``x + delta``.

    The result obeys |noise| <= eps_px and 0 <= x_u8 + noise <= 255, so what is written is what was bounded.
    """
    target = (x_u8.float() + delta.float() * 255.0).round().clamp(0, 255)
    return (target - x_u8.float()).clamp(-eps_px, eps_px).to(torch.int8)


def apply_noise(x_u8: torch.Tensor, noise_i8: torch.Tensor) -> torch.Tensor:
    """uint8 protected image from an 8-bit image and int8 noise (saturating)."""
    return (x_u8.to(torch.int16) + noise_i8.to(torch.int16)).clamp(0, 255).to(torch.uint8)


def random_noise(shape, eps_px: int, generator: torch.Generator, block: int = 1, tile: int = 1) -> torch.Tensor:
    """Random integer noise for the 'random' baseline, [N,C,H,W]: uniform in [-eps_px, eps_px] per pixel, or with
    ``block`` > 1 constant on block x block squares at +-eps_px, a random sign per square and channel (patch-wise
    colours, the linearly separable shortcut of LSP: any architecture picks it up, and JPEG keeps it), or with
    ``tile`` > 1 one uniform random tile of that side per image and channel, repeated (periodic noise)."""
    if tile > 1:
        n, c, h, w = shape
        t = torch.randint(-eps_px, eps_px + 1, (n, c, tile, tile), generator=generator, dtype=torch.int16)
        return t.repeat(1, 1, -(-h // tile), -(-w // tile))[:, :, :h, :w].to(torch.int8)
    if block <= 1:
        return torch.randint(-eps_px, eps_px + 1, shape, generator=generator, dtype=torch.int16).to(torch.int8)
    n, c, h, w = shape
    signs = torch.randint(0, 2, (n, c, -(-h // block), -(-w // block)), generator=generator) * 2 - 1
    full = signs.repeat_interleave(block, 2).repeat_interleave(block, 3)[:, :, :h, :w]
    return (full * eps_px).to(torch.int8)
