"""A differentiable JPEG round trip in [0,1] pixel space, for expectation over JPEG during PGD (``eot="jpeg"``).

What an attacker's re-save does to the noise: RGB -> YCbCr (JFIF, full range), 4:2:0 chroma subsampling, 8x8
block DCT, division by the IJG quantisation tables scaled to ``quality``, rounding, and back. Rounding passes
gradients straight through (its forward value is exact), so the loss is measured on what survives the
compression while every coefficient still gets a gradient. Close to libjpeg's output, not bit-exact (libjpeg
upsamples chroma with a triangle filter, this with bilinear interpolation).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ITU-T T.81 Annex K tables (luma, chroma), row-major over the 8x8 block
_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
         14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
         49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_CHROMA = [17, 18, 24, 47] + [99] * 4 + [18, 21, 26, 66] + [99] * 4 + [24, 26, 56] + [99] * 5 + [47, 66] + [99] * 38


def quant_table(quality: int, chroma: bool = False) -> torch.Tensor:
    """[8,8] IJG quantisation table at ``quality`` (1..100), as libjpeg scales it."""
    q = min(100, max(1, int(quality)))
    scale = 5000 / q if q < 50 else 200 - 2 * q
    base = torch.tensor(_CHROMA if chroma else _LUMA, dtype=torch.float32)
    return ((base * scale + 50) // 100).clamp(1, 255).view(8, 8)


def _dct_matrix() -> torch.Tensor:
    """Orthonormal 8-point DCT-II matrix D: coefficients = D @ block @ D.T."""
    k = torch.arange(8, dtype=torch.float32)
    d = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (x.round() - x).detach()


def _quantise_plane(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """[N,H,W] (H, W multiples of 8), values centred on 0 in 0..255 units -> quantised and reconstructed."""
    n, h, w = plane.shape
    d, table = _dct_matrix().to(plane), table.to(plane)
    blocks = plane.view(n, h // 8, 8, w // 8, 8).transpose(2, 3)          # [N,h/8,w/8,8,8]
    coef = _round_ste(d @ blocks @ d.T / table) * table
    return (d.T @ coef @ d).transpose(2, 3).reshape(n, h, w)


def diff_jpeg(pixels: torch.Tensor, quality: int) -> torch.Tensor:
    """[N,3,H,W] in [0,1] -> its JPEG round trip at ``quality``, differentiable (straight-through rounding)."""
    with torch.autocast(pixels.device.type, enabled=False):  # the DCT and rounding need float32
        return _diff_jpeg(pixels, quality)


def _diff_jpeg(pixels: torch.Tensor, quality: int) -> torch.Tensor:
    n, _, h, w = pixels.shape
    ph, pw = -h % 16, -w % 16   # whole 16x16 macro-blocks (4:2:0), padded by edge replication as encoders do
    x = F.pad(pixels.float(), (0, pw, 0, ph), mode="replicate") * 255
    r, g, b = x.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b
    y = _quantise_plane(y - 128, quant_table(quality)) + 128
    chroma = F.avg_pool2d(torch.stack([cb, cr], 1), 2)                      # 4:2:0
    chroma = _quantise_plane(chroma.flatten(0, 1), quant_table(quality, chroma=True)).view_as(chroma)
    cb, cr = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False).unbind(1)
    rgb = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1) / 255
    return rgb[:, :, :h, :w].clamp(0, 1).to(pixels.dtype)
