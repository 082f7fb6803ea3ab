"""Models: open_clip architectures behind a pixel-space wrapper."""
from .batchnorm import has_batchnorm, recalibrate_batchnorm
from .factory import (DEFAULT_MODEL, create_model, list_models, load_model, pretrained_tower_models, save_model,
                      tiny_models)
from .tokens import TokenCodec
from .wrapper import ClipModel

__all__ = ["ClipModel", "TokenCodec", "DEFAULT_MODEL", "create_model", "has_batchnorm", "list_models", "load_model",
           "pretrained_tower_models", "recalibrate_batchnorm", "save_model", "tiny_models"]
