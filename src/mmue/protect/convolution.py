"""Convolution-based noise (CUDA, Sadasivan et al., CVPR 2023): each image filtered by its caption cluster's kernel.

CUDA's unlearnable data are the images themselves, blurred by a random 3 x 3 kernel per class: its entries drawn
from U(0, ``BLUR``), one entry at a random place set to 1, the same kernel for the three channels, and each result
divided by its maximum. A class is a kernel, a multiplicative pattern no additive bound describes, and nothing is
optimised against a surrogate, so no architecture is favoured (the paper reports it against ResNets, VGG and
DenseNet alike). Here the classes are caption clusters, and the noise is what the filtering changes, clipped to the
bound: at 8/255 a bounded trace of the blur, at the store's limit (127/255) nearly the whole of it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

KERNEL = 3    # CUDA's kernel side
BLUR = 0.3    # CUDA's blur parameter for CIFAR: the kernel's other entries are drawn from U(0, BLUR)


def conv_filters(k: int, g: torch.Generator, blur: float = BLUR) -> torch.Tensor:
    """[k, 3, 3] kernels, one per cluster: entries from U(0, ``blur``), one at a random place set to 1."""
    w = torch.rand(k, KERNEL * KERNEL, generator=g) * blur
    w[torch.arange(k), torch.randint(0, KERNEL * KERNEL, (k,), generator=g)] = 1.0
    return w.reshape(k, KERNEL, KERNEL)


def conv_images(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] images in [0, 1] filtered by their own kernel ``kernels`` [N, 3, 3] (each channel alike, zero
    padding as CUDA's), each divided by its maximum."""
    n, c, h, w = x.shape
    weight = kernels[:, None].expand(n, c, KERNEL, KERNEL).reshape(n * c, 1, KERNEL, KERNEL)
    y = F.conv2d(x.reshape(1, n * c, h, w), weight, padding=KERNEL // 2, groups=n * c).reshape(n, c, h, w)
    return y / y.amax((1, 2, 3), keepdim=True).clamp_min(1e-12)


def conv_noise(x_u8: torch.Tensor, clusters: torch.Tensor, kernels: torch.Tensor, eps_px: int) -> torch.Tensor:
    """int8 noise [N, C, H, W] that takes the 8-bit images ``x_u8`` as near to their cluster's filtering as the
    bound ``eps_px`` allows."""
    target = (conv_images(x_u8.float() / 255, kernels[clusters]) * 255).round()
    return (target - x_u8.float()).clamp(-eps_px, eps_px).to(torch.int8)
