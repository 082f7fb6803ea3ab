"""How much of the noise of a protected copy survives a lossy save: re-encode its images as ``--image-format
jpeg|webp`` at ``--quality`` exactly as ``mmue protect --image-format`` does, and print the mean ``noise_kept``
(projection of what the save left onto the noise; 1.0 = all) and PSNR, for square and non-square images.

    python benchmarks/noise_kept.py OUT [--n 300] [--quality 90]
"""
from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

from PIL import Image

from mmue.data.pairs import read_pairs
from mmue.data.types import load_rgb, pil_to_u8
from mmue.protect.export import MANIFEST, encode_image, noise_kept
from mmue.quality import psnr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="output folder of mmue protect (PNG)")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--quality", type=int, default=90)
    args = ap.parse_args()
    man = json.loads((args.out / MANIFEST).read_text())
    root = Path(read_pairs(man["train_data"], check_files=False).root)
    print(f"{args.out}: first {args.n} images, quality {args.quality}")
    for fmt in ("jpeg", "webp"):
        stats = {"square": [], "non-square": []}
        for e in man["images"][:args.n]:
            x = pil_to_u8(load_rgb(root / e["source"]))
            y = pil_to_u8(load_rgb(args.out / e["file"]))
            with Image.open(io.BytesIO(encode_image(y, fmt, args.quality))) as im:
                z = pil_to_u8(im)
            w, h = e["size"] if "size" in e else (x.shape[-1], x.shape[-2])
            stats["square" if w == h else "non-square"].append((noise_kept(x, y, z), psnr(x, z)))
        for k, v in stats.items():
            if v:
                print(f"{fmt:>5} {k:>10}: {len(v):4d} images, noise kept {sum(a for a, _ in v) / len(v):.3f}, "
                      f"PSNR {sum(b for _, b in v) / len(v):.1f} dB")


if __name__ == "__main__":
    main()
