"""``mmue verify``: an owner's own verdict on their protected copy.

Trains three victims with the default recipe (same architecture, seed, epochs and training augmentation: by
default ``crop-0.9``, the mild random crop open_clip's training app applies, which undoes part of a protection
that MMUE's plain trainer would credit): on the owner's clean data, on
their protected copy, and without either (``--public`` data alone, or no training at all), each mixed with
``--public`` clean data when given, as a scraper would mix them. Then asks each victim to find the owner's
images from the owner's original captions and the reverse (``owner.owner_metrics``), with ``--distractors``
images in the gallery when given, and prints the three-way table with a plain verdict. Resumable: finished
victims are kept.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch

from .device import resolve_device
from .experiments import train_victim
from .fileio import atomic_write_json, atomic_write_text
from .models import DEFAULT_MODEL, create_model
from .owner import concat_csvs, gap_closed, owner_metrics
from .protect.export import MANIFEST
from .train import TrainConfig

DEFAULT_AUGMENT = "crop-0.9"   # open_clip_train's default training view: the trainer a scraper runs

CAVEATS = ("What this does not show: other architectures or bigger models than the one trained here, an attacker "
           "who re-saves or crops your data (see the bench's defenses), or models fine-tuned from pretrained "
           "weights. What is known: a scraper who re-captions your images (or finds your original captions "
           "elsewhere) removes almost all of it, because the added caption words carry the protection of a few "
           "images among many (measured on clip art: 1-8 % of the way to never having published them, instead "
           "of 30-75 % with the captions as published). A small owner set makes every figure "
           "noisy: compare with the absent row.")


def protected_csv(path: Path) -> Path:
    """The captions file of a protected copy: given as the CSV itself, the output folder, or its publish/."""
    path = Path(path)
    if path.is_file():
        return path
    for man in (path / MANIFEST, path / "manifest.json"):
        if man.is_file():
            data = json.loads(man.read_text()).get("data")
            if data and "shards/" not in data:   # both manifests name it relative to the folder given
                return path / data
    raise FileNotFoundError(f"{path}: not a protected copy (no {MANIFEST} or manifest.json naming a CSV); "
                            "give the --out folder of mmue protect, its publish/ folder, or the protected CSV")


def run_verify(clean: Path, protected: Path, out: Path, public: Path | None = None,
               distractors: Path | None = None, model: str = DEFAULT_MODEL, epochs: int = 20, seed: int = 0,
               device: str = "auto", augment: str = DEFAULT_AUGMENT) -> dict:
    out = Path(out)
    cfg = TrainConfig(epochs=epochs, seed=seed, augment=augment).validate()
    out.mkdir(parents=True, exist_ok=True)
    prot_csv = protected_csv(protected)
    train_sets = {"clean": [Path(clean)], "protected": [prot_csv]}
    if public is not None:
        train_sets = {k: [Path(public)] + v for k, v in train_sets.items()}
        train_sets["absent"] = [Path(public)]
    rows = {}
    for name in ("absent", "clean", "protected"):
        run = out / "victims" / name
        if name in train_sets:
            data = concat_csvs(train_sets[name], out / f"train-{name}.csv")
            train_victim(data, Path(clean), run, model, cfg, device)
            rows[name] = owner_metrics(run, Path(clean), distractors, device, "last")
        else:   # nobody trained on anything: the untrained model is what "never published" leaves
            torch.manual_seed(seed)
            untrained = create_model(model, device=resolve_device(device))
            rows[name] = owner_metrics(None, Path(clean), distractors, device, model=untrained)
    r10 = {k: statistics.mean([v["mem/image_to_text_R@10"], v["mem/text_to_image_R@10"]]) for k, v in rows.items()}
    report = {"clean": str(clean), "protected": str(prot_csv), "public": str(public) if public else None,
              "distractors": str(distractors) if distractors else None, "model": model, "epochs": epochs,
              "seed": seed, "augment": augment, "metrics": rows, "mean_R@10": r10,
              "gap_closed": gap_closed(r10["absent"], r10["clean"], r10["protected"]), "caveats": CAVEATS}
    report["verdict"] = verdict(report)
    atomic_write_json(out / "verify.json", report)
    atomic_write_text(out / "verify.md", "# mmue verify\n\n```\n" + verify_table(report) + "\n```\n\n"
                      + report["verdict"] + "\n\n" + CAVEATS + "\n")
    return report


def verify_table(report: dict) -> str:
    keys = [f"{d}_R@{k}" for k in (1, 10) for d in ("image_to_text", "text_to_image")]
    m = report["metrics"]
    lines = ["your images found from your captions (t2i) and the reverse (i2t), %; gallery "
             f"{m['clean']['mem/gallery_images']} images; victims {report['model']}, {report['epochs']} epochs, "
             f"augmentation {report.get('augment', 'none')}",
             f"{'trained on':<34}" + "".join(f"{k.replace('image_to_text', 'i2t').replace('text_to_image', 't2i'):>10}"
                                             for k in keys)]
    names = {"absent": "without your data (floor)" if report["public"] else "nothing (untrained: floor)",
             "clean": "your clean data (ceiling)", "protected": "your protected copy"}
    for name in ("absent", "clean", "protected"):
        lines.append(f"{names[name]:<34}" + "".join(f"{100 * m[name]['mem/' + k]:>10.1f}" for k in keys))
    lines.append(f"{'random guess':<34}" + "".join(f"{100 * m['clean']['mem/random_' + k]:>10.1f}" for k in keys))
    return "\n".join(lines)


def verdict(report: dict) -> str:
    r = report["mean_R@10"]
    gap = report["gap_closed"]
    if r["protected"] <= 0:
        times = "never"
    else:
        times = f"{r['clean'] / r['protected']:.1f}x less often"
    closed = f"{100 * gap:.0f} % of the way to never having published them" if gap == gap else \
        "no measurable difference between clean data and none (too few images, or too few epochs)"
    return (f"A model trained on your protected copy finds your images from your captions {times} than one trained "
            f"on your clean data (mean R@10 {100 * r['protected']:.1f} % vs {100 * r['clean']:.1f} %; without your "
            f"data: {100 * r['absent']:.1f} %): {closed}.")
