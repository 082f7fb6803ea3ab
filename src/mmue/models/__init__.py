"""Models: open_clip architectures behind a pixel-space wrapper.

Each name loads its module on first use, so that reading ``DEFAULT_MODEL`` (the CLI's help) imports neither torch
nor open_clip."""
from ..lazy import lazy_names

DEFAULT_MODEL = "mmue-tiny-rn"

_MODULE_OF = {"has_batchnorm": "batchnorm", "recalibrate_batchnorm": "batchnorm", "create_model": "factory",
              "list_models": "factory", "load_model": "factory", "pretrained_tower_models": "catalog",
              "save_model": "factory", "tiny_models": "catalog", "TokenCodec": "tokens", "ClipModel": "wrapper"}

__all__ = ["DEFAULT_MODEL", *_MODULE_OF]

__getattr__ = lazy_names(__name__, _MODULE_OF)
