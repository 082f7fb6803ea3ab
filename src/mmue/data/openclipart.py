"""Real captioned images, offline: the Open Clip Art Library as packaged by Debian.

``openclipart-svg`` carries each drawing's human-written title and keywords in its RDF metadata;
``openclipart-png`` carries the rendered PNG at the same relative path. Captions are built from the title and
keywords (falling back to the file name where the title is a collection name shared by many files), with
junk keywords dropped, and an ``author`` column from the drawing's creator (one artist's drawings are a real
owner: ``{"column": "author", "value": NAME}`` in a bench config); near-duplicate captions (icon sets, flag
variants) and pure patterns are dropped too.
Images are composited on white, padded to a square and resized, so the whole drawing survives the models'
center crop; or, with ``native``, kept at their own aspect with the longest side ``native`` px (the photo-like
case a trainer has to resize and crop). Nothing is downloaded: ``apt-get install openclipart-svg
openclipart-png`` provides the files.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from .types import DataError

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/usr/share/openclipart")
NS = {"dc": "http://purl.org/dc/elements/1.1/", "cc": "http://web.resource.org/cc/",
      "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#"}
JUNK_KEYWORDS = {"hash", "unsorted", "icon", "icons", "clip art", "clipart", "svg", "png", "image", "theme", "media",
                 "public domain", "remix", "openclipart", "externalsource", "cartoon", "drawing"}
PATTERN_WORDS = {"pattern", "patterns", "background", "backgrounds", "texture", "seamless", "tile", "wallpaper",
                 "gradient", "gradients"}


@dataclass
class ClipArt:
    rel: str            # path below svg/ without suffix
    title: str
    keywords: list[str]
    creator: str


def parse_svg(path: Path) -> tuple[str, list[str], str] | None:
    """(title, keywords, creator) from an SVG's RDF metadata, or None without metadata."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return None
    work = root.find(".//cc:Work", NS)
    if work is None:
        return None
    title = (work.findtext("dc:title", default="", namespaces=NS) or "").strip()
    keywords = [(li.text or "").strip() for li in work.findall("dc:subject/rdf:Bag/rdf:li", NS)]
    creator = (work.findtext("dc:creator/cc:Agent/dc:title", default="", namespaces=NS) or "").strip()
    return title, [k for k in keywords if k], creator


def _words(text: str) -> str:
    text = re.sub(r"\(.*?\)", " ", text)                       # '(Wed Aug 25 2004)', '(4 Scoop)'
    text = re.sub(r"^clipart by [^-]+-\s*", "", text, flags=re.I)
    text = re.sub(r"[_\-]+", " ", text)
    text = re.sub(r"\d+", " ", text)
    text = re.sub(r"[^A-Za-z' ]+", " ", text)
    return re.sub(r"\s+", " ", text).strip().lower()


def clean_keywords(keywords: list[str], creator: str) -> list[str]:
    creator_l = creator.lower()
    out = []
    for k in keywords:
        kl = k.lower()
        if "@" in kl or kl.startswith("0x") or kl in JUNK_KEYWORDS or (creator_l and kl in creator_l):
            continue
        w = _words(k)
        if len(w) >= 3 and w not in out and w not in JUNK_KEYWORDS and not set(w.split()) & {"theme", "icon", "icons"}:
            out.append(w)
    return out


def make_caption(item: ClipArt, generic_titles: set[str]) -> str:
    title = _words(item.title)
    stem = _words(Path(item.rel).name)
    if not title or item.title in generic_titles:
        title = stem
    kws = [k for k in clean_keywords(item.keywords, item.creator) if k not in title.split()]
    return f"{title}, {', '.join(kws[:5])}" if kws else title


def is_pattern(item: ClipArt) -> bool:
    words = set(item.rel.lower().replace("/", " ").replace("_", " ").split()) | {k.lower() for k in item.keywords}
    return bool(words & PATTERN_WORDS)


