"""What protection produces: int8 noise in pixel units (1 byte per value) and trigger ids, per image.

Saved with safetensors, atomically, so a round checkpoint is never half-written.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


@dataclass
class ProtectionState:
    noise: torch.Tensor        # int8 [N,3,S,S], pixel units
    triggers: torch.Tensor     # long [N,k]
    rounds_done: int = 0

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        save_file({"noise": self.noise.contiguous(), "triggers": self.triggers.contiguous(),
                   "rounds_done": torch.tensor([self.rounds_done])}, str(tmp))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ProtectionState":
        t = load_file(str(path))
        return cls(t["noise"], t["triggers"], int(t["rounds_done"][0]))
