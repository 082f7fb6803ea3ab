"""Framing: what a trainer's preprocessing shows the model of a whole, full-size photo.

The protection stores each image *whole*, squashed to the model's S x S grid whatever its aspect, with its noise
on the same grid (stretched over the native pixels at export, edge to edge). A trainer does not see the squashed
image: it resizes the shorter side and takes the centre square (open_clip's preprocessing), or a random crop, or
squashes the whole image itself. A frame is that view as a box in the squashed grid, in fractions
``(x0, y0, x1, y1)``; ``frame`` resamples each image's box to S x S (bilinear, differentiable in the pixels).

Resizing is linear, so the trainer's view of *image + noise* is the view of the image plus the view of the noise.
The image part is what the store holds (the trainer's own bicubic resize). The noise part is not the grid noise
itself: stretched over the native pixels (bilinear) and resized back down by the trainer (bicubic, antialiased),
it comes back blurred by a fixed small kernel (``resize_kernel``: 54 % of an impulse stays on its pixel), and
noise optimised without that blur loses much of its effect. So the surrogate sees the noise through that kernel
for every image whose native size is not the grid's.

For images already at the model's size (square, S x S) framing is the identity: the 64 px path is unchanged.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

FULL = (0.0, 0.0, 1.0, 1.0)


def centre_boxes(sizes: torch.Tensor, grid: int) -> torch.Tensor:
    """[N,4] boxes of what resize-shorter-side-to-``grid`` + centre-crop keeps of native ``sizes`` [N,2] =
    (width, height), in fractions of the whole image, with torchvision's own rounding (the longer side resized
    to int(grid * long / short) px, the crop offset rounded): a box half a pixel off shifts the whole noise."""
    boxes = []
    for w, h in sizes.tolist():
        if w == h:
            boxes.append(FULL)
            continue
        nw, nh = (grid, int(grid * h / w)) if w < h else (int(grid * w / h), grid)
        left, top = int(round((nw - grid) / 2.0)), int(round((nh - grid) / 2.0))
        boxes.append((left / nw, top / nh, (left + grid) / nw, (top + grid) / nh))
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


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


@lru_cache(maxsize=2)
def resize_kernel(stretch: str = "bilinear", scale: int = 8, grid: int = 32) -> torch.Tensor:
    """The 1-D kernel [5] that grid noise comes back through after a ``stretch`` (bilinear or nearest) by
    ``scale`` and a trainer's antialiased bicubic resize back to the grid (measured by pushing an impulse through
    both; what stays on the impulse's own pixel, bilinear: 50-57 % for any scale from 1.5 to 50; nearest: 68-75 %
    from 2 to 50, uneven below 2)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF
    impulse = torch.zeros(1, 1, grid, grid)
    impulse[..., grid // 2, grid // 2] = 1
    up = F.interpolate(impulse, size=(grid * scale, grid * scale), mode=stretch,
                       **({"align_corners": False} if stretch == "bilinear" else {}))
    back = TF.resize(up, [grid, grid], interpolation=InterpolationMode.BICUBIC, antialias=True)[0, 0]
    row = back[grid // 2, grid // 2 - 2:grid // 2 + 3]
    k = row / row[2].sqrt()          # the 2-D response is separable: k outer k
    return k / k.sum()


def blur(noise: torch.Tensor, stretch: str = "bilinear") -> torch.Tensor:
    """``noise`` [N,3,S,S] through ``resize_kernel`` (separable, edges replicated)."""
    k = resize_kernel(stretch).to(noise.device, noise.dtype)
    c = noise.shape[1]
    x = F.pad(noise, (2, 2, 2, 2), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


class Framing:
    """The frames of one dataset on an S x S grid. ``centre``: the trainer's default view (used to train the
    surrogate and for the text step). ``at_step``: for the PGD steps of one visit, per image, the centre square
    and the whole image in turn (from a random first one, ``phases``), so that the noise outside the centre is
    optimised too: a trainer's random crops and squashes reach it. Both show the noise as the trainer's resize
    leaves it (``blur``) for images whose native size is not the grid's."""

    def __init__(self, sizes: torch.Tensor | None, grid: int, stretch: str = "bilinear"):
        self.sizes, self.stretch = sizes, stretch
        self.boxes = centre_boxes(sizes, grid) if sizes is not None else None
        self.resized = ((sizes != grid).any(1) if sizes is not None else None)
        self.square = self.boxes is None or bool((self.boxes == torch.tensor(FULL)).all())
        self.trivial = self.square and (self.resized is None or not bool(self.resized.any()))

    def _view(self, x: torch.Tensor, delta: torch.Tensor, idx: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        noise = frame(delta, boxes)
        resized = self.resized[idx.cpu()].to(noise.device)
        if bool(resized.any()):
            noise = torch.where(resized[:, None, None, None], blur(noise, self.stretch), noise)
        return frame(x, boxes) + noise

    def centre(self, x: torch.Tensor, delta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The trainer's view of ``x + delta`` (clean images and noise in [0,1] units on the grid)."""
        return x + delta if self.trivial else self._view(x, delta, idx, self.boxes[idx.cpu()])

    def phases(self, n: int, g: torch.Generator) -> torch.Tensor | None:
        """Which images of a visit start on the whole image; draws nothing when all images are square, so square
        datasets keep their random streams."""
        return None if self.square else torch.rand(n, generator=g) < 0.5

    def at_step(self, x: torch.Tensor, delta: torch.Tensor, idx: torch.Tensor, phases: torch.Tensor | None,
                step: int) -> torch.Tensor:
        if self.trivial:
            return x + delta
        boxes = self.boxes[idx.cpu()]
        if phases is not None:
            boxes = torch.where((phases ^ bool(step % 2))[:, None], torch.tensor(FULL), boxes)
        return self._view(x, delta, idx, boxes)

    def __repr__(self) -> str:
        if self.trivial:
            return "Framing(identity: every image is the grid's size)"
        n_wide = int((self.boxes != torch.tensor(FULL)).any(1).sum())
        return (f"Framing(centre and whole in turn, {n_wide}/{len(self.boxes)} non-square, "
                f"{int(self.resized.sum())} seen through the trainer's resize)")
