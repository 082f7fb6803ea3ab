"""Build CLIP models by open_clip architecture name; tiny CPU configs ship as JSON data beside this file.

Weights come only from local files (``.safetensors`` or a ``torch.save``d state dict, read with
``weights_only=True``): nothing is downloaded at run time.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import open_clip
import torch
from safetensors.torch import load_file, save_file

from .tokens import TokenCodec
from .wrapper import ClipModel

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_MODEL = "mmue-tiny-rn"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model_config.json"

open_clip.add_model_config(CONFIG_DIR)


def list_models() -> list[str]:
    return sorted(open_clip.list_models())


def tiny_models() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def _ensure_registered(name: str, model_cfg: dict | None) -> None:
    if name in open_clip.list_models():
        return
    if model_cfg is None:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(tiny_models())}, "
                         f"or an open_clip architecture such as RN50, ViT-B-32 (`mmue models` lists all)")
    # A checkpoint of a config this install does not know: register the stored config under its name.
    tmp = Path(tempfile.mkdtemp(prefix="mmue-cfg-")) / f"{name}.json"
    tmp.write_text(json.dumps(model_cfg))
    open_clip.add_model_config(tmp)


def _load_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    return {k.removeprefix("module."): v for k, v in sd.items()}


def create_model(name: str = DEFAULT_MODEL, pretrained: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu", model_cfg: dict | None = None) -> ClipModel:
    """A ``ClipModel`` of architecture ``name``, randomly initialised or loaded from a local weights file."""
    _ensure_registered(name, model_cfg)
    cfg = open_clip.get_model_config(name)
    clip = open_clip.create_model(name, pretrained=None, device="cpu")
    if pretrained is not None:
        path = Path(pretrained)
        if not path.is_file():
            raise FileNotFoundError(
                f"--pretrained {pretrained}: no such file. MMUE loads weights only from local files "
                "(.safetensors or a torch state dict); it never downloads them")
        sd = _load_state_dict(path)
        sd = {k.removeprefix("clip."): v for k, v in sd.items()}
        missing, unexpected = clip.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: weights do not match architecture {name!r} "
                             f"(missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]})")
        log.info("loaded weights for %s from %s", name, path)
    tokenizer = open_clip.get_tokenizer(name)
    codec = TokenCodec(tokenizer, cfg["text_cfg"].get("context_length", 77))
    pp = getattr(clip.visual, "preprocess_cfg", {}) or {}
    kwargs = {k: tuple(pp[k]) for k in ("mean", "std") if k in pp}
    return ClipModel(clip, codec, name, cfg, **kwargs).to(device)


def save_model(model: ClipModel, directory: str | os.PathLike, stem: str = "model") -> Path:
    """Write ``{stem}.safetensors`` and the architecture config beside it, atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{stem}.safetensors"
    tmp = target.with_suffix(".safetensors.tmp")
    sd = {k: v.detach().contiguous().cpu() for k, v in model.clip.state_dict().items()}
    save_file(sd, str(tmp))
    os.replace(tmp, target)
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
