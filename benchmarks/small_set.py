"""A small real dataset with one caption per image, drawn from a bigger one (e.g. openclipart): where MEM is
weakest (few images, one short text each). Copies the chosen images, so the set stands alone.

    python benchmarks/small_set.py /tmp/oc64 /tmp/oc-small --train 500 --test 300 --seed 0
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from mmue.data.pairs import read_pairs


def subsample(src: Path, dst: Path, split: str, n: int, seed: int) -> int:
    pairs = read_pairs(src / f"{split}.csv")
    rng = np.random.default_rng([seed, len(split)])
    chosen = sorted(rng.choice(len(pairs.images), size=min(n, len(pairs.images)), replace=False).tolist())
    rows = ["filepath,caption"]
    for i in chosen:
        rel = pairs.images[i]
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pairs.image_path(i), dst / rel)
        caption = pairs.captions[pairs.image_captions[i][0]].replace('"', "'")
        rows.append(f'{rel},"{caption}"')
    (dst / f"{split}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return len(chosen)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, help="folder with train.csv and test.csv")
    ap.add_argument("dst", type=Path)
    ap.add_argument("--train", type=int, default=500)
    ap.add_argument("--test", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n = {s: subsample(args.src, args.dst, s, getattr(args, s), args.seed) for s in ("train", "test")}
    print(f"{args.dst}: {n['train']} train / {n['test']} test images, one caption each")


if __name__ == "__main__":
    main()
