"""The folder layouts people keep captioned images in, read as one CSV.

* ``csv``: one CSV/TSV of image paths and captions (MMUE's own input, as ``--train-data``);
* ``captions-txt``: each image with a ``.txt`` of the same stem beside it (img2dataset, kohya);
* ``imagefolder-csv`` / ``imagefolder-jsonl``: Hugging Face imagefolder, a ``metadata.csv`` or
  ``metadata.jsonl`` with ``file_name`` and ``text``.

``as_csv`` turns a folder into the CSV that ``mmue protect`` reads (written elsewhere: originals are never
touched); ``mmue.protect.package`` writes the protected copy back in the same layout.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .csvfile import write_rows
from .types import DataError

LAYOUTS = ("csv", "captions-txt", "imagefolder-csv", "imagefolder-jsonl")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") or part == "__MACOSX" for part in p.relative_to(folder).parts))


def detect(folder: str | os.PathLike) -> str:
    """The layout of ``folder`` (see the module doc); a clear error when it is none of them or ambiguous."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    if (folder / "metadata.jsonl").is_file():
        return "imagefolder-jsonl"
    if (folder / "metadata.csv").is_file():
        return "imagefolder-csv"
    tables = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".csv", ".tsv"))
    if len(tables) == 1:
        return "csv"
    if len(tables) > 1:
        raise DataError(f"{folder}: several caption tables ({', '.join(p.name for p in tables)}); keep one")
    images = _images(folder)
    if images and any(p.with_suffix(".txt").is_file() for p in images):
        return "captions-txt"
    raise DataError(f"{folder}: no captions found. Give a CSV/TSV of image paths and captions, a .txt caption "
                    "beside each image (photo.jpg + photo.txt), or a Hugging Face metadata.csv / metadata.jsonl "
                    "with file_name and text")


def as_csv(folder: str | os.PathLike, work: str | os.PathLike) -> tuple[str, Path]:
    """(layout, the CSV to protect). For ``csv`` and ``imagefolder-csv`` that is the folder's own table; for
    the others a ``file_name,text`` CSV written to ``work`` with paths relative to it (so the published copy
    mirrors the folder's own tree)."""
    folder, work = Path(folder), Path(work)
    layout = detect(folder)
    if layout == "csv":
        return layout, next(p for p in sorted(folder.iterdir()) if p.suffix.lower() in (".csv", ".tsv"))
    if layout == "imagefolder-csv":
        return layout, folder / "metadata.csv"
    rel = lambda p: os.path.relpath(p, work)   # noqa: E731
    rows: list[tuple[str, str]] = []
    if layout == "imagefolder-jsonl":
        src = folder / "metadata.jsonl"
        for n, line in enumerate(src.read_text(encoding="utf-8-sig").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                rows.append((rel(folder / rec["file_name"]), str(rec["text"])))
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(f"{src}, line {n}: not a JSON object with file_name and text ({e})") from e
    else:
        for img in _images(folder):
            txt = img.with_suffix(".txt")
            if not txt.is_file():
                raise DataError(f"{img}: no caption file {txt.name} beside it; add one or remove the image")
            caption = " ".join(txt.read_text(encoding="utf-8-sig").split())
            if not caption:
                raise DataError(f"{txt}: empty caption")
            rows.append((rel(img), caption))
    work.mkdir(parents=True, exist_ok=True)
    return layout, write_rows(rows, work / "captions.csv", ("file_name", "text"))
