"""Run directories (open_clip style): resolved params, a log, results.jsonl, atomic checkpoints, resume."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from . import __version__
from .fileio import append_jsonl, atomic_write_text, read_jsonl, write_jsonl

log = logging.getLogger(__name__)


class RunDirError(ValueError):
    """An output folder that cannot be used as asked (exists, holds the input, nothing to resume)."""


def check_out_dir(out: Path, resume: bool, resumable: bool, kind: str = "run", overwrite: bool = False,
                  source: Path | None = None) -> None:
    """The one check of an output folder before a run writes into it: never inside the input data, never
    over an existing run unless ``resume`` (which needs something ``resumable``) or ``overwrite``."""
    out = Path(out)
    if source is not None:
        src, o = Path(source).resolve(), out.resolve()
        if src.is_dir() and o.is_relative_to(src):   # a folder read as data: its copy would become part of it
            raise RunDirError(f"--out {out} is inside the input folder {source}; the copy would be read as input "
                              "next time: choose an output folder outside it")
        src = src if src.is_dir() else src.parent
        if o == src or o in src.parents:
            raise RunDirError(f"--out {out} contains the input data ({source}); originals are never modified: "
                              "choose an output folder outside it")
    if resume:
        if not resumable:
            raise RunDirError(f"{out}: nothing to resume; drop --resume to start a new {kind}")
        return
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RunDirError(f"{out} already exists; pass --resume to continue it"
                              + (", --overwrite to replace it," if source is not None else "")
                              + " or choose another --out")
        shutil.rmtree(out)


class RunDir:
    """``path/params.json``, ``path/log.txt``, ``path/results.jsonl``, ``path/checkpoints/``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"

    @classmethod
    def open(cls, path: str | os.PathLike, params: dict, resume: bool, kind: str = "run") -> "RunDir":
        run = cls(path)
        exists = run.params_file.exists()
        check_out_dir(run.path, resume, exists, kind)
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
        append_jsonl(self.path / "results.jsonl", record)

    def results(self) -> list[dict]:
        return read_jsonl(self.path / "results.jsonl")

    def truncate_results(self, last_epoch: int) -> None:
        """Drop result lines written after the last checkpoint (a run killed between the two writes)."""
        keep = [r for r in self.results() if r.get("epoch", 0) <= last_epoch]
        write_jsonl(self.path / "results.jsonl", keep)


def versions() -> dict:
    """The versions a run records with its parameters."""
    import platform

    import open_clip
    import torch
    return {"mmue": __version__, "torch": torch.__version__, "open_clip": open_clip.__version__,
            "python": platform.python_version()}
