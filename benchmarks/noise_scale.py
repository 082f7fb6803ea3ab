"""Why the noise lives on the model's grid: how much of an L-inf 8/255 noise reaches the model after a trainer's
resize, for noise drawn per native pixel vs noise drawn on the 64 px grid and stretched over the photo, and the
most that any noise per native pixel (however optimised) can deliver along a grid pattern.

For a photo of longest side N (aspect 4:3), draws +-8 sign noise either per native pixel or per cell of the
64 px squashed grid (then stretched bilinearly, as ``export.native_noise``), resizes it like the trainer
(antialiased, shorter side to 64, centre square) and prints the RMS that is left, in pixel units (8.0 = all).

    python benchmarks/noise_scale.py
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mmue.protect.export import native_noise


def trainer_view(noise: torch.Tensor, size: int = 64) -> torch.Tensor:
    """Resize the shorter side to ``size`` (bilinear, antialiased), then the centre square."""
    h, w = noise.shape[-2:]
    s = size / min(h, w)
    r = F.interpolate(noise[None].float(), size=(round(h * s), round(w * s)), mode="bilinear", antialias=True,
                      align_corners=False)[0]
    top, left = (r.shape[-2] - size) // 2, (r.shape[-1] - size) // 2
    return r[:, top:top + size, left:left + size]


def best_native(pattern: torch.Tensor, w: int, h: int, eps: int = 8) -> torch.Tensor:
    """The native noise within +-eps whose trainer's view goes furthest along ``pattern`` (a linear objective:
    eps times the sign of the resize's adjoint applied to the pattern) - the bound for any noise per native pixel,
    optimised or not, on how much of a grid pattern can reach the model."""
    n = torch.zeros(pattern.shape[0], h, w, requires_grad=True)
    (trainer_view(n) * pattern).sum().backward()
    return eps * torch.sign(n.grad)


def main() -> None:
    g = torch.Generator().manual_seed(0)
    print("RMS in px after the trainer's resize to 64 (8.0 = all of it); in brackets the part along the 64 px sign\n"
          "pattern that was meant (8.0 = all of it). 'best per native pixel' is the most any noise within +-8 on the\n"
          "native pixels can deliver along that pattern.")
    print(f"{'longest side':>12} {'per native pixel':>17} {'grid, bilinear':>15} {'grid, nearest':>15} "
          f"{'best per native pixel':>22}")
    for n in (64, 128, 384, 1024, 4000):
        w, h = n, max(8, n * 3 // 4)
        native = (torch.randint(0, 2, (3, h, w), generator=g) * 2 - 1).to(torch.int8) * 8
        grid = (torch.randint(0, 2, (3, 64, 64), generator=g) * 2 - 1).to(torch.int8) * 8
        cells = [f"{float(trainer_view(native).pow(2).mean().sqrt()):.2f}"]
        for x in (native_noise(grid, w, h, 8), native_noise(grid, w, h, 8, stretch="nearest"),
                  best_native(grid.float() / 8, w, h)):
            v = trainer_view(x.float())
            along = float((v * grid).sum() / (grid.float() ** 2).sum()) * 8
            cells.append(f"{float(v.pow(2).mean().sqrt()):.2f} ({along:.2f})")
        print(f"{n:>12} {cells[0]:>17} {cells[1]:>15} {cells[2]:>15} {cells[3]:>22}")


if __name__ == "__main__":
    main()
