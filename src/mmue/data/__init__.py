"""Data: image-caption pairs, image preprocessing, the built-in synthetic dataset."""
from .images import load_images, load_rgb, preprocess, to_float
from .pairs import DataError, PairSet, read_pairs, write_pairs
from .synth import write_synth

__all__ = ["DataError", "PairSet", "read_pairs", "write_pairs", "load_images", "load_rgb", "preprocess",
           "to_float", "write_synth"]
