"""The adversary of robust error minimisation (REM; Fu et al., "Robust unlearnable examples", ICLR 2022).

Error-minimising noise fitted to an ordinary surrogate works through that network's own fragile features, which is
why it neither transfers to another architecture nor survives a re-save. REM adds a small worst-case perturbation
rho (|rho| <= a radius below the noise's) to the surrogate's input twice: the surrogate trains on the protected
images plus rho (adversarial training, so its features are robust to changes of that size), and each PGD step
minimises the loss at the protected image plus a fresh rho, so the noise must stay a shortcut that a perturbation
of rho's size cannot undo.

``worst_case`` is the inner maximisation as a pure function of a loss closure, so the surrogate's training and the
image step share it and a test can check it alone.
"""
from __future__ import annotations

from typing import Callable

import torch


def worst_case(pixels: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor], eps: float, steps: int,
               g: torch.Generator) -> torch.Tensor:
    """rho with |rho|_inf <= ``eps`` and ``pixels + rho`` in [0, 1] that raises ``loss_fn(pixels + rho)``: a random
    start in the ball, then ``steps`` signed-gradient ascent steps of 2.5 eps / steps (Madry et al.'s step size, so
    that the ascent can cross the ball). ``pixels`` are treated as constants; rho comes back detached."""
    pixels = pixels.detach()
    if eps <= 0 or steps <= 0:
        return torch.zeros_like(pixels)
    start = (torch.rand(tuple(pixels.shape), generator=g) * 2 - 1).to(pixels.device, pixels.dtype) * eps
    rho = (pixels + start).clamp(0, 1) - pixels
    step = 2.5 * eps / steps
    for _ in range(steps):
        rho.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(pixels + rho), rho)
        rho = (rho.detach() + step * grad.sign()).clamp(-eps, eps)
        rho = (pixels + rho).clamp(0, 1) - pixels
    return rho.detach()
