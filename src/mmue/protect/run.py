"""``ProtectionRun``: the folder of one protection, the counterpart of ``RunDir`` for training.

It owns ``OUT/.mmue_state/`` while the protection runs: the resolved parameters (``params.json``), the
round log (``rounds.jsonl``), the checkpoints (surrogate, optimiser, noise and triggers, written after every
round) and the resume logic. When the export has finished, the state folder is removed and
``private/manifest.json`` marks the run complete; a rerun with ``resume`` then returns that manifest.
While a process writes into ``OUT`` it holds ``OUT/.mmue.lock`` (its host and pid): a second ``mmue protect`` on
the same folder stops with a clear message, and the lock of a process that died is taken over.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from dataclasses import fields
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..data.pairs import PairSet, data_fingerprint
from ..fileio import append_jsonl, atomic_torch_save, atomic_write_json, read_jsonl
from ..models import save_model
from ..runs import RunDirError, check_out_dir
from .config import ProtectConfig
from .manifest import MANIFEST
from .registry import resolve
from .store import ProtectionState

log = logging.getLogger(__name__)
STATE_DIR = ".mmue_state"
LOCK_FILE = ".mmue.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # exists, owned by someone else
        return True
    return True


class ProtectionRun:
    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.state_dir = self.out / STATE_DIR
        self.t0 = time.time()

    # ------------------------------------------------------------------------------------ folder and params
    @property
    def params_file(self) -> Path:
        return self.state_dir / "params.json"

    @property
    def manifest_file(self) -> Path:
        return self.out / MANIFEST

    @property
    def data_file(self) -> Path:
        return self.state_dir / "data.json"

    def pin_data(self, pairs: PairSet) -> None:
        """Record the data when the run starts, and refuse to resume it on other data (rank 0): the checkpoints'
        noise and triggers belong to these images and captions, in this order. (A run started before this
        record existed is pinned to the data it resumes on.)"""
        now = data_fingerprint(pairs)
        if not self.data_file.exists():
            atomic_write_json(self.data_file, now)
            return
        was = json.loads(self.data_file.read_text())
        if was["sha256"] != now["sha256"]:
            raise RunDirError(
                f"{pairs.source} changed since the protection in {self.out} started ({was['n_images']} images and "
                f"{was['n_captions']} captions then, {now['n_images']} and {now['n_captions']} now, or other names, "
                "captions or file sizes): its checkpoints' noise and triggers belong to the data as it was. Put the "
                "data back as it was and --resume, or start over with --overwrite")

    @property
    def lock_file(self) -> Path:
        return self.out / LOCK_FILE

    def check_lock(self) -> None:
        """Refuse a folder another live process is writing into; a dead process's lock is stale."""
        try:
            held = json.loads(self.lock_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return
        if held.get("pid") == os.getpid() and held.get("host") == socket.gethostname():
            return
        if held.get("host") != socket.gethostname():
            raise RunDirError(f"{self.out} is locked by process {held.get('pid')} on host {held.get('host')} "
                              f"({self.lock_file}); if no mmue runs there any more, delete that file")
        if _alive(int(held.get("pid", -1))):
            raise RunDirError(f"{self.out} is being written by another mmue process (pid {held['pid']}, since "
                              f"{held.get('since', '?')}); wait for it to finish, or choose another --out")
        log.warning("taking over the stale lock of process %s, which is no longer running", held.get("pid"))

    def lock(self) -> None:
        self.check_lock()
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.lock_file, {"pid": os.getpid(), "host": socket.gethostname(),
                                           "since": time.strftime("%Y-%m-%d %H:%M:%S")})

    def unlock(self) -> None:
        try:
            if json.loads(self.lock_file.read_text()).get("pid") == os.getpid():
                self.lock_file.unlink()
        except (FileNotFoundError, json.JSONDecodeError):
            pass

    @property
    def finished(self) -> bool:
        return self.manifest_file.exists() and not self.state_dir.exists()

    @property
    def started(self) -> bool:
        return self.params_file.exists()

    def prepare(self, source: Path, resume: bool, overwrite: bool, new_params: dict) -> dict:
        """Check the folder and record the run (rank 0). Returns ``{"finished": manifest}`` for a finished run,
        else ``{"params": ...}``: the stored ones when resuming (so a resumed run finishes the run that was
        started), or ``new_params``."""
        self.check_lock()   # before anything is removed by --overwrite
        check_out_dir(self.out, resume, self.started or self.manifest_file.exists(), "protection",
                      overwrite, source)
        if resume and self.finished:
            return {"finished": self.manifest()}
        self.lock()
        if resume:
            stored = json.loads(self.params_file.read_text())
            if Path(stored["train_data"]).resolve() != Path(source).resolve():
                raise RunDirError(f"{self.out} protects {stored['train_data']}, not {source}; "
                                  "resume with the same --train-data")
            return {"params": stored}
        self.state_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.params_file, new_params)
        return {"params": new_params}

    def manifest(self) -> dict:
        return json.loads(self.manifest_file.read_text())

    @staticmethod
    def config(params: dict) -> ProtectConfig:
        """The run's ``ProtectConfig`` from its stored parameters (settings of older versions that no longer
        exist, such as ``formulation``, are ignored; runs from before ``trigger_vocab`` used any word)."""
        stored = {"trigger_vocab": "any", **params["config"]}
        known = {f.name for f in fields(ProtectConfig)} - {"method"}
        return resolve(stored["method"], "high", **{k: v for k, v in stored.items() if k in known})

    # ------------------------------------------------------------------------------------ state and rounds
    def start_state(self, engine, resume: bool) -> ProtectionState:
        """The state to continue (rank 0): the last checkpoint when resuming, else a fresh one, checkpointed
        as round 0 (so its random starting point survives a crash in round 1)."""
        if resume and ProtectionState.exists(self.state_dir):
            return ProtectionState.load(self.state_dir)
        st = engine.init_state(self.state_dir)
        st.save(self.state_dir)
        return st

    def restore(self, engine, rounds_done: int) -> None:
        """Surrogate and optimiser as they were after the last finished round."""
        if rounds_done > 0:
            files = ProtectionState.files(self.state_dir)
            for tag, model, optimizer in _surrogates(engine):
                model.clip.load_state_dict(load_file(str(self.state_dir / files[f"surrogate{tag}"])))
                optimizer.load_state_dict(torch.load(self.state_dir / files[f"optimizer{tag}"], weights_only=True))
            log.info("resuming after round %d/%d", rounds_done, engine.cfg.rounds)

    def checkpoint(self, engine, state: ProtectionState, stats: dict) -> None:
        """After a round (rank 0): its log line, surrogate, optimiser, then the state (which marks it done and
        names the round's files: a kill in between leaves the previous round's checkpoint whole)."""
        append_jsonl(self.state_dir / "rounds.jsonl", {**stats, "elapsed_s": round(time.time() - self.t0, 1)})
        r = state.rounds_done
        files = {}
        for tag, model, optimizer in _surrogates(engine):
            save_model(model, self.state_dir, f"surrogate{tag}.r{r}")
            atomic_torch_save(optimizer.state_dict(), self.state_dir / f"optimizer{tag}.r{r}.pt")
            files.update({f"surrogate{tag}": f"surrogate{tag}.r{r}.safetensors",
                          f"optimizer{tag}": f"optimizer{tag}.r{r}.pt"})
        state.save(self.state_dir, files)

    def round_log(self) -> list[dict]:
        """One record per round; a round redone after a crash keeps its last record."""
        return list({r["round"]: r for r in read_jsonl(self.state_dir / "rounds.jsonl")}.values())

    def close(self) -> None:
        """The protected copy is written: the working state goes."""
        shutil.rmtree(self.state_dir)


def _surrogates(engine) -> list[tuple[str, object, object]]:
    """(file tag, model, optimiser) of every surrogate: "" for the main one, "1", "2", ... for the helpers."""
    return [("", engine.model, engine.optimizer)] + [(str(i), h.model, h.optimizer)
                                                      for i, h in enumerate(engine.helpers, 1)]
