"""Data: image-caption pairs (CSV/TSV or WebDataset shards), image preprocessing, the built-in synthetic dataset.

Layers: ``types`` (PairSet, DataError, opening one image) at the bottom; the readers ``csvfile`` and
``webdataset`` beside each other; ``pairs`` (the format chooser) above them; ``images`` and ``encoded``
(the model's view of a PairSet) on top.
"""
from .images import load_images, preprocess, to_float
from .pairs import DataError, PairSet, read_pairs, write_pairs
from .synth import write_builtin, write_synth, write_zeroshot_split
from .types import load_rgb, pil_to_u8

__all__ = ["DataError", "PairSet", "read_pairs", "write_pairs", "load_images", "load_rgb", "pil_to_u8", "preprocess",
           "to_float", "write_builtin", "write_synth", "write_zeroshot_split"]
