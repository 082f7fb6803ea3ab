"""Image-caption pairs from CSV/TSV files, grouped by image.

Rows that share an image path are one image with several captions (Flickr and COCO have 5). Paths are
relative to the CSV's folder. Every problem is reported with the file, the row and the flag that fixes it.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from ..fileio import atomic_write
from .types import DataError, PairSet

IMAGE_KEYS = ("filepath", "image", "images", "image_path", "img", "file", "path", "filename", "file_name")
CAPTION_KEYS = ("caption", "title", "text", "captions", "sentence", "raw")


def _separator(path: Path, sample: str, separator: str | None) -> str:
    if separator:
        return "\t" if separator in ("\\t", "tab") else separator
    if path.suffix.lower() == ".tsv":
        return "\t"
    try:
        return csv.Sniffer().sniff(sample, delimiters=",\t;|").delimiter
    except csv.Error:
        return ","


def _pick(fieldnames: list[str], wanted: str | None, defaults: tuple[str, ...], what: str, flag: str,
          path: Path) -> str:
    if wanted is not None:
        if wanted in fieldnames:
            return wanted
        raise DataError(f"{path}: no column {wanted!r} (given by {flag}); columns found: {fieldnames}")
    lower = {f.lower().strip(): f for f in fieldnames}
    for k in defaults:
        if k in lower:
            return lower[k]
    raise DataError(f"{path}: cannot find the {what} column; columns found: {fieldnames}. "
                    f"Name it with {flag} COLUMN (auto-detected names: {', '.join(defaults)})")


def read_csv(path: str | os.PathLike, img_key: str | None = None, caption_key: str | None = None,
               separator: str | None = None, check_files: bool = True) -> PairSet:
    """Read a CSV/TSV of image paths and captions.

    ``img_key``/``caption_key`` default to auto-detection; ``separator`` to the extension (.tsv) or a sniff.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (give the CSV with --train-data/--data)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e}); re-save the CSV as UTF-8") from e
    sep = _separator(path, text[:8192], separator)
    # a stream, not str.splitlines(): that would also split rows at \x0b, \x1c or U+2028 inside a caption
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=sep)
    fieldnames = [f for f in (reader.fieldnames or [])]
    if not fieldnames:
        raise DataError(f"{path}: empty file or no header row (expected e.g. 'filepath,caption')")
    ik = _pick(fieldnames, img_key, IMAGE_KEYS, "image path", "--csv-img-key", path)
    ck = _pick(fieldnames, caption_key, CAPTION_KEYS, "caption", "--csv-caption-key", path)
    rows, images, captions, caption_image = [], [], [], []
    index: dict[str, int] = {}
    for line, row in enumerate(reader, start=2):  # line 1 is the header
        img = (row.get(ik) or "").strip()
        cap = (row.get(ck) or "").strip()
        if not img:
            raise DataError(f"{path}, row {line}: empty image path in column {ik!r}; fill it in or drop the row")
        if not cap:
            raise DataError(f"{path}, row {line}: empty caption in column {ck!r} for {img}; "
                            f"fill it in, drop the row, or point --csv-caption-key at the right column")
        # one image however its path is spelled (relative or absolute, "a/../b.png", a link): one noise, one trigger
        key = os.path.realpath(path.parent / img)
        if key not in index:
            if check_files and (path.parent / img).is_dir():
                raise DataError(f"{path}, row {line}: {img!r} is a folder, not an image file; name the image in it")
            if check_files and not (path.parent / img).is_file():
                raise DataError(f"{path}, row {line}: image {img!r} not found (looked for {path.parent / img}); "
                                "paths are relative to the CSV's folder")
            index[key] = len(images)
            images.append(img)
        rows.append(row)
        captions.append(cap)
        caption_image.append(index[key])
    if not rows:
        raise DataError(f"{path}: header only, no rows")
    return PairSet(path, path.parent, ik, ck, sep, fieldnames, rows, images, captions, caption_image)


def write_pairs(pairs: PairSet, path: str | os.PathLike, captions: list[str] | None = None,
                images: list[str] | None = None) -> Path:
    """Write ``pairs`` with the same columns and separator, optionally replacing captions and image paths
    (one of each per row)."""
    path = Path(path)
    captions = pairs.captions if captions is None else captions
    images = [pairs.images[i] for i in pairs.caption_image] if images is None else images

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=pairs.fieldnames, delimiter=pairs.separator)
            w.writeheader()
            for row, cap, img in zip(pairs.rows, captions, images):
                w.writerow({**row, pairs.caption_key: cap, pairs.image_key: img})
    return atomic_write(path, write)


def write_rows(rows, path: str | os.PathLike, header: tuple[str, str] = ("filepath", "caption")) -> Path:
    """A two-column CSV of (image path, caption) rows, written atomically (parent folders made)."""
    path = Path(path)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(list(header))
            w.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, write)
