"""``mmue verify``: an owner's own verdict on their protected copy.

Trains victims with the default recipe (same architecture, seed, epochs and training augmentation: by
default ``crop-0.9``, the mild random crop open_clip's training app applies, which undoes part of a protection
that MMUE's plain trainer would credit): on the owner's clean data, on their protected copy, and without either
(``--public`` data alone, or no training at all), each mixed with ``--public`` clean data when given, as a scraper
would mix them. Then asks each victim to find the owner's images from the owner's original captions and the
reverse (``owner.owner_metrics``), with ``--distractors`` images in the gallery when given, and prints the
three-way table with a plain verdict.

A scraper may clean the mix before training (``--scrapers``: the bench's defense names). Each one gets its own
protected victim, and its own floor and ceiling where it changes clean data too; by default the copy as published
and with the owner's original captions put back (``oracle-captions``: the most any caption cleaning can take),
and the verdict leads with the worst of them. Resumable: finished victims are kept.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch

from .defenses import apply_defense, describe, keeps_clean_data, uses_augment, validate
from .device import resolve_device
from .experiments import train_victim
from .fileio import atomic_write_json, atomic_write_text
from .models import DEFAULT_MODEL, create_model
from .owner import concat_csvs, gap_closed, owner_metrics
from .protect.export import MANIFEST
from .train import TrainConfig

DEFAULT_AUGMENT = "crop-0.9"   # open_clip_train's default training view: the trainer a scraper runs
# what a scraper does to the copy before training, by default: nothing, and the most caption cleaning can do
# (re-captioning, trigger stripping and word filters all take at most the added words away)
DEFAULT_SCRAPERS = ("none", "oracle-captions")

CAVEATS = ("What this does not show: other architectures or bigger models than the one trained here (image noise "
           "is a shortcut for the architecture that tuned it: a copy that protects you from this model can leave "
           "another, e.g. --model mmue-tiny-vit, finding your images as if they were clean; run verify again with "
           "it), scrapers other than those in the table (add e.g. --scrapers none,oracle-captions,jpeg-75,"
           "rrc-flip), or models fine-tuned from pretrained weights. A small owner set makes every figure noisy: "
           "compare with the floor row.")


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
               device: str = "auto", augment: str = DEFAULT_AUGMENT, scrapers=DEFAULT_SCRAPERS) -> dict:
    out = Path(out)
    scrapers = ["none"] + [validate(s) for s in dict.fromkeys(scrapers) if s != "none"]
    views = {s: uses_augment(s) for s in scrapers}   # refused here, before any training: two augmentations at once
    TrainConfig(epochs=epochs, seed=seed, augment=augment).validate()
    out.mkdir(parents=True, exist_ok=True)
    prot_csv = protected_csv(protected)
    sources = {"clean": [Path(clean)], "protected": [prot_csv]}
    if public is not None:
        sources = {k: [Path(public)] + v for k, v in sources.items()}
        sources["absent"] = [Path(public)]
    mixes = {name: concat_csvs(csvs, out / f"train-{name}.csv") for name, csvs in sources.items()}
    fixed = {}   # rows no scraper changes: nobody trained on anything, the untrained model is "never published"
    if "absent" not in mixes:
        torch.manual_seed(seed)
        untrained = create_model(model, device=resolve_device(device))
        fixed["absent"] = owner_metrics(None, Path(clean), distractors, device, model=untrained)
    report = {"clean": str(clean), "protected": str(prot_csv), "public": str(public) if public else None,
              "distractors": str(distractors) if distractors else None, "model": model, "epochs": epochs,
              "seed": seed, "augment": augment, "scrapers": {}}
    for scraper in scrapers:
        view = views[scraper]
        cfg = TrainConfig(epochs=epochs, seed=seed, augment=augment if view == "none" else view).validate()
        rows = dict(fixed)
        for name in ("absent", "clean", "protected"):
            if name in rows:
                continue
            if scraper != "none" and name != "protected" and keeps_clean_data(scraper):
                rows[name] = report["scrapers"]["none"]["metrics"][name]
                continue
            data, run = mixes[name], out / "victims" / name
            if scraper != "none":
                # the original of the protected mix is the clean mix (same rows, same file names)
                original = mixes["absent" if name == "absent" else "clean"]
                data = apply_defense(data, scraper, out / "scraped" / scraper / name, seed, original)
                run = out / "victims" / scraper / name
            train_victim(data, Path(clean), run, model, cfg, device)
            rows[name] = owner_metrics(run, Path(clean), distractors, device, "last")
        r10 = {k: statistics.mean([v["mem/image_to_text_R@10"], v["mem/text_to_image_R@10"]])
               for k, v in rows.items()}
        report["scrapers"][scraper] = {"augment": cfg.augment, "metrics": rows, "mean_R@10": r10,
                                       "gap_closed": gap_closed(r10["absent"], r10["clean"], r10["protected"])}
    as_published = report["scrapers"]["none"]
    report.update(metrics=as_published["metrics"], **{"mean_R@10": as_published["mean_R@10"]},
                  gap_closed=as_published["gap_closed"], worst=worst_scraper(report), caveats=CAVEATS)
    report["verdict"] = verdict(report)
    atomic_write_json(out / "verify.json", report)
    atomic_write_text(out / "verify.md", "# mmue verify\n\n```\n" + verify_table(report) + "\n```\n\n"
                      + report["verdict"] + "\n\n" + CAVEATS + "\n")
    return report


def worst_scraper(report: dict) -> str:
    """The scraper that leaves the least of the gap closed (a gap that cannot be measured counts as none closed)."""
    def closed(s):
        g = report["scrapers"][s]["gap_closed"]
        return g if g == g else float("-inf")
    return min(report["scrapers"], key=closed)


def verify_table(report: dict) -> str:
    keys = [f"{d}_R@{k}" for k in (1, 10) for d in ("image_to_text", "text_to_image")]
    m = report["metrics"]
    lines = ["your images found from your captions (t2i) and the reverse (i2t), %; gallery "
             f"{m['clean']['mem/gallery_images']} images; victims {report['model']}, {report['epochs']} epochs, "
             f"augmentation {report.get('augment', 'none')}",
             f"{'trained on':<40}" + "".join(f"{k.replace('image_to_text', 'i2t').replace('text_to_image', 't2i'):>10}"
                                             for k in keys) + f"{'gap closed':>12}"]
    names = {"absent": "without your data (floor)" if report["public"] else "nothing (untrained: floor)",
             "clean": "your clean data (ceiling)", "protected": "your protected copy"}
    scrapers = report.get("scrapers") or {"none": report}
    for s, r in scrapers.items():
        if s != "none":
            lines.append(f"a scraper who {describe(s)} [{s}]:")
        for name in ("absent", "clean", "protected"):
            if s != "none" and name != "protected" and keeps_clean_data(s):
                continue
            gap = f"{100 * r['gap_closed']:>11.0f}%" if name == "protected" and r["gap_closed"] == r["gap_closed"] \
                else ""
            lines.append(f"{('  ' if s != 'none' else '') + names[name]:<40}"
                         + "".join(f"{100 * r['metrics'][name]['mem/' + k]:>10.1f}" for k in keys) + gap)
    lines.append(f"{'random guess':<40}" + "".join(f"{100 * m['clean']['mem/random_' + k]:>10.1f}" for k in keys))
    return "\n".join(lines)


def _sentence(r: dict) -> str:
    m = r["mean_R@10"]
    ratio = m["clean"] / m["protected"] if m["protected"] > 0 else float("inf")
    times = ("never, unlike" if ratio == float("inf") else f"{ratio:.1f}x less often than" if ratio >= 1.05
             else "about as often as" if ratio > 1 / 1.05 else f"{1 / ratio:.1f}x more often than")
    gap = r["gap_closed"]
    closed = f"{100 * gap:.0f} % of the way to never having published them" if gap == gap else \
        "no measurable difference between clean data and none (too few images, or too few epochs)"
    return (f"finds your images from your captions {times} one trained on your clean data (mean R@10 "
            f"{100 * m['protected']:.1f} % vs {100 * m['clean']:.1f} %; without your data: {100 * m['absent']:.1f} %): "
            f"{closed}")


def verdict(report: dict) -> str:
    text = f"A model trained on your protected copy {_sentence(report)}."
    worst = report.get("worst", "none")
    if worst != "none":
        text += (f"\nWorst case over the scrapers measured: after a scraper who {describe(worst)} [{worst}], "
                 f"the model {_sentence(report['scrapers'][worst])}. Count on this figure, not the one above.")
    elif len(report.get("scrapers", {})) > 1:
        text += " No scraper measured here did better against it."
    return text
