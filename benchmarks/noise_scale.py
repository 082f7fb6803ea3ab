"""Why the noise lives on the model's grid: how much of an L-inf 8/255 noise reaches the model after a trainer's
resize, for noise drawn per native pixel vs noise drawn on the 64 px grid and stretched over the photo.

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


def main() -> None:
    g = torch.Generator().manual_seed(0)
    print(f"{'longest side':>12} {'per native pixel':>17} {'64 px grid, stretched':>22}   (RMS in px after the "
          "trainer's resize to 64; 8.0 = all of it)")
    for n in (64, 128, 384, 1024, 4000):
        w, h = n, max(8, n * 3 // 4)
        native = (torch.randint(0, 2, (3, h, w), generator=g) * 2 - 1).to(torch.int8) * 8
        grid = (torch.randint(0, 2, (3, 64, 64), generator=g) * 2 - 1).to(torch.int8) * 8
        stretched = native_noise(grid, w, h, 8)
        rms = [float(trainer_view(x).pow(2).mean().sqrt()) for x in (native, stretched)]
        print(f"{n:>12} {rms[0]:>17.2f} {rms[1]:>22.2f}")


if __name__ == "__main__":
    main()
