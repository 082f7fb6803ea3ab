"""Autoregressive (AR) noise: one 2-D AR process per caption cluster, a fresh sample of it per image.

The idea of AR poisons (Sandoval-Segura et al., NeurIPS 2022): every pixel of the noise is a fixed linear
combination of the 8 pixels before it in a 3 x 3 window, with coefficients drawn per cluster and per channel. One
3 x 3 convolution (the coefficients with -1 at the centre) maps a cluster's noise to zero and natural images to
something else, so any network with a convolution or a linear patch embedding can tell the clusters apart from the
noise alone; nothing is optimised against a surrogate, which is the point: no architecture is favoured. Here the
classes are caption clusters, so that the noise can stand for what the captions say.
"""
from __future__ import annotations

import torch

WINDOW = 3   # the process's window: each pixel from the 8 before it in a 3 x 3 square
WARMUP = 4   # rows and columns generated and cut off, so that no image starts on the random seed signal


def ar_coefficients(k: int, g: torch.Generator, size: int = 64, max_spread: float = 2.0,
                    max_batches: int = 2000) -> torch.Tensor:
    """[k, 3, 3, 3] coefficients, one set per cluster and channel: Gaussian, centre 0, each channel's 8 summing
    to 1 (the AR poisons' normalisation). Most such processes still grow or fade along the raster; a draw is kept
    only if its sample at ``size`` px keeps the same scale everywhere (the standard deviations of its eight bands
    of rows, and of columns, within ``max_spread`` of each other), else its noise would sit in one corner once
    scaled to the bound. About 1 draw in 100 is kept, at 32 to 128 px alike."""
    kept: list[torch.Tensor] = []
    for _ in range(max_batches):   # candidates in batches: the sample is a loop over pixels, whatever the batch
        if len(kept) >= k:
            break
        b = torch.randn(256, 3, WINDOW, WINDOW, generator=g)
        b[:, :, -1, -1] = 0
        b /= b.sum((2, 3), keepdim=True)
        x = ar_sample(b, (256, 3, size, size), g)
        bands = [x.unflatten(axis, (8, -1)).std(dims) for axis, dims in ((2, (1, 3, 4)), (3, (1, 2, 4)))]
        s = torch.cat(bands, 1)   # [256, 16]
        ok = torch.isfinite(s).all(1) & (s.amin(1) > 0) & (s.amax(1) <= max_spread * s.amin(1))
        kept.extend(b[ok])
    if len(kept) < k:
        raise ValueError(f"drew only {len(kept)} stable autoregressive processes of the {k} asked for in "
                         f"{max_batches * 256} draws at {size} px: ask for fewer --clusters")
    return torch.stack(kept[:k])


def ar_sample(coeff: torch.Tensor, shape: tuple, g: torch.Generator) -> torch.Tensor:
    """[N, C, H, W] samples, image i of the process ``coeff[i]`` ([N, C, 3, 3]), unscaled: a Gaussian seed signal
    rewritten pixel by pixel in raster order (each pixel from the window ending at it, itself excluded), the first
    ``WARMUP`` rows and columns then cut off."""
    n, c, h, w = shape
    x = torch.randn(n, c, h + WARMUP, w + WARMUP, generator=g)
    for i in range(h + WARMUP - WINDOW + 1):
        for j in range(w + WARMUP - WINDOW + 1):
            x[:, :, i + WINDOW - 1, j + WINDOW - 1] = (x[:, :, i:i + WINDOW, j:j + WINDOW] * coeff).sum((-1, -2))
    return x[:, :, WARMUP:, WARMUP:]


def ar_noise(clusters: torch.Tensor, coeff: torch.Tensor, shape: tuple, eps_px: int,
             g: torch.Generator) -> torch.Tensor:
    """int8 noise [N, C, H, W] for images whose cluster is ``clusters`` [N]: each a sample of its cluster's
    process, scaled to a standard deviation of half the bound and clipped to the bound. (Scaled by its maximum, as
    the AR poisons' L-inf variant, a heavy-tailed sample leaves most pixels at 0 once rounded to 8 bits.)"""
    x = ar_sample(coeff[clusters], shape, g)
    x = x / x.std((1, 2, 3), keepdim=True).clamp_min(1e-12) * (eps_px / 2)
    return x.clamp(-eps_px, eps_px).round().to(torch.int8)


def ar_residual(noise: torch.Tensor, coeff: torch.Tensor) -> torch.Tensor:
    """What the matching filter leaves of ``noise`` [N, C, H, W] under the processes ``coeff`` [N, C, 3, 3]: each
    pixel minus its prediction from the 8 before it, per channel (~0 for noise of that process; the check that a
    sample belongs to its cluster)."""
    f = coeff.clone()
    f[:, :, -1, -1] = -1
    n, c = noise.shape[:2]
    out = torch.nn.functional.conv2d(noise.reshape(1, n * c, *noise.shape[2:]).float(),
                                     f.reshape(n * c, 1, WINDOW, WINDOW), groups=n * c)
    return out.reshape(n, c, *out.shape[2:])
