"""The folder layouts people keep captioned images in, read as one CSV.

* ``csv``: one CSV/TSV of image paths and captions (MMUE's own input, as ``--train-data``);
* ``captions-txt``: each image with a ``.txt`` of the same stem beside it (img2dataset, kohya);
* ``imagefolder-csv`` / ``imagefolder-jsonl``: Hugging Face imagefolder, a ``metadata.csv`` or
  ``metadata.jsonl`` with ``file_name`` and ``text``.

``read_folder`` (through ``read_pairs``, so every command takes such a folder as its data) reads a folder's pairs
where they are, writing nothing; ``mmue.protect.package`` writes the protected copy back in the same layout.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .csvfile import read_csv
from .types import DataError, PairSet

LAYOUTS = ("csv", "captions-txt", "imagefolder-csv", "imagefolder-jsonl")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".avif", ".heic",
                  ".heif")


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


def _table(folder: Path, layout: str) -> Path:
    """The folder's own caption table, for the layouts that have one."""
    if layout == "imagefolder-csv":
        return folder / "metadata.csv"
    return next(p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in (".csv", ".tsv"))


def _rows(folder: Path, layout: str) -> list[tuple[Path, str]]:
    """(image, caption) of the layouts without a table of their own: ``imagefolder-jsonl`` and ``captions-txt``."""
    rows: list[tuple[Path, str]] = []
    if layout == "imagefolder-jsonl":
        src = folder / "metadata.jsonl"
        for n, line in enumerate(src.read_text(encoding="utf-8-sig").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                rows.append((folder / rec["file_name"], str(rec["text"])))
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(f"{src}, line {n}: not a JSON object with file_name and text ({e})") from e
            if not rows[-1][0].is_file():
                raise DataError(f"{src}, line {n}: image {rec['file_name']!r} not found in {folder}")
        if not rows:
            raise DataError(f"{src}: no lines; one JSON object per image: {{\"file_name\": ..., \"text\": ...}}")
        return rows
    for img in _images(folder):
        txt = img.with_suffix(".txt")
        if not txt.is_file():
            raise DataError(f"{img}: no caption file {txt.name} beside it; add one or remove the image")
        caption = " ".join(txt.read_text(encoding="utf-8-sig").split())
        if not caption:
            raise DataError(f"{txt}: empty caption")
        rows.append((img, caption))
    return rows


def read_folder(folder: str | os.PathLike, check_files: bool = True) -> PairSet:
    """The pairs of a folder in any of the layouts, read where they are (nothing written): its own table, or
    ``file_name,text`` rows made from its ``.txt`` captions / ``metadata.jsonl`` (``source`` is then the folder;
    a published copy names that table ``captions.csv``)."""
    folder = Path(folder)
    layout = detect(folder)
    if layout in ("csv", "imagefolder-csv"):
        return read_csv(_table(folder, layout), check_files=check_files)
    rows, images, captions, caption_image, index = [], [], [], [], {}
    for img, caption in _rows(folder, layout):
        rel = os.path.relpath(img, folder)
        key = os.path.realpath(img)
        if key not in index:
            index[key] = len(images)
            images.append(rel)
        rows.append({"file_name": rel, "text": caption})
        captions.append(caption)
        caption_image.append(index[key])
    return PairSet(folder, folder, "file_name", "text", ",", ["file_name", "text"], rows, images, captions,
                   caption_image)
