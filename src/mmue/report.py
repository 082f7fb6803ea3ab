"""Reports a person can read: ``report.md`` and a self-contained ``report.html`` (images inlined).

Sections: the recall table (clean vs protected vs random guess), per-epoch recall curves of the victims,
a grid of original / protected / amplified-noise images with captions and triggers, and the image quality
(PSNR, SSIM) and generation time of the released files.
"""
from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .data.pairs import read_pairs
from .data.types import load_rgb, pil_to_u8
from .fileio import read_jsonl
from .protect.manifest import MANIFEST, released_data
from .quality import diff_stats, mean_psnr, ssim


def original_files(protected_dir: Path, source_csv: Path, built_on: list[Path] = ()) -> list[Path]:
    """The original file of each image in ``protected_dir``'s manifest: its ``source`` read from ``source_csv``'s
    folder, or, for a release protected from other releases' published copies (``built_on``, first to last), followed
    back through their manifests to the files of ``source_csv``."""
    origin: dict[Path, Path] = {}
    base = source_csv.parent
    for release in [*built_on, protected_dir]:
        manifest = json.loads((release / MANIFEST).read_text())
        origin = {(release / e["file"]).resolve(): origin[(base / e["source"]).resolve()] if origin
                  else base / e["source"] for e in manifest["images"]}
        base = released_data(release, manifest).parent
    return [origin[(protected_dir / e["file"]).resolve()] for e in manifest["images"]]


def image_quality(protected_dir: Path, source_csv: Path, limit: int | None = None,
                  generation_s: float | None = None, originals: list[Path] | None = None) -> dict:
    """PSNR, largest change and SSIM of released images against the originals of ``source_csv``, measured from the
    files (``originals``: those of ``original_files``, which a release built on other protected copies needs, as it
    is compared with the originals, not with those copies), over the first ``limit`` images; ``generation_s``
    defaults to the manifest's."""
    manifest = json.loads((protected_dir / MANIFEST).read_text())
    entries = manifest["images"][:limit] if limit else manifest["images"]
    originals = originals or original_files(protected_dir, source_csv)
    psnrs, ssims, linf = [], [], 0
    for e, original in zip(entries, originals):
        a, b = pil_to_u8(load_rgb(original)), pil_to_u8(load_rgb(protected_dir / e["file"]))
        db, most = diff_stats(a, b)
        psnrs.append(db)
        ssims.append(ssim(a, b))
        linf = max(linf, most)
    return {"mean_psnr_db": mean_psnr(psnrs), "min_psnr_db": round(min(psnrs), 3),
            "mean_ssim": float(np.mean(ssims)), "min_ssim": float(np.min(ssims)), "n": len(ssims),
            "max_linf_px": linf, "generation_s": manifest["generation_s"] if generation_s is None else generation_s}


