"""Where the trigger goes in each caption.

``prefix`` (the paper's MEM): before the first word, so that deleting the first k words removes it.
``random``: before word p of each caption, p drawn once per caption from a seeded generator among the positions
whose trigger still fits the text tower's context. A fixed-position strip can then no longer remove it.
``suffix``: after the last word (or, for a caption too long for the context, after the last word it still fits
behind): the trigger sits next to the end-of-text token whose feature a CLIP text tower pools.

Positions are counted in words (whitespace-separated) so the published caption is plain text:
``words[:p] + trigger + words[p:]``; ``EncodedPairs.word_starts`` maps them to token offsets.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..seeding import generator

POSITIONS = ("prefix", "random", "suffix")


def trigger_positions(starts: Sequence[Sequence[int]], k: int, context_length: int, mode: str, seed: int
                      ) -> list[int]:
    """Word index of the trigger in each caption (0 = prefix); it always lands inside the context."""
    if mode not in POSITIONS:
        raise ValueError(f"trigger_position must be one of {', '.join(POSITIONS)}, got {mode!r}")
    if mode == "prefix" or k == 0:
        return [0] * len(starts)
    room = context_length - 2 - k  # body tokens that fit beside the trigger
    g = generator(seed, "trigger positions")
    out = []
    for s in starts:
        fits = sum(1 for offset in s if offset <= room)   # word boundaries before which the trigger fits
        out.append(fits - 1 if mode == "suffix" else int(torch.randint(fits, (1,), generator=g)))
    return out


def insert_trigger(caption: str, trigger: str, word: int) -> str:
    if not trigger:
        return caption
    if word == 0:
        return f"{trigger} {caption}"  # the caption's own spacing kept
    words = caption.split()
    return " ".join([*words[:word], trigger, *words[word:]])
