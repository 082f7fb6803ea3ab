"""Names a package loads on first use (PEP 562), so that importing the package stays cheap where only its light
parts are read (the CLI's help reads presets and defaults without importing torch or open_clip)."""
from __future__ import annotations

import sys
from importlib import import_module


def lazy_names(package: str, module_of: dict[str, str]):
    """The package's ``__getattr__``: ``name`` comes from its submodule ``module_of[name]`` at first use, and is
    kept in the package from then on."""
    def __getattr__(name: str):
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f"{package}.{module_of[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value
    return __getattr__
