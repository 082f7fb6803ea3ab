"""Is a fine-tuned victim's low recall on a noisy copy only its BatchNorm statistics?

A model fine-tuned in train mode keeps BatchNorm running statistics of the images it trained on; if those are noisy
and the test images are clean, every layer is normalised with the wrong mean and variance. An attacker undoes that
for free: reset the statistics and re-estimate them on clean images of the same kind (any they have; no labels,
no gradient). This script does exactly that for each victim run given, and evaluates it before and after on the
test split.

    python benchmarks/bn_recalibrate.py --runs ft/victims/* --clean-images oc64/train.csv --test oc64/test.csv \
        --out bn.jsonl

One JSON line per run: recall before and after (last epoch's weights), and how many BatchNorm layers were reset.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmue.models import load_model, recalibrate_batchnorm
from mmue.train import evaluate, load_encoded

KEYS = ("image_to_text_R@1", "text_to_image_R@1", "image_to_text_R@10", "text_to_image_R@10")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", required=True, help="victim run folders (checkpoints/last.safetensors)")
    ap.add_argument("--clean-images", required=True, help="a CSV whose images the attacker has clean (captions unused)")
    ap.add_argument("--test", required=True, help="the test split's CSV")
    ap.add_argument("--out", required=True, help="JSON lines, one per run, appended")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    encoded = {}   # (csv, architecture) -> its encoding: the runs of one victim share it

    def load(csv, model):
        key = (csv, model.name)
        if key not in encoded:
            encoded[key] = load_encoded(csv, model)
        return encoded[key]

    for run in args.runs:
        model = load_model(run, args.device, which="last")
        test = load(args.test, model)
        before = evaluate(model, test, args.device)
        n = recalibrate_batchnorm(model, load(args.clean_images, model).images)
        after = evaluate(model, test, args.device)
        row = {"run": Path(run).name, "bn_layers": n, "clean_images": args.clean_images,
               **{f"before/{k}": before[k] for k in KEYS}, **{f"after/{k}": after[k] for k in KEYS}}
        print(f"{row['run']:50} BN {n:3}  R@1 {100 * before[KEYS[0]]:5.1f}/{100 * before[KEYS[1]]:5.1f} -> "
              f"{100 * after[KEYS[0]]:5.1f}/{100 * after[KEYS[1]]:5.1f}   R@10 {100 * before[KEYS[2]]:5.1f}/"
              f"{100 * before[KEYS[3]]:5.1f} -> {100 * after[KEYS[2]]:5.1f}/{100 * after[KEYS[3]]:5.1f}", flush=True)
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
