"""Protection: the MEM engine and its parts, presets as data, the protected copy's export, and the workflow
(``workflow.protect``) from a dataset on disk to the copy."""
from .config import ProtectConfig
from .engine import MEMEngine
from .registry import OFFERED, describe_methods, get_method, list_methods, list_strengths, resolve
from .store import ProtectionState

__all__ = ["MEMEngine", "OFFERED", "ProtectConfig", "ProtectionState", "describe_methods", "get_method", "list_methods",
           "list_strengths", "resolve"]
