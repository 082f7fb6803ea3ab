"""The shortcut race: how fast a fresh victim fits a protection's noise alone, against the images' content alone.

Error-minimising noise protects a victim only if that victim learns "noise <-> caption" before "content <->
caption". This benchmark times both, per architecture: each victim trains on

* ``content``: the clean images with their captions (what there is to learn);
* for each released copy named with ``--noise NAME=CSV``: the noise alone, mid-grey (128) plus the copy's
  noise (released image minus clean image, per pixel), with the *original* captions: what the noise says about
  the caption without any picture, and without a trigger;
* ``--noise random``: mid-grey plus uniform random noise within ``--eps`` per image (a code unrelated to the
  captions, which can only be memorised: the control);

and reports retrieval among a fixed random subset of those same training pairs, epoch by epoch: how well it has
fitted them. The noise is a shortcut for that victim where it is fitted faster than the content.

``--background shuffled`` puts each image's noise on *another* clean image (a seeded derangement) instead of grey:
the content is there, as in the released copy, but says nothing about the caption, so the fit measures how well
the noise is read through real pictures. On grey, nothing competes with the noise, and a noise that is read
easily there can still be drowned by the content it is added to.

    python benchmarks/shortcut_race.py --clean oc64/train.csv --noise em-rn=RUN/publish/train.csv --noise random \\
        --victims mmue-tiny-rn,mmue-tiny-vit --epochs 10 --subset 1000 --out /tmp/race --device cpu
    # the same noise read through other images' content: --background shuffled --out /tmp/race-shuffled

Rows go to ``OUT/race.jsonl`` (one per victim, condition and epoch); finished trainings are kept and skipped
when the command is run again.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
from PIL import Image

from mmue import api
from mmue.data.csvfile import write_pairs, write_rows
from mmue.data.pairs import read_pairs
from mmue.train import TrainConfig
from common import quiet

GREY = 128


def noise_only(clean: np.ndarray, released: np.ndarray | None, eps_px: int, rng: np.random.Generator | None,
               base: np.ndarray | None = None):
    """The noise of ``released`` (or uniform random noise within ``eps_px``) on ``base`` (default mid-grey),
    uint8 HxWx3."""
    if released is None:
        noise = rng.integers(-eps_px, eps_px + 1, size=clean.shape)
    else:
        if released.shape != clean.shape:
            raise ValueError(f"released image is {released.shape[1]}x{released.shape[0]} px, the clean one "
                             f"{clean.shape[1]}x{clean.shape[0]}: compare copies at the same size")
        noise = released.astype(np.int16) - clean.astype(np.int16)
    if base is None:
        base = np.full(clean.shape, GREY)
    elif base.shape != clean.shape:
        raise ValueError(f"background image is {base.shape[1]}x{base.shape[0]} px, the clean one "
                         f"{clean.shape[1]}x{clean.shape[0]}: --background shuffled needs images of one size")
    return np.clip(base.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def derangement(n: int, seed: int) -> list[int]:
    """A seeded permutation of range(n) with no fixed point (n >= 2): whose content each image's noise goes on."""
    order = list(range(n))
    random.Random(seed).shuffle(order)   # one cycle through all images: each takes the next one's content
    nxt = {a: b for a, b in zip(order, order[1:] + order[:1])}
    return [nxt[i] for i in range(n)]


def build_condition(name: str, clean_csv: Path, released_csv: Path | None, out: Path, eps_px: int,
                    seed: int, background: str = "grey") -> Path:
    """Write condition ``name``'s images under ``out`` at the clean copy's relative paths, with the clean CSV's
    rows (original captions); returns its train.csv."""
    csv_path = out / "train.csv"
    if csv_path.exists():
        return csv_path
    clean = read_pairs(clean_csv)
    released = read_pairs(released_csv) if released_csv else None
    if released is not None and released.images != clean.images:
        raise ValueError(f"{released_csv} does not list {clean_csv}'s images in its order ({len(released.images)} "
                         f"vs {len(clean.images)} images): pass the copy protected from that CSV")
    rng = np.random.default_rng([seed, 7])
    other = derangement(len(clean.images), seed) if background == "shuffled" else None
    for i, rel in enumerate(clean.images):
        a = np.asarray(clean.open_image(i))
        if name == "content":
            img = a
        else:
            base = np.asarray(clean.open_image(other[i])) if other else None
            img = noise_only(a, None if released is None else np.asarray(released.open_image(i)), eps_px, rng, base)
        dst = (out / rel).with_suffix(".png")   # lossless, whatever the source format
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(dst)
    images = [str(Path(clean.images[i]).with_suffix(".png")) for i in clean.caption_image]
    return write_pairs(clean, csv_path, images=images)


