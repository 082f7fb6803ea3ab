"""The format chooser: ``read_pairs`` reads a CSV/TSV (``csvfile``), WebDataset shards (``webdataset``) or a
folder in one of the layouts people keep captioned images in (``layouts``)."""
from __future__ import annotations

import hashlib
import json
import os

from pathlib import Path

from .csvfile import read_csv, write_pairs
from .layouts import read_folder
from .types import DataError, PairSet
from .webdataset import is_webdataset, read_shards

__all__ = ["DataError", "PairSet", "data_fingerprint", "read_pairs", "write_pairs"]


def data_fingerprint(pairs: PairSet) -> dict:
    """What a resumed or reused run must find again: the images in order (names and file sizes) and their
    captions. Sizes, not contents: cheap for any number of photos, and a copy protected again into the same
    file names differs in them."""
    h = hashlib.sha256()
    for i in range(pairs.n_images):
        path = pairs.image_path(i)
        size = path.stat().st_size if pairs.opener is None and path.is_file() else None
        h.update(json.dumps([pairs.images[i], size, [pairs.captions[c] for c in pairs.image_captions[i]]]).encode())
    return {"n_images": pairs.n_images, "n_captions": len(pairs.captions), "sha256": h.hexdigest()}


def read_pairs(path: str | os.PathLike, img_key: str | None = None, caption_key: str | None = None,
               separator: str | None = None, check_files: bool = True) -> PairSet:
    """Read a CSV/TSV of image paths and captions, WebDataset shards (``data/{000..009}.tar``), or a folder: its
    one CSV/TSV, a ``.txt`` caption beside each image, or a Hugging Face ``metadata.csv`` / ``metadata.jsonl``.

    ``img_key``/``caption_key`` default to auto-detection; ``separator`` to the extension (.tsv) or a sniff.
    """
    if is_webdataset(path):
        return read_shards(path)
    if Path(path).is_dir():
        if img_key or caption_key or separator:   # a table of the folder's own: name it to choose its columns
            raise DataError(f"{path}: a folder; give its CSV itself with --csv-img-key / --csv-caption-key / "
                            "--csv-separator")
        return read_folder(path, check_files)
    return read_csv(path, img_key, caption_key, separator, check_files)
