"""Seeds from one helper: every random stream of a run is ``generator(seed, name, *indices)``.

Streams are derived with ``numpy.random.SeedSequence`` from the run's seed and the stream's name and indices, so
no two streams collide (hand-made arithmetic such as ``seed * K + epoch + 7`` let the batch order of epoch e + 7
share a seed with the captions of epoch e).
"""
from __future__ import annotations

import zlib

import numpy as np
import torch


def seed_of(seed: int, *stream: str | int) -> int:
    """A 63-bit seed for the stream ``stream`` of run ``seed``."""
    key = [int(seed)] + [zlib.crc32(s.encode()) if isinstance(s, str) else int(s) for s in stream]
    return int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0] >> np.uint64(1))


def generator(seed: int, *stream: str | int) -> torch.Generator:
    """A CPU ``torch.Generator`` for one named stream of a run."""
    return torch.Generator().manual_seed(seed_of(seed, *stream))
