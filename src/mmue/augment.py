"""Training-time augmentation of a victim (and the protection's view of it): random-resized-crop + flip."""
from __future__ import annotations

import math

import torch


def rrc_flip(pixels: torch.Tensor, g: torch.Generator, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """Random-resized-crop + horizontal flip, independently per image, from a seeded generator."""
    from torchvision.transforms.v2 import functional as TF
    n, _, h, w = pixels.shape
    out = torch.empty_like(pixels)
    for i in range(n):
        r = torch.rand(4, generator=g).tolist()
        area = h * w * (scale[0] + r[0] * (scale[1] - scale[0]))
        aspect = math.exp(math.log(ratio[0]) + r[1] * (math.log(ratio[1]) - math.log(ratio[0])))
        ch = min(h, max(1, round(math.sqrt(area / aspect))))
        cw = min(w, max(1, round(math.sqrt(area * aspect))))
        top, left = int(r[2] * (h - ch + 1)), int(r[3] * (w - cw + 1))
        crop = TF.resized_crop(pixels[i], top, left, ch, cw, [h, w], antialias=True)
        out[i] = TF.horizontal_flip(crop) if torch.rand(1, generator=g).item() < 0.5 else crop
    return out.clamp_(0, 1)
