"""The data layer's leaf: ``PairSet`` (captions and the images they describe), ``DataError``, and the safe way
to open one image file. Readers of each format (``csvfile``, ``webdataset``) build ``PairSet``s; ``pairs``
chooses the reader."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


class DataError(ValueError):
    """Bad input data; the message names the file, the row and the fix."""


@dataclass
class PairSet:
    """Captions (one per CSV row) and the unique images they describe."""

    source: Path                      # the CSV file
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

    def __repr__(self) -> str:
        return f"PairSet({self.source}, images={self.n_images}, captions={len(self.captions)})"


def load_rgb(path: str | Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError as e:
        raise DataError(f"{path}: image not found") from e
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: {e}; an image this large is refused as a possible decompression bomb: "
                        "downscale it, or remove it from the CSV") from e
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: unreadable image ({e}); replace or remove it") from e


def pil_to_u8(img: Image.Image) -> torch.Tensor:
    """uint8 [3,H,W] of an RGB image."""
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