def subset_csv(train_csv: Path, n: int, seed: int) -> Path:
    """A fixed random subset of ``train_csv``'s images (all their captions), for measuring the fit."""
    pairs = read_pairs(train_csv)
    keep = set(random.Random(seed).sample(range(len(pairs.images)), min(n, len(pairs.images))))
    rows = [(pairs.images[i], cap) for cap, i in zip(pairs.captions, pairs.caption_image) if i in keep]
    return write_rows(rows, train_csv.with_name("subset.csv"))


def race(conditions: dict[str, Path | None], clean_csv: Path, victims: list[str], out: Path, epochs: int,
         subset: int, eps_px: int, seed: int, device: str, background: str = "grey") -> list[dict]:
    rows = []
    for name, released in conditions.items():
        train_csv = build_condition(name, clean_csv, released, out / "data" / name, eps_px, seed, background)
        fit_csv = subset_csv(train_csv, subset, seed)
        for victim in victims:
            run = out / "runs" / f"{name}-{victim}"
            if not (run / "summary.json").exists():
                api.train(train_csv, run, model=victim, val_data=fit_csv, device=device, progress=False,
                          config=TrainConfig(epochs=epochs, seed=seed))
            for line in (run / "results.jsonl").read_text().splitlines():
                r = json.loads(line)
                rows.append({"condition": name, "victim": victim, "epoch": r["epoch"], "seed": seed,
                             "background": "own pictures" if name == "content" else background,
                             "train_loss": r["train_loss"],
                             **{k[4:]: r[k] for k in r if k.startswith("val/") and "R@" in k}})
    return rows


def table(rows: list[dict], epochs: list[int]) -> str:
    """Mean R@1 of both directions (%) among the fitted subset, per victim x condition, at the given epochs."""
    out = ["| victim | condition | " + " | ".join(f"epoch {e}" for e in epochs) + " |",
           "|---|---|" + "---|" * len(epochs)]
    for victim in dict.fromkeys(r["victim"] for r in rows):
        for cond in dict.fromkeys(r["condition"] for r in rows):
            by = {r["epoch"]: r for r in rows if r["victim"] == victim and r["condition"] == cond}
            cells = [f"{50 * (by[e]['image_to_text_R@1'] + by[e]['text_to_image_R@1']):.1f}" if e in by else "–"
                     for e in epochs]
            out.append(f"| {victim} | {cond} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clean", type=Path, required=True, help="the clean training CSV the copies were made from")
    ap.add_argument("--noise", action="append", default=[], metavar="NAME=CSV|random",
                    help="a released copy's CSV (its noise, alone) or 'random'; repeatable")
    ap.add_argument("--victims", default="mmue-tiny-rn,mmue-tiny-vit")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--subset", type=int, default=1000, help="training images the fit is measured on")
    ap.add_argument("--eps", type=int, default=8, help="the random control's bound, in pixel levels")
    ap.add_argument("--background", choices=("grey", "shuffled"), default="grey",
                    help="what each noise is added to: mid-grey, or another training image (content unrelated to "
                         "the caption); use a separate --out per background")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    quiet()
    conditions: dict[str, Path | None] = {"content": None}
    for spec in args.noise:
        if spec == "random":
            conditions["random"] = None
            continue
        name, sep, path = spec.partition("=")
        if not sep or not name or name in conditions:
            raise SystemExit(f"--noise {spec!r}: give NAME=CSV with a new name, or 'random'")
        conditions[name] = Path(path)
    rows = race(conditions, args.clean, args.victims.split(","), args.out, args.epochs, args.subset, args.eps,
                args.seed, args.device, args.background)
    (args.out / "race.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    shown = sorted({1, 2, 3, 5, args.epochs} & set(range(1, args.epochs + 1)))
    print(f"mean R@1 (%) of both directions among {args.subset} training pairs, as fitted; seed {args.seed}; "
          f"noise on {args.background}")
    print(table(rows, shown))


if __name__ == "__main__":
    main()
