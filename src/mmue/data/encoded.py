"""Pairs made ready for a model: uint8 images at the model's size and token ids per caption."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .diskarray import DiskArray
from .images import load_images
from .pairs import PairSet


@dataclass
class EncodedPairs:
    images: torch.Tensor | DiskArray  # uint8 [N,3,S,S], in memory or on disk
    caption_bodies: list[list[int]]   # BPE ids of each caption, without sot/eot
    caption_image: list[int]          # image index of each caption
    image_captions: list[list[int]]   # caption indices of each image

    @property
    def n_images(self) -> int:
        return self.images.shape[0]

    @classmethod
    def build(cls, pairs: PairSet, image_size: int, encode: Callable[[str], Sequence[int]],
              progress: bool = True, cache=None) -> "EncodedPairs":
        """``cache``: a file to keep the preprocessed images in on disk instead of RAM (see ``load_images``)."""
        return cls(load_images(pairs, image_size, progress, cache), [list(encode(c)) for c in pairs.captions],
                   list(pairs.caption_image), [list(c) for c in pairs.image_captions])

    def sample_captions(self, image_idx: torch.Tensor, generator: torch.Generator) -> list[int]:
        """One caption per image, uniformly among that image's captions."""
        out = []
        for i in image_idx.tolist():
            caps = self.image_captions[i]
            out.append(caps[int(torch.randint(len(caps), (1,), generator=generator))])
        return out
