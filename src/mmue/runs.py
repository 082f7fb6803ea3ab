"""Run directories (open_clip style): resolved params, a log, results.jsonl, atomic checkpoints, resume."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


class RunDirError(RuntimeError):
    pass


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class RunDir:
    """``path/params.json``, ``path/log.txt``, ``path/results.jsonl``, ``path/checkpoints/``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"

    @classmethod
    def open(cls, path: str | os.PathLike, params: dict, resume: bool, kind: str = "run") -> "RunDir":
        run = cls(path)
        exists = run.params_file.exists()
        if resume and not exists:
            raise RunDirError(f"{run.path}: nothing to resume (no params.json); drop --resume to start a new {kind}")
        if not resume and run.path.exists() and any(run.path.iterdir()):
            raise RunDirError(f"{run.path} already exists; pass --resume to continue it, or choose another --out")
        run.checkpoints.mkdir(parents=True, exist_ok=True)
        if not exists:
            atomic_write_text(run.params_file, json.dumps(params, indent=2, sort_keys=True, default=str))
        run._attach_log()
        return run

    @property
    def params_file(self) -> Path:
        return self.path / "params.json"

    def params(self) -> dict:
        return json.loads(self.params_file.read_text())

    def _attach_log(self) -> None:
        target = str((self.path / "log.txt").resolve())
        root = logging.getLogger("mmue")
        if any(getattr(h, "baseFilename", None) == target for h in root.handlers):
            return
        h = logging.FileHandler(target)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(h)
        if root.level == logging.NOTSET or root.level > logging.INFO:
            root.setLevel(logging.INFO)

    def close(self) -> None:
        target = str((self.path / "log.txt").resolve())
        root = logging.getLogger("mmue")
        for h in list(root.handlers):
            if getattr(h, "baseFilename", None) == target:
                root.removeHandler(h)
                h.close()

    def append_result(self, record: dict) -> None:
        with open(self.path / "results.jsonl", "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def results(self) -> list[dict]:
        p = self.path / "results.jsonl"
        if not p.exists():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]

    def truncate_results(self, last_epoch: int) -> None:
        """Drop result lines written after the last checkpoint (a run killed between the two writes)."""
        keep = [r for r in self.results() if r.get("epoch", 0) <= last_epoch]
        atomic_write_text(self.path / "results.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))
