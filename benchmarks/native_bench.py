"""Time and peak memory of ``mmue protect`` on full-size photos against the 64 px path, per image.

Generates N photo-like JPEGs (smooth colour fields, edges and grain, as a camera's) at each size, protects each
set in a fresh process with the same short engine settings (``--full``: the whole `low` preset, the time a user
waits; the engine works on the model's 64 px grid whatever the photo's size, so what grows with the photo is
reading, squashing, stretching the noise and writing), and prints per image: seconds, peak RSS of the process, and
the ratio to the 64 px set.

    python benchmarks/native_bench.py [--n 40] [--sizes 64x64,1732x1155,4000x3000] [--format png]
    python benchmarks/native_bench.py --n 1000 --sizes 64x64,2-12mp     # a phone's mix: 2-12 MP, several aspects
    python benchmarks/native_bench.py --n 1000 --sizes 64x64,2-12mp --full   # the same with the whole `low` preset

A size is ``WxH`` (every image that size, landscape and portrait in turn) or ``LO-HImp`` (each image's megapixels
drawn uniformly from LO to HI, its aspect from 1:1, 4:3, 3:2 and 16:9, either orientation).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mmue.protect.manifest import MANIFEST

MEASURE = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
SETTINGS = ["--rounds", "1", "--surrogate-steps", "5", "--pgd-steps", "2", "--text-rounds", "1"]


def photo(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """A photo-like image: a smooth colour field (a small random image upsampled), a few hard edges, grain."""
    field = Image.fromarray(rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    a = np.asarray(field, dtype=np.int16)
    for _ in range(4):   # bands with hard edges
        x0 = int(rng.integers(0, w))
        a[:, x0:x0 + w // 10] += rng.integers(-60, 60, 3, dtype=np.int16)
    a += rng.normal(0, 4, (h, w, 1)).astype(np.int16)
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


ASPECTS = (1.0, 4 / 3, 3 / 2, 16 / 9)


def image_sizes(spec: str, n: int, seed: int = 0) -> list[tuple[int, int]]:
    """The (W, H) of each of ``n`` images for a size spec ``WxH`` or ``LO-HImp``."""
    if spec.endswith("mp"):
        lo, hi = (float(v) for v in spec[:-2].split("-"))
        rng = np.random.default_rng(seed + 1)
        sizes = []
        for i in range(n):
            mp, aspect = rng.uniform(lo, hi) * 1e6, ASPECTS[int(rng.integers(len(ASPECTS)))]
            w, h = round((mp * aspect) ** 0.5), round((mp / aspect) ** 0.5)
            sizes.append((w, h) if i % 2 == 0 else (h, w))
        return sizes
    w, h = (int(v) for v in spec.split("x"))
    return [(w, h) if i % 2 == 0 else (h, w) for i in range(n)]   # landscape and portrait


def make_set(folder: Path, sizes: list[tuple[int, int]], seed: int = 0) -> Path:
    csv = folder / "d.csv"
    if csv.is_file():
        return csv
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (w, h) in enumerate(sizes):
        photo(w, h, rng).save(folder / f"img/{i:04d}.jpg", quality=92)
        rows.append(f"img/{i:04d}.jpg,a photo of scene {i} with {['trees', 'a dog', 'the sea', 'a street'][i % 4]}\n")
    csv.write_text("filepath,caption\n" + "".join(rows))
    return csv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="images per size")
    ap.add_argument("--sizes", default="64x64,1732x1155,4000x3000", help="W x H per set; the first is the reference")
    ap.add_argument("--format", default="png", choices=["png", "jpeg", "webp"])
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmue-native-bench"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--full", action="store_true",
                    help="the whole `low` preset (3 rounds) instead of one cut round: the time a user waits")
    args = ap.parse_args()
    rows = []
    for spec in args.sizes.split(","):
        sizes = image_sizes(spec, args.n)
        t0 = time.time()
        csv = make_set(args.out / f"data-{spec}-{args.n}", sizes)
        gen_s = time.time() - t0
        out = args.out / f"prot-{spec}-{args.format}"
        cmd = [sys.executable, "-m", "mmue", "protect", "--train-data", str(csv), "--out", str(out), "--overwrite",
               "--method", "mem-3", "--strength", "low", "--seed", "0", "--device", args.device,
               "--image-format", args.format, *([] if args.full else SETTINGS)]
        t0 = time.time()
        r = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True)
        wall = time.time() - t0
        if r.returncode:
            sys.exit(f"{spec}: mmue protect failed:\n{r.stderr[-3000:]}")
        man = json.loads((out / MANIFEST).read_text())
        rows.append({"size": spec, "engine": "low" if args.full else "low, 1 cut round",
                     "megapixels": float(np.mean([w * h for w, h in sizes])) / 1e6, "n": args.n,
                     "s_per_image": wall / args.n,
                     "peak_rss_mb": int(r.stdout.split()[-1]) / 1024, "mean_psnr_db": man["mean_psnr_db"],
                     "noise_kept": man.get("mean_noise_kept"), "generate_s": round(gen_s, 1)})
        print(json.dumps(rows[-1]), flush=True)
    ref = rows[0]
    engine = "the whole low preset" if args.full else "low cut to 1 round"
    print(f"\nmmue protect, mem-3, {engine} (engine on the 64 px grid), {args.format.upper()} output, "
          f"{args.n} images per size, {args.device}")
    print(f"{'size':>11} {'MP':>5} {'s/image':>8} {'x 64px':>7} {'peak RSS MB':>12} {'x 64px':>7} {'PSNR dB':>8}"
          + ("  kept" if args.format != "png" else ""))
    for r in rows:
        print(f"{r['size']:>11} {r['megapixels']:>5.1f} {r['s_per_image']:>8.3f} "
              f"{r['s_per_image'] / ref['s_per_image']:>7.1f} {r['peak_rss_mb']:>12.0f} "
              f"{r['peak_rss_mb'] / ref['peak_rss_mb']:>7.2f} {r['mean_psnr_db']:>8.1f}"
              + (f"  {r['noise_kept']:.3f}" if r["noise_kept"] is not None else ""))


if __name__ == "__main__":
    main()
