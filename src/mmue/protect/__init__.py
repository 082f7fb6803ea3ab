"""Protection: the MEM engine, its method presets, the noise/trigger store and the exporter."""
from .engine import MEMEngine
from .methods import METHODS, STRENGTHS, ProtectConfig, resolve
from .store import ProtectionState

__all__ = ["MEMEngine", "METHODS", "STRENGTHS", "ProtectConfig", "ProtectionState", "resolve"]
