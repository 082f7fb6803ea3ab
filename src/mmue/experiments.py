"""The building blocks of an experiment, shared by ``mmue demo`` and ``mmue bench``: protect unless already
protected, train a victim unless already trained, a victim's metrics, the random-guess level of a test split.
Every block skips finished work and resumes interrupted work, so a rerun loses nothing."""
from __future__ import annotations

import inspect
import json
import logging
from dataclasses import fields
from pathlib import Path

from .data import read_pairs
from .data.pairs import data_fingerprint
from .device import resolve_device
from .external import architecture, is_external, train_with_open_clip
from .metrics import random_guess
from .quality import image_diffs, mean_psnr
from .models import load_model, recalibrate_batchnorm
from .protect.registry import resolve
from .protect.run import ProtectionRun
from .protect.stages import STAGES_DIR
from .protect.workflow import protect
from .train import TrainConfig, evaluate, load_encoded, train_run
from .zeroshot import evaluate_zeroshot, read_classification

log = logging.getLogger(__name__)


def engine_settings(settings: dict) -> dict:
    """The engine's settings among keyword arguments for ``protect.workflow.protect`` (less its own:
    image_format, public, ...)."""
    options = set(inspect.signature(protect).parameters)
    return {k: v for k, v in settings.items() if k not in options}


def ensure_protected(train_csv: Path, out: Path, method: str, strength: str, seed: int, device: str,
                     **settings) -> dict:
    """The manifest of ``out``, protecting ``train_csv`` into it first unless that already finished. A copy
    (finished or started) made with other settings is refused: its figures would be reported as these."""
    run = ProtectionRun(out)
    if run.finished or run.started:
        want = resolve(method, strength, seed=seed, **engine_settings(settings))
        have = ProtectionRun.config(run.manifest() if run.finished else json.loads(run.params_file.read_text()))
        diff = [f"{f.name} {getattr(have, f.name)!r} (asked: {getattr(want, f.name)!r})" for f in fields(want)
                if getattr(have, f.name) != getattr(want, f.name)]
        if diff:
            raise ValueError(f"{out}: this copy was protected with {', '.join(diff)}; give another output folder "
                             "or delete this one")
    if not run.finished:   # a protection in stages (surrogates joined by ',') keeps its runs in STAGES_DIR
        protect(train_csv, out, method=method, strength=strength, seed=seed, device=device,
                resume=run.started or (out / STAGES_DIR).exists(), **settings)
    return run.manifest()


def copy_fidelity(original_csv: Path, released_csv: Path) -> tuple[float | None, int]:
    """(mean PSNR in dB, largest change in pixel units) of a released copy against the originals it was made from,
    image i of one CSV against image i of the other (a protected copy keeps its source's order): what several
    protections applied one after another changed in all."""
    a, b = read_pairs(original_csv), read_pairs(released_csv)
    if a.n_images != b.n_images:
        raise ValueError(f"{released_csv} has {b.n_images} images, {original_csv} {a.n_images}: not a copy of it")
    stats = image_diffs(a.open_image, b.open_image, [(i, i) for i in range(a.n_images)])
    return mean_psnr([p for p, _ in stats]), max((d for _, d in stats), default=0)


PINNED = "train_data_fingerprint"   # in a victim's params.json: the data it was trained on
RECIPE = ("epochs", "batch_size", "lr", "wd", "warmup", "seed", "augment")   # what a victim learns depends on


def check_recipe(run: Path, model: str, cfg: TrainConfig, train_csv: Path | None = None,
                 fingerprint: dict | None = None) -> None:
    """Refuse to reuse or resume a victim folder that was trained with another model, recipe or training data
    (another file, or the same file holding other images or captions: ``fingerprint``, ``data_fingerprint`` of
    it now): its figures would be reported as this one's."""
    p = run / "params.json"
    if not p.exists():
        return
    old = json.loads(p.read_text())
    want = {"model": model, **{k: getattr(cfg, k) for k in RECIPE}}
    diff = [f"{k} {old[k]!r} (asked: {v!r})" for k, v in want.items() if k in old and old[k] != v]
    if train_csv is not None and "train_data" in old and Path(old["train_data"]).resolve() != Path(train_csv).resolve():
        diff.append(f"train_data {old['train_data']!r} (asked: {str(train_csv)!r})")
    elif fingerprint is not None and (was := old.get(PINNED)) and was["sha256"] != fingerprint["sha256"]:
        # a victim trained before this record existed is not checked: nothing says what it saw
        diff.append(f"other images or captions in {old['train_data']} ({was['n_images']} images, {was['n_captions']} "
                    f"captions then; {fingerprint['n_images']} and {fingerprint['n_captions']} now, or other names, "
                    "captions or file sizes)")
    if diff:
        raise ValueError(f"{run}: this victim was trained with {', '.join(diff)}; give another output folder "
                         "or delete this one")


