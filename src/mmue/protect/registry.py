"""Method and strength presets, as JSON data files beside this module (``presets/methods``,
``presets/strengths``), found by name or alias. A new preset is one JSON file:

    {"name": "mem-3-noshuffle", "aliases": [], "kind": "paper", "order": 12,
     "summary": "...", "cost": "...", "measured": "...",
     "settings": {"noise": "pgd", "trigger_len": 3, "shuffle": false}}

``settings`` are ``ProtectConfig`` fields in library units; ``kind`` is paper | baseline | robust | research.
"""
from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path

from .config import ProtectConfig

PRESET_DIR = Path(__file__).parent / "presets"
KINDS = ("paper", "baseline", "robust", "research")
# The presets offered to people who publish (the app's choices, the first one `mmue protect`'s default); every other
# preset is a baseline or a research variant, kept for the bench and listed by `mmue methods`.
OFFERED = ("mem-3", "mem-3-robust", "mem-3-blend")


@dataclass(frozen=True)
class Preset:
    name: str
    settings: dict
    summary: str = ""
    cost: str = ""
    measured: str = ""
    kind: str = "research"
    order: int = 99
    aliases: tuple[str, ...] = ()


def _load(folder: Path) -> dict[str, Preset]:
    known = {f.name for f in fields(ProtectConfig)}
    out = {}
    for path in sorted(folder.glob("*.json")):
        raw = json.loads(path.read_text())
        bad = set(raw.get("settings", {})) - known
        if bad or raw.get("name") != path.stem:
            raise ValueError(f"{path}: name must be {path.stem!r} and settings ProtectConfig fields "
                             f"(unknown: {sorted(bad)})")
        out[path.stem] = Preset(**{**raw, "aliases": tuple(raw.get("aliases", ()))})
    return out


@lru_cache(maxsize=None)
def _methods() -> dict[str, Preset]:
    return dict(sorted(_load(PRESET_DIR / "methods").items(), key=lambda kv: (kv[1].order, kv[0])))


@lru_cache(maxsize=None)
def _strengths() -> dict[str, Preset]:
    return _load(PRESET_DIR / "strengths")


def list_methods(include_aliases: bool = False) -> list[str]:
    """Method names in table order (baselines, the paper's, robust presets, research variants)."""
    names = list(_methods())
    return names + [a for p in _methods().values() for a in p.aliases] if include_aliases else names


def list_strengths() -> list[str]:
    return [s for s in ("low", "mid", "high") if s in _strengths()] + sorted(set(_strengths()) - {"low", "mid", "high"})


def get_method(name: str) -> Preset:
    for p in _methods().values():
        if name == p.name or name in p.aliases:
            return p
    raise ValueError(f"unknown method {name!r}; choose one of {', '.join(list_methods(True))} (`mmue methods`)")


def get_strength(name: str) -> Preset:
    if name not in _strengths():
        raise ValueError(f"unknown strength {name!r}; choose one of {', '.join(list_strengths())}")
    return _strengths()[name]


def method_order(name: str) -> int:
    """Sort key of a method in tables (unknown names, e.g. ``clean``, first)."""
    try:
        return get_method(name).order
    except ValueError:
        return -1


def resolve(method: str = "mem-3", strength: str = "low", **overrides) -> ProtectConfig:
    """Strength preset, then method preset, then explicit overrides (``None`` values are ignored)."""
    preset, power = get_method(method), get_strength(strength)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - {f.name for f in fields(ProtectConfig)}
    if unknown:
        raise ValueError(f"unknown settings: {sorted(unknown)}")
    cfg = replace(ProtectConfig(), **power.settings)
    cfg = replace(cfg, **preset.settings, method=preset.name)
    return replace(cfg, **overrides).validate()


LISTING_WIDTH = 118   # `mmue methods`: fits a wide terminal, and a pasted listing stays readable


def describe_methods() -> str:
    """One line per method (``mmue methods``), then each one's cost and where it is measured."""
    def wrapped(text: str, first: str, rest: str) -> str:   # paragraphs folded under their column
        return textwrap.fill(text, width=LISTING_WIDTH, initial_indent=first, subsequent_indent=rest,
                             break_on_hyphens=False)
    lines = [wrapped(f"Offered to people who publish (the app's choices): {', '.join(OFFERED)}; `mmue protect` "
                     f"uses {OFFERED[0]} unless told. The others are baselines and research variants kept for the "
                     "bench.", "", ""), "", f"{'method':<20}{'kind':<10}what it is", ""]
    for p in _methods().values():
        alias = f" (alias: {', '.join(p.aliases)})" if p.aliases else ""
        lines += [wrapped(p.summary + alias, f"{p.name:<20}{p.kind:<10}", " " * 30),
                  wrapped(p.cost, " " * 30 + "cost: ", " " * 36),
                  wrapped(p.measured, " " * 30 + "measured: ", " " * 40)]
    lines += ["", "strengths:"] + [f"  {s:<8}{get_strength(s).summary}" for s in list_strengths()]
    return "\n".join(lines)
