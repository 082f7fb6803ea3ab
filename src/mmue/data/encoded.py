"""Pairs made ready for a model: uint8 images at the model's size and token ids per caption."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .diskarray import DiskArray
from .images import load_images, load_sized_images
from .pairs import PairSet


def word_starts(encode: Callable[[str], Sequence[int]], caption: str, body: Sequence[int]) -> list[int]:
    """Token offset of each word boundary in ``body`` (= ``encode(caption)``): [0, ..., len(body)].
    Encoding word by word equals encoding the caption for whitespace-split tokenizers (CLIP BPE, WordPiece)."""
    starts = [0]
    for w in caption.split():
        starts.append(starts[-1] + len(encode(w)))
    if starts[-1] != len(body):
        raise ValueError(f"caption {caption!r} does not tokenize word by word ({starts[-1]} vs {len(body)} "
                         "tokens); place triggers as a prefix with this tokenizer")
    return starts


@dataclass
class EncodedPairs:
    images: torch.Tensor | DiskArray  # uint8 [N,3,S,S], in memory or on disk
    caption_bodies: list[list[int]]   # BPE ids of each caption, without sot/eot
    caption_image: list[int]          # image index of each caption
    image_captions: list[list[int]]   # caption indices of each image
    word_starts: list[list[int]] | None = None  # token offset of each word boundary per caption (if asked for)
    sizes: torch.Tensor | None = None  # native (width, height) [N,2] of each image, where recorded

    @property
    def n_images(self) -> int:
        return self.images.shape[0]

    @classmethod
    def build(cls, pairs: PairSet, image_size: int, encode: Callable[[str], Sequence[int]],
              progress: bool = True, cache=None, words: bool = False, sizes: bool = False, fit: str = "crop"
              ) -> "EncodedPairs":
        """``cache``: a file to keep the preprocessed images in on disk instead of RAM (see ``load_images``);
        ``words``: also record where each word starts in the token ids (for triggers placed mid-caption);
        ``sizes``: also record each image's native size (the protection needs it for full-size photos, see
        ``protect.framing``); ``fit``: ``crop`` (the trainer's centre square) or ``squash`` (the whole image)."""
        bodies = [list(encode(c)) for c in pairs.captions]
        starts = [word_starts(encode, c, b) for c, b in zip(pairs.captions, bodies)] if words else None
        images, native = (load_sized_images(pairs, image_size, progress, cache, fit) if sizes or fit != "crop"
                          else (load_images(pairs, image_size, progress, cache), None))
        return cls(images, bodies, list(pairs.caption_image), [list(c) for c in pairs.image_captions], starts, native)

    def sample_captions(self, image_idx: torch.Tensor, generator: torch.Generator) -> list[int]:
        """One caption per image, uniformly among that image's captions."""
        out = []
        for i in image_idx.tolist():
            caps = self.image_captions[i]
            out.append(caps[int(torch.randint(len(caps), (1,), generator=generator))])
        return out