def train_victim(train_csv: Path, test_csv: Path, run: Path, model: str, cfg: TrainConfig, device: str) -> None:
    """Train victim ``model`` (an architecture, or ``open_clip_train:ARCH`` for open_clip's own trainer)."""
    pinned = data_fingerprint(read_pairs(train_csv))
    if is_external(model):   # its params.json, written once the app has trained, names the app's architecture
        check_recipe(run, architecture(model), cfg, train_csv, pinned)
        return train_with_open_clip(train_csv, run, model, cfg, device, record={PINNED: pinned})
    check_recipe(run, model, cfg, train_csv, pinned)
    if (run / "summary.json").exists():
        log.info("victim %s already trained", run)
        return
    train_run(train_csv, run, model=model, val_data=test_csv, config=cfg, device=device,
              resume=(run / "params.json").exists(), record={PINNED: pinned})


def load_victim(run: Path, device: str, which: str = "last", bn_images: Path | None = None,
                bn_cache: dict | None = None):
    """A trained victim's checkpoint ``which``; with ``bn_images`` (a CSV of clean images), its BatchNorm statistics
    re-estimated on them first (the ``bn-clean`` attacker). ``bn_cache``: a dict the caller keeps, holding each
    (CSV, architecture)'s encoding between calls, so that the CSV is read once per architecture."""
    model = load_model(run, resolve_device(device), which=which)
    if bn_images is not None:
        cache = {} if bn_cache is None else bn_cache
        key = (str(bn_images), model.name)
        if key not in cache:
            cache[key] = load_encoded(bn_images, model).images
        recalibrate_batchnorm(model, cache[key])
    return model


def victim_metrics(run: Path, test_csv: Path, device: str, zeroshot: Path | None = None,
                   bn_images: Path | None = None, bn_cache: dict | None = None) -> dict:
    """Clean-test metrics of a victim's last epoch, with its best epoch's beside (early stopping), and the
    last epoch's zero-shot accuracy on ``zeroshot`` (a classification folder) when given. ``bn_images``: evaluate
    each checkpoint with its BatchNorm statistics re-estimated on these clean images (``bn-clean``; ``bn_cache``
    as for ``load_victim``)."""
    dev = resolve_device(device)
    out, enc, cache = {}, None, {} if bn_cache is None else bn_cache
    for which in ("last", "best"):
        model = load_victim(run, device, which, bn_images, cache)
        enc = enc or load_encoded(test_csv, model)  # same architecture: encode the test split once
        out[which] = evaluate(model, enc, dev)
    summary = json.loads((run / "summary.json").read_text())
    init = run / "init_metrics.json"   # before training (the learning gain's baseline)
    extra = {"init": json.loads(init.read_text())} if init.exists() else {}
    if zeroshot is not None and Path(zeroshot).is_dir():
        extra["zeroshot"] = last_epoch_zeroshot(run, zeroshot, device, bn_images, cache)
    return {**out["last"], "best_epoch": summary["best_epoch"], "best": out["best"], **extra}


def last_epoch_zeroshot(run: Path, zeroshot: Path, device: str, bn_images: Path | None = None,
                        bn_cache: dict | None = None) -> dict:
    """Zero-shot accuracy of a victim's last epoch on a classification folder (per-class figures left out)."""
    dev = resolve_device(device)
    z = evaluate_zeroshot(load_victim(run, device, "last", bn_images, bn_cache), read_classification(zeroshot), dev)
    return {k: v for k, v in z.items() if k != "per_class_acc1"}


def random_guess_of(test_csv: Path) -> dict[str, float]:
    """The recall of a random ranking on a test split (its image/caption structure only; no file is read)."""
    p = read_pairs(test_csv, check_files=False)
    return random_guess(p.caption_image, p.n_images)
