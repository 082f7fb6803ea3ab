"""Victims trained by open_clip's own training app (``open_clip_train``): the trainer an attacker actually runs.

A bench victim named ``open_clip_train:ARCH`` is trained by ``python -m open_clip_train.main`` on the released copy
(a CSV of files), with that app's own image pipeline: random-resized-crop (scale 0.9-1, bicubic) for training, its
resize and centre crop for evaluation, its per-row sampling (one step sees every caption row, not one caption per
image) and its learning-rate schedule, at the bench's epochs, batch size, learning rate, weight decay and warm-up.
Its last epoch is read back into a run folder that MMUE's evaluation reads like any other victim's. The app keeps no
best epoch, so a victim's best epoch is its last.

Needs ``pip install 'mmue[opencliptrain]'`` (the app's data loaders import webdataset and pandas).
"""
from __future__ import annotations

import csv
import logging
import shutil
import subprocess
import sys
from pathlib import Path

from .data.pairs import read_pairs
from .device import resolve_device
from .fileio import atomic_write_json
from .models import create_model, save_model
from .train import TrainConfig

log = logging.getLogger(__name__)

PREFIX = "open_clip_train:"
NAME = "victim"   # the app's experiment name inside the run folder


def is_external(victim: str) -> bool:
    return victim.startswith(PREFIX)


def architecture(victim: str) -> str:
    """``open_clip_train:mmue-tiny-rn`` -> ``mmue-tiny-rn``."""
    return victim.removeprefix(PREFIX)


def write_app_csv(train_csv: Path, out: Path) -> Path:
    """``train_csv`` as the app reads it: tab-separated, absolute image paths, one row per caption."""
    pairs = read_pairs(train_csv)
    if pairs.opener is not None:
        raise ValueError(f"{train_csv}: open_clip_train victims read a CSV of image files; write the released "
                         "copy as files (not shards) to train one")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL)
        w.writerow(["filepath", "title"])
        for caption, i in zip(pairs.captions, pairs.caption_image):
            w.writerow([str(pairs.image_path(i).resolve()), " ".join(caption.split())])
    tmp.replace(out)
    return out


def app_args(app_csv: Path, logs: Path, arch: str, cfg: TrainConfig, device: str, resume: bool) -> list[str]:
    """The app's command line: MMUE's recipe where the two share a knob, the app's own defaults elsewhere."""
    cuda = device.startswith("cuda")
    return ["--train-data", str(app_csv), "--dataset-type", "csv", "--csv-separator", "\t",
            "--csv-img-key", "filepath", "--csv-caption-key", "title",
            "--model", arch, "--epochs", str(cfg.epochs), "--batch-size", str(cfg.batch_size),
            "--lr", str(cfg.lr), "--wd", str(cfg.wd), "--warmup", str(cfg.warmup), "--seed", str(cfg.seed),
            "--workers", "2" if cuda else "0", "--device", device, "--precision", "amp" if cuda else "fp32",
            "--logs", str(logs), "--name", NAME, "--save-frequency", "0", "--save-most-recent",
            "--zeroshot-frequency", "0", "--log-every-n-steps", "1000"] + (["--resume", "latest"] if resume else [])


def train_with_open_clip(train_csv: Path, run: Path, victim: str, cfg: TrainConfig, device: str = "auto",
                         record: dict | None = None) -> None:
    """Train ``victim`` (``open_clip_train:ARCH``) on ``train_csv`` into ``run``; a killed run resumes from the
    app's latest epoch. ``record``: more facts for ``params.json`` (the caller's, e.g. what the data held)."""
    if (run / "summary.json").exists():
        log.info("victim %s already trained", run)
        return
    cfg.validate()
    if cfg.augment != "none":
        raise ValueError(f"{victim}: open_clip_train trains with its own augmentation; give this victim defenses "
                         f"without a training augmentation (got augment={cfg.augment!r})")
    arch = architecture(victim)
    dev = str(resolve_device(device))
    logs = run / "open_clip_train"
    app_csv = write_app_csv(train_csv, run / "train-app.tsv")
    latest = logs / NAME / "checkpoints" / "epoch_latest.pt"
    if (logs / NAME).exists() and not latest.exists():
        shutil.rmtree(logs / NAME)   # killed within its first epoch: the app refuses to start over an old name
    args = app_args(app_csv, logs, arch, cfg, dev, resume=latest.exists())
    log.info("open_clip_train %s on %s", arch, train_csv)
    with open(run / "open_clip_train.log", "a", encoding="utf-8") as out:
        done = subprocess.run([sys.executable, "-m", __name__, *args], stdout=out, stderr=subprocess.STDOUT)
    final = logs / NAME / "checkpoints" / f"epoch_{cfg.epochs}.pt"
    if done.returncode != 0 or not final.exists():
        tail = (run / "open_clip_train.log").read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"open_clip_train failed for {victim} (exit {done.returncode}); its log "
                           f"{run / 'open_clip_train.log'} ends:\n{tail}")
    model = create_model(arch, pretrained=final)   # read with weights_only=True
    for which in ("last", "best"):
        save_model(model, run / "checkpoints", which)
    atomic_write_json(run / "params.json", {"trainer": "open_clip_train", "model": arch, "train_data": str(train_csv),
                                            "args": args, **cfg.__dict__, **(record or {})})
    atomic_write_json(run / "summary.json", {"epochs": cfg.epochs, "best_epoch": cfg.epochs,
                                             "trainer": "open_clip_train"})


def _main(argv: list[str]) -> int:
    from .models import factory   # importing MMUE's factory registers its architectures with open_clip
    log.debug("architectures registered: %s", factory.tiny_models())
    try:
        from open_clip_train.main import main
    except ImportError as e:
        print(f"open_clip_train cannot start ({e}): pip install 'mmue[opencliptrain]'", file=sys.stderr)
        return 2
    return int(main(argv) or 0)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