def on_white(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        rgba = im.convert("RGBA")
    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(bg, rgba).convert("RGB")


def native_rgb(path: Path, longest: int) -> Image.Image:
    """Composite on white, keep the aspect, resize so that the longest side is ``longest`` px (at least 8 px a
    side: a thinner drawing is stretched to 8 px)."""
    rgb = on_white(path)
    scale = longest / max(rgb.size)
    w, h = (max(8, round(rgb.width * scale)), max(8, round(rgb.height * scale)))
    return rgb.resize((w, h), Image.LANCZOS)


def square_rgb(path: Path, size: int) -> Image.Image:
    """Composite on white, pad to a square, resize."""
    rgb = on_white(path)
    side = max(rgb.size)
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
    return canvas.resize((size, size), Image.LANCZOS)


def collect(root: Path) -> list[ClipArt]:
    svg_root, png_root = root / "svg", root / "png"
    if not svg_root.is_dir() or not png_root.is_dir():
        raise DataError(f"{root}: expected svg/ and png/ folders; install them with "
                        "`apt-get install openclipart-svg openclipart-png` or pass --root")
    items = []
    for svg in sorted(svg_root.rglob("*.svg")):
        rel = str(svg.relative_to(svg_root).with_suffix(""))
        if not (png_root / f"{rel}.png").is_file():
            continue
        meta = parse_svg(svg)
        if meta is None:
            continue
        items.append(ClipArt(rel, *meta))
    return items


def _params_stamp(out: Path, params: dict) -> None:
    """Record what the images in ``out`` were rendered with; refuse to mix renderings of other settings."""
    stamp = out / "openclipart.json"
    if stamp.is_file():
        before = json.loads(stamp.read_text())
        if before != params:
            raise DataError(f"{out}: already holds a rendering with {before}, not {params}; "
                            "write to another folder or delete this one")
    elif any((out / "images").rglob("*.png")):
        raise DataError(f"{out}/images: holds images from an unknown rendering; write to another folder "
                        "or delete it")
    out.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(params))


def _render(src: Path, dst: Path, size: int, native: int | None) -> None:
    """Render once: a finished image is kept (so that an interrupted conversion resumes), a half-written one
    never appears under its final name."""
    if dst.is_file():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".partial")
    (native_rgb(src, native) if native else square_rgb(src, size)).save(tmp, format="PNG")
    os.replace(tmp, dst)


def write_openclipart(out_dir: str | Path, root: str | Path = DEFAULT_ROOT, size: int = 64, n_test: int = 1000,
                      progress: bool = True, native: int | None = None) -> dict:
    """Write ``images/…png``, ``train.csv`` and ``test.csv`` (``filepath,caption,author``); returns counts.
    ``native``: images at their own aspect, longest side ``native`` px, instead of ``size`` px squares. Rerun into
    the same folder with the same settings, it keeps the images already rendered and rewrites the CSVs."""
    root, out = Path(root), Path(out_dir)
    _params_stamp(out, {"size": None if native else size, "native": native})
    items = collect(root)
    title_counts = Counter(i.title for i in items)
    generic = {t for t, c in title_counts.items() if c >= 5}
    kept, seen, dropped = [], set(), Counter()
    for item in items:
        if is_pattern(item):
            dropped["pattern"] += 1
            continue
        cap = make_caption(item, generic)
        if len(cap.split()) < 1 or len(cap) < 3:
            dropped["empty"] += 1
            continue
        if cap in seen:
            dropped["duplicate caption"] += 1
            continue
        seen.add(cap)
        kept.append((item, cap))
    # a stable split: by hash of the path, independent of how many files the package version has
    kept.sort(key=lambda ic: hashlib.sha1(ic[0].rel.encode()).hexdigest())
    n_test = min(n_test, len(kept) // 5)
    splits = {"test": kept[:n_test], "train": kept[n_test:]}
    (out / "images").mkdir(parents=True, exist_ok=True)
    written = Counter()
    for split, rows in splits.items():
        with open(out / f"{split}.csv.partial", "w", newline="", encoding="utf-8") as f, warnings.catch_warnings():
            # the package's own renderings; some are huge (600 Mpx): skipped below, not a threat to warn about
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            w = csv.writer(f)
            w.writerow(["filepath", "caption", "author"])
            for item, cap in tqdm(rows, desc=f"openclipart {split}", disable=None if progress else True, leave=False):
                rel = f"images/{item.rel}.png"
                try:
                    _render(root / "png" / f"{item.rel}.png", out / rel, size, native)
                except Image.DecompressionBombError:
                    dropped["too large"] += 1
                    continue
                except (OSError, ValueError) as e:
                    log.warning("skipping %s: %s", item.rel, e)
                    dropped["unreadable"] += 1
                    continue
                w.writerow([rel, cap, item.creator])
                written[split] += 1
    # the CSVs appear only when complete, test.csv last (its presence marks a finished conversion)
    os.replace(out / "train.csv.partial", out / "train.csv")
    os.replace(out / "test.csv.partial", out / "test.csv")
    counts = {"found": len(items), "train": written["train"], "test": written["test"], **dropped}
    log.info("openclipart: %s", counts)
    return counts
