"""Which words a trigger may use.

By default any whole word of the text tower's vocabulary (``TokenCodec.trigger_vocab``): HotFlip then picks
words such as "apprentice toledo sssss" that the rest of the dataset never uses, and an attacker who drops rare
words (defense ``rare-N``) removes them wherever they sit. With ``trigger_vocab_min_images = N`` a trigger may
only use words that the dataset's own captions use in at least N images: dropping them costs the attacker
those words in every clean caption too.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch


def dataset_vocab(bodies: Sequence[Sequence[int]], word_starts: Sequence[Sequence[int]] | None,
                  image_captions: Sequence[Sequence[int]], allowed: torch.Tensor, min_images: int) -> torch.Tensor:
    """The ids of ``allowed`` that are a whole caption word (one token between two word boundaries, so not the
    tail of a longer word like "agon" in "pentagon") in the captions of at least ``min_images`` images; a word
    repeated in several captions of one image counts once. ``min_images`` 0 keeps ``allowed`` whole."""
    if min_images <= 0:
        return allowed
    if word_starts is None:
        raise ValueError("trigger_vocab_min_images needs word boundaries: build the data with "
                         "EncodedPairs.build(..., words=True)")

    def whole_words(c: int) -> set[int]:
        b, s = bodies[c], word_starts[c]
        return {b[s[j]] for j in range(len(s) - 1) if s[j + 1] - s[j] == 1}

    images_with = Counter(i for caps in image_captions for i in set().union(*map(whole_words, caps)))
    keep = [i for i in allowed.tolist() if images_with[i] >= min_images]
    if not keep:
        raise ValueError(f"no trigger word occurs in the captions of {min_images} or more images: lower "
                         "trigger_vocab_min_images (--trigger-vocab-min-images)")
    return torch.tensor(keep, dtype=torch.long)
