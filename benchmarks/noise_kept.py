"""How much of the noise of a protected copy survives a lossy save: re-encode its images as ``--image-format
jpeg|webp`` at ``--quality`` exactly as ``mmue protect --image-format`` does, and print the mean ``noise_kept``
(projection of what the save left onto the noise; 1.0 = all) and PSNR, for square and non-square images.
With ``--resave Q,Q2,...``: the attacker's side instead, a re-save as the bench's ``jpeg-Q`` defense does it
(Pillow's defaults: 4:2:0 chroma) at each quality.

    python benchmarks/noise_kept.py OUT [--n 300] [--quality 90]
    python benchmarks/noise_kept.py OUT --resave 75,30
"""
from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

from PIL import Image

from mmue.data.pairs import read_pairs
from mmue.data.types import load_rgb, pil_to_u8
from mmue.protect.export import encode_image, noise_kept
from mmue.protect.manifest import MANIFEST
from mmue.quality import mean_psnr, psnr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="output folder of mmue protect (PNG)")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--resave", help="qualities of an attacker's JPEG re-save (Pillow's defaults), comma-separated")
    args = ap.parse_args()
    man = json.loads((args.out / MANIFEST).read_text())
    root = Path(read_pairs(man["train_data"], check_files=False).root)
    if args.resave:
        return resaves(man, root, args)
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
                      f"PSNR {_psnr_text([b for _, b in v])}")


def resaves(man: dict, root: Path, args) -> None:
    print(f"{args.out}: first {args.n} images, re-saved as JPEG by the attacker (Pillow's defaults)")
    for q in (int(v) for v in args.resave.split(",")):
        kept, quality = [], []
        for e in man["images"][:args.n]:
            x = pil_to_u8(load_rgb(root / e["source"]))
            y = load_rgb(args.out / e["file"])
            buf = io.BytesIO()
            y.save(buf, format="JPEG", quality=q)   # as mmue.defenses does for jpeg-Q
            with Image.open(buf) as im:
                z = pil_to_u8(im)
            kept.append(noise_kept(x, pil_to_u8(y), z))
            quality.append(psnr(x, z))
        print(f"jpeg-{q:<3d}: {len(kept):4d} images, noise kept {sum(kept) / len(kept):.3f}, "
              f"PSNR against the originals {_psnr_text(quality)}")


def _psnr_text(psnrs: list[float]) -> str:
    """Mean PSNR over the images the save changed; a plain mean is inf as soon as one comes back bit-identical
    (flat clip art re-saved as JPEG can)."""
    same = sum(p == float("inf") for p in psnrs)
    mean = mean_psnr(psnrs)
    return (f"{mean:.1f} dB" if mean is not None else "-") + (f" ({same} identical to the original)" if same else "")


if __name__ == "__main__":
    main()
