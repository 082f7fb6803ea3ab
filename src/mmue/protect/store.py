"""What protection produces: int8 noise in pixel units (1 byte per value) and trigger ids, per image.

The noise can live in memory (a tensor; small runs and tests) or in an int8 file on disk (``DiskArray``;
what ``mmue protect`` uses), so peak RAM stays flat however many images are protected. Triggers are a
compact int32 array (k values per image).

A checkpoint is a folder: ``noise.ckpt.rN.i8`` (an atomic copy of the working noise file after round N),
``triggers.rN.safetensors`` (and the shared noise patterns, if any), files the caller adds (the surrogate), and
last ``state.json``, which names them and so marks round N as done. Files are stamped with their round, so a
process killed while writing round N+1's leaves round N's checkpoint whole; the older files are removed only
after ``state.json`` points at the new ones. Loading copies the checkpointed noise back over the working file,
so a round that died half-way restarts from the noise it started with.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..data.diskarray import DiskArray
from ..fileio import atomic_write, atomic_write_json

NOISE_FILE, NOISE_CKPT, TRIGGERS_FILE, STATE_FILE = "noise.i8", "noise.ckpt.i8", "triggers.safetensors", "state.json"


@dataclass
class ProtectionState:
    noise: torch.Tensor | DiskArray    # int8 [N,3,S,S], pixel units
    triggers: torch.Tensor             # long [N,k]
    rounds_done: int = 0
    patterns: torch.Tensor | None = None   # float [K,3,S,S] in [-eps, eps]: shared noise, one per cluster

    @staticmethod
    def new_noise(shape: tuple[int, ...], folder: str | os.PathLike | None = None) -> torch.Tensor | DiskArray:
        """Zero noise, in memory (``folder`` None) or in ``folder/noise.i8``."""
        if folder is None:
            return torch.zeros(shape, dtype=torch.int8)
        return DiskArray(Path(folder) / NOISE_FILE, shape, "int8", create=True)

    def save(self, folder: str | os.PathLike, extra: dict[str, str] | None = None) -> None:
        """Checkpoint into ``folder``; ``extra``: more files of this round (written by the caller before), named
        in ``state.json`` so that they belong to this checkpoint and no other."""
        folder = Path(folder)
        r = self.rounds_done
        noise_name, triggers_name = f"noise.ckpt.r{r}.i8", f"triggers.r{r}.safetensors"
        if isinstance(self.noise, DiskArray):
            self.noise.copy_to(folder / noise_name)
        else:
            def write_noise(tmp: Path) -> None:
                DiskArray(tmp, tuple(self.noise.shape), "int8", create=True)[:] = self.noise
            atomic_write(folder / noise_name, write_noise)
        triggers = {"triggers": self.triggers.to(torch.int32).contiguous()}
        if self.patterns is not None:
            triggers["patterns"] = self.patterns.float().contiguous()
        atomic_write(folder / triggers_name, lambda tmp: save_file(triggers, str(tmp)))
        files = {"noise": noise_name, "triggers": triggers_name, **(extra or {})}
        # last: state.json marks the checkpoint complete and names its files
        atomic_write_json(folder / STATE_FILE, {"rounds_done": r, "noise_shape": list(self.noise.shape),
                                                "files": files})
        for old in folder.glob("*.r*.*"):   # earlier rounds' files, now unreferenced
            if old.name not in files.values() and old.name.split(".r")[0].rstrip("0123456789") in (
                    "noise.ckpt", "triggers", "surrogate", "optimizer"):
                old.unlink(missing_ok=True)

    @staticmethod
    def files(folder: str | os.PathLike) -> dict[str, str]:
        """The files of the last complete checkpoint in ``folder``, by role."""
        meta = json.loads((Path(folder) / STATE_FILE).read_text())
        return meta.get("files", {"noise": NOISE_CKPT, "triggers": TRIGGERS_FILE})

    @staticmethod
    def exists(folder: str | os.PathLike) -> bool:
        return (Path(folder) / STATE_FILE).is_file()

    @classmethod
    def load(cls, folder: str | os.PathLike, in_memory: bool = False) -> "ProtectionState":
        folder = Path(folder)
        st = cls._read(folder, cls.files(folder)["noise"])
        st.noise = st.noise[:] if in_memory else st.noise.copy_to(folder / NOISE_FILE)
        return st

    @classmethod
    def attach(cls, folder: str | os.PathLike) -> "ProtectionState":
        """The state as last saved, on the *working* noise file, without copying (the other ranks of a
        distributed run, once rank 0 has loaded or created it)."""
        return cls._read(Path(folder), NOISE_FILE)

    @classmethod
    def _read(cls, folder: Path, noise_file: str) -> "ProtectionState":
        meta = json.loads((folder / STATE_FILE).read_text())
        noise = DiskArray(folder / noise_file, tuple(meta["noise_shape"]), "int8")
        saved = load_file(str(folder / cls.files(folder)["triggers"]))
        return cls(noise, saved["triggers"].long(), int(meta["rounds_done"]), saved.get("patterns"))