def plot_curves(runs: dict[str, Path], path: Path) -> Path | None:
    """Per-epoch validation R@1 (both directions) of each victim run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    plotted = False
    for name, run in runs.items():
        rows = read_jsonl(run / "results.jsonl")
        if not rows or "val/image_to_text_R@1" not in rows[0]:
            continue
        ep = [r["epoch"] for r in rows]
        for ax, key in zip(axes, ("image_to_text", "text_to_image")):
            ax.plot(ep, [100 * r[f"val/{key}_R@1"] for r in rows], marker="o", ms=3, label=name)
        plotted = True
    if not plotted:
        plt.close(fig)
        return None
    for ax, title in zip(axes, ("image→text R@1 (%)", "text→image R@1 (%)")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def image_grid(protected_dir: Path, source_csv: Path, path: Path, n: int = 6, box: int = 192,
               originals: list[Path] | None = None) -> tuple[Path, list[dict]]:
    """Rows of original | protected | noise x10 (mid-gray = 0), each fitted into ``box`` px (small images blown up
    pixel for pixel, full-size photos shrunk); returns the picture and its captions."""
    manifest = json.loads((protected_dir / MANIFEST).read_text())
    src_pairs = read_pairs(source_csv, check_files=False)
    prot_pairs = read_pairs(released_data(protected_dir, manifest), check_files=False)
    originals = originals or original_files(protected_dir, source_csv)
    tiles, captions = [], []
    for i, e in enumerate(manifest["images"][:n]):
        a = load_rgb(originals[i])
        b = load_rgb(protected_dir / e["file"])
        d = (np.asarray(b, dtype=np.int16) - np.asarray(a, dtype=np.int16)) * 10 + 128
        noise = Image.fromarray(np.clip(d, 0, 255).astype(np.uint8))
        f = box / max(a.size)
        f = max(1, int(f)) if f >= 1 else f
        size = (max(1, round(a.width * f)), max(1, round(a.height * f)))
        tiles.append([im.resize(size, Image.NEAREST if f >= 1 or im is noise else Image.LANCZOS)
                      for im in (a, b, noise)])
        c = src_pairs.image_captions[i][0]
        captions.append({"caption": src_pairs.captions[c], "protected": prot_pairs.captions[c], "trigger": e["trigger"],
                         "psnr_db": round(diff_stats(pil_to_u8(a), pil_to_u8(b))[0], 2)})
    w, h = max(t[0].width for t in tiles), max(t[0].height for t in tiles)
    grid = Image.new("RGB", (3 * w + 8, len(tiles) * (h + 4)), (255, 255, 255))
    for r, row in enumerate(tiles):
        for c, im in enumerate(row):
            grid.paste(im, (c * (w + 4), r * (h + 4)))
    grid.save(path)
    return path, captions


def _img_tag(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%">'


def write_report(out: str | os.PathLike, title: str, tables: dict[str, str], runs: dict[str, Path],
                 protected_dir: Path | None = None, source_csv: Path | None = None, notes: list[str] = (),
                 generation_s: float | None = None, built_on: list[Path] = ()) -> Path:
    """Write ``report.md``, ``report.html`` and their PNGs into ``out``; returns the HTML path.

    ``tables`` maps a heading to a preformatted table (e.g. ``metrics.format_table``); ``built_on``: the releases
    ``protected_dir`` was protected from, first to last (its images are shown beside the originals of
    ``source_csv``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# {title}", ""]
    body = [f"<h1>{html.escape(title)}</h1>"]
    for heading, table in tables.items():
        md += [f"## {heading}", "", "```", table, "```", ""]
        body += [f"<h2>{html.escape(heading)}</h2>", f"<pre>{html.escape(table)}</pre>"]
    curves = plot_curves(runs, out / "curves.png")
    if curves:
        md += ["## Recall per epoch", "", "![curves](curves.png)", ""]
        body += ["<h2>Recall per epoch</h2>", _img_tag(curves)]
    if protected_dir is not None and source_csv is not None:
        # SSIM of full-size photos is slow: a sample
        originals = original_files(protected_dir, source_csv, built_on)
        q = image_quality(protected_dir, source_csv, limit=500, generation_s=generation_s, originals=originals)
        grid, caps = image_grid(protected_dir, source_csv, out / "examples.png", originals=originals)
        quality = (f"over {q['n']} images: max |noise| {q['max_linf_px']}/255, PSNR mean {q['mean_psnr_db']} dB "
                   f"(min {q['min_psnr_db']}), SSIM mean {q['mean_ssim']:.4f} (min {q['min_ssim']:.4f}); "
                   f"generated in {q['generation_s']:.0f} s")
        md += ["## Released images", "", quality, "", "Rows: original | protected | noise ×10 (gray = 0).", "",
               "![examples](examples.png)", ""]
        md += [f"{i + 1}. `{c['protected']}` (trigger `{c['trigger']}`, PSNR {c['psnr_db']} dB)"
               for i, c in enumerate(caps)]
        md.append("")
        body += ["<h2>Released images</h2>", f"<p>{html.escape(quality)}</p>",
                 "<p>Rows: original | protected | noise ×10 (gray = 0).</p>", _img_tag(grid), "<ol>"]
        body += [f"<li><code>{html.escape(c['protected'])}</code> (trigger <b>{html.escape(c['trigger'])}</b>, "
                 f"PSNR {c['psnr_db']} dB)</li>" for c in caps]
        body.append("</ol>")
    if notes:
        md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
        body += ["<h2>Notes</h2>", "<ul>"] + [f"<li>{html.escape(n)}</li>" for n in notes] + ["</ul>"]
    (out / "report.md").write_text("\n".join(md))
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title>"
            "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
            "pre{background:#f4f4f4;padding:1em;overflow-x:auto;font-size:12px}</style></head><body>"
            + "\n".join(body) + "</body></html>")
    (out / "report.html").write_text(page)
    return out / "report.html"
