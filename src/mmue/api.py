"""The public Python API: every CLI subcommand is one call here. The work is done a layer below (``train``,
``protect.workflow``, ``bench``, ``verify``, ``demo``); this module gathers it, so that the CLI, the app and a
user's script call the same functions."""
from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from pathlib import Path

from .bench import BenchConfig, run_bench
from .data import write_builtin
from .data.layouts import detect
from .data.openclipart import DEFAULT_ROOT, write_openclipart
from .demo import run_demo
from .device import resolve_device
from .distributed import on_main
from .metrics import random_guess
from .models import load_model
from .protect.manifest import check_published as check   # every file against the public manifest's hashes
from .protect.package import package
from .protect.workflow import protect as protect_run
from .runs import versions
from .train import evaluate, load_encoded
from .train import train_run as train
from .verify import DEFAULT_AUGMENT, DEFAULT_SCRAPERS, run_verify

__all__ = ["bench", "check", "demo", "evaluate_checkpoint", "evaluate_zeroshot", "load_encoded", "openclipart",
           "protect", "synth", "train", "verify", "versions"]


def synth(out_dir: str | os.PathLike, n_train: int = 2000, n_test: int = 1000, captions_per_image: int = 5,
          image_size: int = 64, seed: int = 0, zeroshot_per_class: int = 50) -> dict[str, Path]:
    """The built-in dataset (``mmue synth``): train/test CSVs and a zero-shot classification split."""
    return write_builtin(out_dir, n_train, n_test, captions_per_image, image_size, seed, zeroshot_per_class)


def evaluate_checkpoint(checkpoint: str | os.PathLike, data: str | os.PathLike, which: str = "best",
                        device: str = "auto", batch_size: int = 256, csv_img_key: str | None = None,
                        csv_caption_key: str | None = None, csv_separator: str | None = None) -> dict:
    """Retrieval metrics of a trained model on a CSV, plus the random-guess level under ``random_guess``."""
    dev = resolve_device(device)
    net = load_model(checkpoint, dev, which=which)
    enc = load_encoded(data, net, csv_img_key, csv_caption_key, csv_separator)
    metrics = evaluate(net, enc, dev, batch_size, progress=True)
    metrics["random_guess"] = random_guess(enc.caption_image, enc.n_images)
    return metrics


def evaluate_zeroshot(checkpoint: str | os.PathLike, data: str | os.PathLike, which: str = "best",
                      device: str = "auto", label_key: str = "label", img_key: str = "filepath") -> dict:
    """Zero-shot classification accuracy of a trained model on an ImageFolder folder or a labelled CSV."""
    from .zeroshot import evaluate_zeroshot as run, read_classification
    dev = resolve_device(device)
    return run(load_model(checkpoint, dev, which=which), read_classification(data, label_key, img_key), dev)


def openclipart(out_dir: str | os.PathLike, root: str | os.PathLike = DEFAULT_ROOT, size: int = 64,
                n_test: int = 1000, native: int | None = None) -> dict:
    """Debian's openclipart as image-caption pairs (``mmue data openclipart``); returns the counts written and
    dropped."""
    return write_openclipart(out_dir, root, size, n_test, native=native)


PACKAGED = "protected.zip"   # a folder's protected copy in its own layout, beside publish/
# What every protected copy should be read with: the measured limits (docs/results.md, "Where protection stands").
LIMITS = ("What this copy does not stop (measured): a scraper who re-captions the images, or deletes the trigger "
          "words, and trains a model other than the surrogate learns from them about as much as from clean ones; "
          "a JPEG re-save takes part of the noise; and a model trained on the copy still matches these very files "
          "to their captions. It works best against a model like the surrogate trained on the copy as published. "
          "Check your own copy with `mmue verify` (in the app: \"Check my protected copy\").")


def protect(train_data: str | os.PathLike, out: str | os.PathLike, *args, **options) -> dict:
    """Protect ``train_data`` into ``out`` (``mmue protect``; the arguments, in the same order, and the returned
    private manifest: ``protect.workflow.protect``). ``train_data`` may also be a folder in one of the layouts
    people keep captioned images in (``mmue.data.layouts``); its copy is then also packed in that same layout as
    ``out/protected.zip`` (a ``.txt`` beside each image, a ``metadata.jsonl`` ...), the zip to publish."""
    manifest = protect_run(train_data, out, *args, **options)
    if Path(train_data).is_dir() and manifest["out_format"] == "files":
        on_main(lambda: package(out, detect(train_data), Path(out) / PACKAGED))
    return manifest


protect.__signature__ = inspect.signature(protect_run)   # help() and editors show the parameters themselves


def bench(config, out: str | os.PathLike, device: str = "auto") -> list[dict]:
    """Run a bench grid (``mmue bench``): ``config`` a ``BenchConfig`` or the path of its JSON; returns the rows."""
    cfg = config if isinstance(config, BenchConfig) else BenchConfig.load(config) if config else BenchConfig()
    return run_bench(cfg, Path(out), device)


def verify(clean: str | os.PathLike, protected: str | os.PathLike, out: str | os.PathLike,
           public: str | os.PathLike | None = None, distractors: str | os.PathLike | None = None,
           model: str | Sequence[str] | None = None, epochs: int | None = None, seed: int = 0, device: str = "auto",
           augment: str = DEFAULT_AUGMENT, scrapers=DEFAULT_SCRAPERS) -> dict:
    """An owner's verdict on their protected copy (``mmue verify``): victims of each architecture in ``model``
    (several joined by ',', or a list; default ``verify.DEFAULT_MODELS``, a ResNet and a ViT) trained without the
    owner's images, with them clean, and with the protected copy as each scraper would use it; the verdict is the
    worst case over them; see ``verify.run_verify``. ``epochs``: None for each architecture's recipe
    (``verify.victim_recipe``: 20 from scratch, 8 for pretrained towers fine-tuned as a scraper would)."""
    return run_verify(clean, protected, out, public, distractors, model, epochs, seed, device, augment, list(scrapers))


def demo(out: str | os.PathLike, **options) -> dict:
    """Protect the built-in data, train on clean and protected copies, compare (``mmue demo``)."""
    return run_demo(out, **options)
