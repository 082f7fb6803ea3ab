"""Which architectures exist, read from config files alone: no torch, no open_clip imported (``mmue models``
answers at once).

Three kinds: MMUE's tiny CPU configs (``configs/*.json``), the pretrained-tower configs with MMUE's extras
(``configs/pretrained/*.json``), and open_clip's own architectures (the JSON files its package ships).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "configs"
PRETRAINED_DIR = CONFIG_DIR / "pretrained"   # configs with MMUE extras: not registered with open_clip as-is


def tiny_models() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def pretrained_tower_models(installed: bool = False) -> list[str]:
    """The pretrained-tower architectures; with ``installed``, only those whose packages are installed."""
    names = sorted(p.stem for p in PRETRAINED_DIR.glob("*.json"))
    return [n for n in names if not installed or not missing_packages(read_pretrained_spec(n))]


def read_pretrained_spec(name: str) -> dict:
    return json.loads((PRETRAINED_DIR / f"{name}.json").read_text())


def missing_packages(spec: dict) -> list[str]:
    """The packages a pretrained-tower config needs that are not installed."""
    return [pkg for pkg in spec["mmue"].get("requires", []) if importlib.util.find_spec(pkg) is None]


def open_clip_architectures() -> list[str]:
    """open_clip's shipped architectures, found as its registry finds them (a JSON file in its ``model_configs``
    with ``embed_dim``, ``vision_cfg`` and ``text_cfg``), without importing open_clip; [] if it is not installed."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return []
    names = []
    for path in (Path(list(spec.submodule_search_locations)[0]) / "model_configs").glob("*.json"):
        cfg = json.loads(path.read_text())
        if all(key in cfg for key in ("embed_dim", "vision_cfg", "text_cfg")):
            names.append(path.stem)
    return sorted(names)
