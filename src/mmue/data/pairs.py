"""The format chooser: ``read_pairs`` reads a CSV/TSV (``csvfile``) or WebDataset shards (``webdataset``)."""
from __future__ import annotations

import os

from .csvfile import read_csv, write_pairs
from .types import DataError, PairSet
from .webdataset import is_webdataset, read_shards

__all__ = ["DataError", "PairSet", "read_pairs", "write_pairs"]


def read_pairs(path: str | os.PathLike, img_key: str | None = None, caption_key: str | None = None,
               separator: str | None = None, check_files: bool = True) -> PairSet:
    """Read a CSV/TSV of image paths and captions, or WebDataset shards (``data/{000..009}.tar``).

    ``img_key``/``caption_key`` default to auto-detection; ``separator`` to the extension (.tsv) or a sniff.
    """
    if is_webdataset(path):
        return read_shards(path)
    return read_csv(path, img_key, caption_key, separator, check_files)
