"""Image fidelity of a protected copy: PSNR, the largest change and SSIM of uint8 images."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .workers import ordered_map


def psnr(a_u8: torch.Tensor, b_u8: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical images)."""
    return diff_stats(a_u8, b_u8)[0]


def row_block_diffs(base_u8, *others_u8, rows: int = 64):
    """For blocks of ``rows`` rows of uint8 images of the same shape and layout (tensors or arrays): each other
    image minus ``base``, as int16 [rows, rest]. Whole photos are never copied to a wider type at once (a 12 MP
    photo costs a few MB at a time), and the sums over them are integer (``dot``): exact, and free of BLAS, whose
    own threads made two images at once slower than one at a time."""
    base = np.asarray(base_u8)
    flat = [a.reshape(a.shape[0], -1) for a in (base, *(np.asarray(o) for o in others_u8))]
    for r in range(0, flat[0].shape[0], rows):
        yield [np.subtract(o[r:r + rows], flat[0][r:r + rows], dtype=np.int16) for o in flat[1:]]


def dot(a: np.ndarray, b: np.ndarray) -> int:
    """Exact sum of the products of two int16 arrays of one shape."""
    return int(np.einsum("ij,ij->", a, b, dtype=np.int64))


def diff_stats(a_u8, b_u8) -> tuple[float, int]:
    """(PSNR in dB, largest absolute difference in pixel units) of two uint8 images of the same shape and layout
    (tensors or arrays); exact."""
    sq, linf = 0, 0
    for (d,) in row_block_diffs(a_u8, b_u8):
        if d.size:
            linf = max(linf, int(np.abs(d).max()))
            sq += dot(d, d)
    return psnr_db(sq, np.asarray(a_u8).size), linf


def image_diffs(open_a, open_b, pairs) -> list[tuple[float, int]]:
    """``diff_stats`` of image ``open_a(i)`` against ``open_b(j)`` for each (i, j) of ``pairs``, in order, decoded
    on the image threads (a copy of full-size photos is read once, a few images in memory at a time)."""
    return list(ordered_map(lambda ij: diff_stats(np.asarray(open_a(ij[0])), np.asarray(open_b(ij[1]))), pairs))


def psnr_db(squared_error: float, count: int) -> float:
    """PSNR in dB of 8-bit images from the sum of squared differences over ``count`` values (inf for none)."""
    mse = squared_error / max(1, count)
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def mean_psnr(psnrs: list[float]) -> float | None:
    """Mean PSNR in dB of a copy's images, leaving out those it did not change (inf); None if it changed none."""
    finite = [p for p in psnrs if p != float("inf")]
    return round(sum(finite) / len(finite), 3) if finite else None


def add_noise(x_u8: np.ndarray, noise_i8: np.ndarray, rows: int = 64) -> tuple[np.ndarray, float, int]:
    """(``x + noise`` saturated to uint8, its PSNR in dB against ``x``, its largest change in pixel units) for
    arrays of one shape [H, ...], in one pass of row blocks (the change measured is the one made, after
    saturation, so the figures are exactly ``diff_stats(x, y)``'s)."""
    y = np.empty_like(x_u8)
    xf, nf, yf = (a.reshape(a.shape[0], -1) for a in (x_u8, noise_i8, y))
    sq, linf = 0, 0
    for r in range(0, xf.shape[0], rows):
        block = np.add(xf[r:r + rows], nf[r:r + rows], dtype=np.int16)
        np.clip(block, 0, 255, out=block)
        yf[r:r + rows] = block
        block -= xf[r:r + rows]
        if block.size:
            linf = max(linf, int(np.abs(block).max()))
            sq += dot(block, block)
    return y, psnr_db(sq, x_u8.size), linf


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
