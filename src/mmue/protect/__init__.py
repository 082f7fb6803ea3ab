"""Protection: the MEM engine and its parts, presets as data, the protected copy's export, and the workflow
(``workflow.protect``) from a dataset on disk to the copy.

The presets and knobs load at once (no torch: the CLI's help reads them); the engine and its state on first use."""
from ..lazy import lazy_names

from .config import ProtectConfig
from .registry import OFFERED, describe_methods, get_method, list_methods, list_strengths, resolve

_MODULE_OF = {"MEMEngine": "engine", "ProtectionState": "store"}

__all__ = ["MEMEngine", "OFFERED", "ProtectConfig", "ProtectionState", "describe_methods", "get_method", "list_methods",
           "list_strengths", "resolve"]

__getattr__ = lazy_names(__name__, _MODULE_OF)
