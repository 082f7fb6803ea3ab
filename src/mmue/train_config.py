"""A victim's training recipe (``TrainConfig``), apart from the training code so that reading its defaults (the
CLI's help) imports no torch."""
from __future__ import annotations

from dataclasses import dataclass

AUGMENTS = ("none", "rrc-flip", "rrc-whole")


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    wd: float = 0.2
    warmup: int = 50            # optimiser steps of linear warm-up
    seed: int = 0
    eval_batch_size: int = 256
    augment: str = "none"       # "rrc-flip": random-resized-crop (scale 0.5-1) + horizontal flip per sample;
    #                             "rrc-whole": the same over the whole photo at its native aspect (not its centre);
    #                             "crop-S": bicubic random-resized-crop at S..1 of the area, no flip (crop-0.9:
    #                             open_clip_train's default training view)

    def validate(self) -> "TrainConfig":
        for k in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        from .augment import crop_scale   # here, not above: the CLI's help reads the defaults without torch
        if self.augment not in AUGMENTS and crop_scale(self.augment) is None:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTS)} or crop-S (0.05 <= S <= 1), "
                             f"got {self.augment!r}")
        if self.lr <= 0 or self.wd < 0 or self.warmup < 0:
            raise ValueError(f"lr must be > 0, wd and warmup >= 0 "
                             f"(got lr={self.lr}, wd={self.wd}, warmup={self.warmup})")
        return self
