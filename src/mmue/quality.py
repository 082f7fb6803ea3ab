"""Image fidelity of a protected copy: PSNR and SSIM of uint8 images [3,H,W]."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(a_u8: torch.Tensor, b_u8: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical images)."""
    mse = (a_u8.float() - b_u8.float()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(255.0 ** 2 / mse)).item()


def ssim(a_u8: torch.Tensor, b_u8: torch.Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM of two uint8 images [3,H,W] (Wang et al. 2004, Gaussian window, per channel)."""
    a, b = a_u8.float()[None], b_u8.float()[None]
    window = min(window, a.shape[-1], a.shape[-2])
    x = torch.arange(window, dtype=torch.float32) - (window - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = (g / g.sum())[:, None] @ (g / g.sum())[None, :]
    k = g.expand(3, 1, window, window)
    mu_a, mu_b = F.conv2d(a, k, groups=3), F.conv2d(b, k, groups=3)
    var_a = F.conv2d(a * a, k, groups=3) - mu_a ** 2
    var_b = F.conv2d(b * b, k, groups=3) - mu_b ** 2
    cov = F.conv2d(a * b, k, groups=3) - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(s.mean())
