"""The data layer's leaf: ``PairSet`` (captions and the images they describe), ``DataError``, and the safe way
to open one image file. Readers of each format (``csvfile``, ``webdataset``) build ``PairSet``s; ``pairs``
chooses the reader."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError


class DataError(ValueError):
    """Bad input data; the message names the file, the row and the fix."""


@dataclass
class PairSet:
    """Captions (one per CSV row) and the unique images they describe."""

    source: Path                      # the CSV file (a folder: captions beside the images, or metadata.jsonl)
    root: Path                        # image paths are relative to this folder
    image_key: str
    caption_key: str
    separator: str
    fieldnames: list[str]
    rows: list[dict]                  # the original rows, in file order (for writing a protected copy)
    images: list[str]                 # unique image paths as written in the CSV, in first-seen order
    captions: list[str]               # one per row
    caption_image: list[int]          # image index of each caption
    image_captions: list[list[int]] = field(default_factory=list)  # caption indices of each image
    opener: Callable[[int], "Image.Image"] | None = None  # reads image i when it is not a plain file (shards)

    def __post_init__(self):
        if not self.image_captions:
            self.image_captions = [[] for _ in self.images]
            for c, i in enumerate(self.caption_image):
                self.image_captions[i].append(c)

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def n_images(self) -> int:
        return len(self.images)

    def image_path(self, i: int) -> Path:
        return self.root / self.images[i]

    def open_image(self, i: int) -> "Image.Image":
        """Image i as RGB, from its file or its shard."""
        if self.opener is not None:
            return self.opener(i)
        return load_rgb(self.image_path(i))

    def where(self, i: int) -> str:
        """Where image i is named: the CSV and its first row (1 = the header), the shard set, or for a folder
        without a table the image itself."""
        if self.opener is not None:
            return f"{self.source}, sample {i}"
        if self.source.is_dir():
            return str(self.image_path(i))
        return f"{self.source}, row {self.image_captions[i][0] + 2}"

    @property
    def table_name(self) -> str:
        """The file name a copy of these pairs' table takes: the source's, or for a folder ``captions.csv``."""
        return "captions.csv" if self.source.is_dir() else self.source.name

    def subset(self, keep: list[int]) -> "PairSet":
        """The pairs of images ``keep`` only (their rows, in file order), images renumbered."""
        new_index = {old: new for new, old in enumerate(keep)}
        rows = [c for c, i in enumerate(self.caption_image) if i in new_index]
        opener = self.opener
        return PairSet(self.source, self.root, self.image_key, self.caption_key, self.separator, self.fieldnames,
                       [self.rows[c] for c in rows], [self.images[i] for i in keep], [self.captions[c] for c in rows],
                       [new_index[self.caption_image[c]] for c in rows],
                       opener=(lambda j: opener(keep[j])) if opener is not None else None)

    def __repr__(self) -> str:
        return f"PairSet({self.source}, images={self.n_images}, captions={len(self.captions)})"


ORIENTATION = 0x0112   # the EXIF tag


HEIF_SUFFIXES = (".heic", ".heif")   # what phones store photos as; read through pillow-heif (mmue[heic])


@functools.cache
def _heif_reader() -> bool:
    """Whether HEIC / HEIF files can be read: pillow-heif's reader registered with Pillow, once, when installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


def load_rgb(path: str | Path) -> Image.Image:
    """The image as RGB, turned upright by its EXIF orientation (as viewers show it: phones store photos
    sideways with a tag), so the protected copy, which carries no EXIF, looks like the original did."""
    if Path(path).suffix.lower() in HEIF_SUFFIXES and not _heif_reader():
        raise DataError(f"{path}: a HEIC / HEIF photo, which needs a reader: pip install 'mmue[heic]' (pillow-heif), "
                        "or export the photos as JPEG")
    try:
        with Image.open(path) as im:
            # turning and converting each copy a full-size photo: only when there is something to do
            im.decodermaxblock = 1 << 22   # fewer, larger decoder calls: 15 % less time on a photo, and the
            # decoder holds the interpreter lock less often (other threads read and write photos meanwhile)
            if im.getexif().get(ORIENTATION, 1) != 1:
                im = ImageOps.exif_transpose(im)
            if im.mode != "RGB":
                return im.convert("RGB")
            im.load()
            return im
    except FileNotFoundError as e:
        raise DataError(f"{path}: image not found") from e
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: {e}; an image this large is refused as a possible decompression bomb: "
                        "downscale it, or remove it from the CSV") from e
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: unreadable image ({e}); replace or remove it") from e


MIN_SIDE = 8   # px: smaller images cannot carry a meaningful pattern


def check_image(img: Image.Image, path) -> Image.Image:
    """``img`` if it is large enough to protect, else a ``DataError``."""
    if min(img.size) < MIN_SIDE:
        raise DataError(f"{path}: {img.width}x{img.height} px is too small to protect (at least {MIN_SIDE} px a "
                        "side); remove it or use a larger version")
    return img


def pil_to_u8(img: Image.Image) -> torch.Tensor:
    """uint8 [3,H,W] of an RGB image."""
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
