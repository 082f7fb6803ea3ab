"""Peak RSS of ``mmue protect`` at N and 4N images: the on-disk noise and image stores keep RAM flat.

Writes the built-in dataset once with 4N training images, takes the first N as the small set, runs
``mmue protect`` on each in a fresh process (short settings: memory, not protection, is measured) and
prints a table of peak RSS and its growth, next to what images + noise would take if held in RAM.

    python benchmarks/protect_memory.py [--images 1500] [--out /tmp/mmue-mem] [--model mmue-tiny-rn]
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from mmue import api
from mmue.protect.manifest import MANIFEST

from common import bench_parser

MEASURE = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")


def subset(csv_path: Path, n_images: int, out: Path) -> Path:
    rows = list(csv.DictReader(open(csv_path)))
    keep, seen = [], []
    for r in rows:
        if r["filepath"] not in seen:
            if len(seen) == n_images:
                break
            seen.append(r["filepath"])
        keep.append(r)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)
    return out


def peak_rss_mib(cmd: list[str]) -> float:
    r = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-2000:])
    return int(r.stdout.strip().splitlines()[-1]) / 1024  # ru_maxrss is in KiB on Linux


def main() -> None:
    ap = bench_parser(__doc__, images=1500)
    ap.add_argument("--n", type=int, dest="images", help="the same as --images (N and 4N images are protected)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmue-mem"))
    args = ap.parse_args()
    args.n = args.images
    data = args.out / "data"
    if not (data / "train.csv").exists():
        api.synth(data, n_train=4 * args.n, n_test=10)
    sets = {args.n: subset(data / "train.csv", args.n, data / f"train_{args.n}.csv"), 4 * args.n: data / "train.csv"}
    rows = []
    for n, csv_path in sets.items():
        out = args.out / f"protected_{n}"
        cmd = [sys.executable, "-m", "mmue", "-q", "protect", "--train-data", str(csv_path), "--out", str(out),
               "--overwrite", "--method", "mem", "--strength", "low", "--rounds", "1", "--surrogate-steps", "2",
               "--pgd-steps", "1", "--candidates", "2", "--surrogate", args.model, "--device", "cpu"]
        rss = peak_rss_mib(cmd)
        m = json.loads((out / MANIFEST).read_text())
        in_ram = 2 * n * 3 * 64 * 64 / 2**20  # uint8 images + int8 noise at the tiny models' 64 px
        rows.append((n, rss, in_ram, m["generation_s"]))
    base = rows[0][1]
    print(f"{'images':>8} {'peak RSS MiB':>13} {'growth':>8} {'images+noise in RAM MiB':>24} {'protect s':>10}")
    for n, rss, in_ram, secs in rows:
        print(f"{n:>8} {rss:>13.0f} {100 * (rss / base - 1):>7.1f}% {in_ram:>24.0f} {secs:>10.0f}")


if __name__ == "__main__":
    main()
