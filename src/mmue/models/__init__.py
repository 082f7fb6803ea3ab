"""Models: open_clip architectures behind a pixel-space wrapper.

Each name loads its module on first use, so that reading ``DEFAULT_MODEL`` (the CLI's help) imports neither torch
nor open_clip."""
from importlib import import_module

DEFAULT_MODEL = "mmue-tiny-rn"

_MODULE_OF = {"has_batchnorm": "batchnorm", "recalibrate_batchnorm": "batchnorm", "create_model": "factory",
              "list_models": "factory", "load_model": "factory", "pretrained_tower_models": "factory",
              "save_model": "factory", "tiny_models": "factory", "TokenCodec": "tokens", "ClipModel": "wrapper"}

__all__ = ["DEFAULT_MODEL", *_MODULE_OF]


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value
