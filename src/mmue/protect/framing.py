"""Framing: which part of a whole photo a trainer's preprocessing shows the model.

The protection stores each image *whole*, squashed to the model's S x S grid whatever its aspect, with its noise
on the same grid (stretched over the native pixels at export, edge to edge). A trainer does not see the squashed
image: it resizes the shorter side and takes the centre square (open_clip's preprocessing), or a random crop, or
squashes the whole image itself. A frame is that view as a box in the squashed grid, in fractions
``(x0, y0, x1, y1)``; ``frame`` resamples each image's box to S x S (bilinear, differentiable in the pixels).
Resizing is linear, so the trainer's view of *image + noise* is the view of the image plus the view of the noise.

For square images every frame is the whole grid and framing is the identity: the 64 px path is unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

FULL = (0.0, 0.0, 1.0, 1.0)


def centre_boxes(sizes: torch.Tensor) -> torch.Tensor:
    """[N,4] boxes of the centre square of native ``sizes`` [N,2] = (width, height): what resize-shorter-side +
    centre-crop keeps, in fractions of the whole image."""
    w, h = sizes[:, 0].double(), sizes[:, 1].double()
    side = torch.minimum(w, h)
    x0, y0 = (w - side) / 2 / w, (h - side) / 2 / h
    return torch.stack([x0, y0, 1 - x0, 1 - y0], 1).float()


def frame(pixels: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Each image [N,3,S,S] cropped to its box [N,4] and resampled to S x S. Images whose box is the whole grid
    come back exactly as they were (no resampling error)."""
    boxes = boxes.to(pixels.device, torch.float32)
    full = (boxes == torch.tensor(FULL, device=pixels.device)).all(1)
    if bool(full.all()):
        return pixels
    x0, y0, x1, y1 = boxes.unbind(1)
    theta = torch.zeros(len(boxes), 2, 3, device=pixels.device, dtype=pixels.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = x1 - x0, x0 + x1 - 1
    theta[:, 1, 1], theta[:, 1, 2] = y1 - y0, y0 + y1 - 1
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    out = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return torch.where(full[:, None, None, None], pixels, out)


class Framing:
    """The frames of one dataset: ``centre`` (the trainer's default view, used to train the surrogate and for the
    text step) and, for the PGD steps of one visit, ``at_step``: per image, the centre and the whole image in turn
    (from a random first one, ``phases``), so that the noise outside the centre square is optimised too: a
    trainer's random crops and squashes reach it."""

    def __init__(self, sizes: torch.Tensor | None):
        self.sizes = sizes
        self.boxes = centre_boxes(sizes) if sizes is not None else None
        self.trivial = self.boxes is None or bool((self.boxes == torch.tensor(FULL)).all())

    def centre(self, pixels: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return pixels if self.trivial else frame(pixels, self.boxes[idx.cpu()])

    def phases(self, n: int, g: torch.Generator) -> torch.Tensor | None:
        """Which images of a visit start on the whole image; draws nothing when all images are square, so square
        datasets keep their random streams."""
        return None if self.trivial else torch.rand(n, generator=g) < 0.5

    def at_step(self, pixels: torch.Tensor, idx: torch.Tensor, phases: torch.Tensor | None, step: int
                ) -> torch.Tensor:
        if phases is None:
            return pixels
        whole = phases ^ bool(step % 2)
        return frame(pixels, torch.where(whole[:, None], torch.tensor(FULL), self.boxes[idx.cpu()]))

    def __repr__(self) -> str:
        if self.trivial:
            return "Framing(square: identity)"
        n_wide = int((self.boxes != torch.tensor(FULL)).any(1).sum())
        return f"Framing(centre and whole in turn, {n_wide}/{len(self.boxes)} non-square)"
