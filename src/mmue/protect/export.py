"""Turn a ``ProtectionState`` into a publishable dataset, kept apart from its key.

``out/publish/`` is what the owner uploads: the images as ``images/<path relative to the images' common
folder>.png`` (stems kept), the CSV (the input's name, columns and separator, with the new image paths and the
triggered captions) or, with ``out_format="webdataset"``, tar shards under ``shards/``, and a public
``manifest.json`` with file hashes only (``mmue check`` verifies a copy against it). ``out/private/`` holds the
key: the full manifest (seed, parameters, every image's trigger, its source path), which must never be
published: anyone with the triggers deletes them exactly. ``out/README.txt`` says so.
Noise computed at the model's resolution is mapped back onto the image's native pixels (the center square
that the model's preprocessing crops); for images already at the model's size this is exact.
"""
from __future__ import annotations

import hashlib
from collections import Counter
import io
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from ..data.pairs import PairSet, write_pairs
from ..data.types import pil_to_u8
from ..data.webdataset import ShardWriter
from ..fileio import atomic_write, atomic_write_json
from ..models.tokens import TokenCodec
from ..quality import psnr
from .pgd import apply_noise
from .placement import insert_trigger
from .store import ProtectionState


def output_paths(pairs: PairSet) -> list[str]:
    """Relative output path of each image: under images/, mirrored from their common folder, as .png. Distinct
    sources never share an output: where two would (``photo.png`` and ``photo.jpg``), each keeps its own
    extension in the name (``photo-png.png``, ``photo-jpg.png``); the manifest records source -> file."""
    absolute = [Path(os.path.normpath(pairs.root / p)) for p in pairs.images]
    common = Path(os.path.commonpath([str(a.parent) for a in absolute]))
    rel = [a.relative_to(common) for a in absolute]
    plain = [r.with_suffix(".png") for r in rel]
    taken = Counter(str(p).lower() for p in plain)   # case-insensitive: the copy may land on such a disk
    out = [r.with_name(f"{r.stem}-{r.suffix.lstrip('.').lower() or 'noext'}.png") if taken[str(p).lower()] > 1 else p
           for r, p in zip(rel, plain)]
    seen: Counter = Counter()
    for i, o in enumerate(out):   # still equal (photo.JPG and photo.jpg): a numbered suffix, in input order
        seen[str(o).lower()] += 1
        if seen[str(o).lower()] > 1:
            out[i] = o.with_name(f"{o.stem}-{seen[str(o).lower()]}.png")
    if len({str(o).lower() for o in out}) != len(out):
        raise RuntimeError("output names still collide after disambiguation; please report this dataset's names")
    return [str(Path("images") / o) for o in out]


def native_noise(noise: torch.Tensor, width: int, height: int, eps_px: int) -> torch.Tensor:
    """int8 [3,H,W] noise on the native grid from model-resolution noise [3,S,S]."""
    s = noise.shape[-1]
    if (width, height) == (s, s):
        return noise
    side = min(width, height)
    up = F.interpolate(noise[None].float(), size=(side, side), mode="bilinear", align_corners=False)[0]
    out = torch.zeros(3, height, width)
    top, left = (height - side) // 2, (width - side) // 2
    out[:, top:top + side, left:left + side] = up
    return out.round().clamp(-eps_px, eps_px).to(torch.int8)


PUBLISH, PRIVATE = "publish", "private"
MANIFEST = f"{PRIVATE}/manifest.json"   # the full manifest, relative to the output folder
README = """This folder holds a dataset protected by MMUE.

  publish/   the protected copy: upload or share THIS folder only (images, captions, manifest.json of hashes).
             Check a copy before and after uploading with:  mmue check publish
  private/   the key: the seed, the parameters and every image's trigger. Keep it private. Anyone who has it
             can delete the triggers exactly and undo much of the protection.
"""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export(pairs: PairSet, state: ProtectionState, codec: TokenCodec, out_dir: str | os.PathLike, eps_px: int,
           params: dict, progress: bool = True, out_format: str = "files", maxcount: int = 1000,
           trigger_words: list[int] | None = None) -> dict:
    """Write the protected copy into ``out_dir``; returns the manifest. Originals are only read.

    ``out_format``: ``files`` (PNGs + a CSV like the input) or ``webdataset`` (``shards/NNNNN.tar`` with
    ``key.png``, ``key.txt`` = the first caption, ``key.json`` = all captions; feeds open_clip directly).
    ``trigger_words``: before which word of each caption its image's trigger goes (default: all 0, a prefix).
    """
    if out_format not in ("files", "webdataset"):
        raise ValueError(f"out_format must be files or webdataset, got {out_format!r}")
    out = Path(out_dir)
    pub = out / PUBLISH
    pub.mkdir(parents=True, exist_ok=True)
    triggers = [codec.trigger_text(t) if t.numel() else "" for t in state.triggers]
    words = trigger_words if trigger_words is not None else [0] * len(pairs.captions)
    captions = [insert_trigger(c, triggers[ci], w) for c, ci, w in zip(pairs.captions, pairs.caption_image, words)]
    rel_out = output_paths(pairs) if out_format == "files" else [f"{i:08d}" for i in range(pairs.n_images)]
    writer = ShardWriter(pub / "shards", maxcount) if out_format == "webdataset" else None
    per_image, psnrs = [], []
    for i in tqdm(range(pairs.n_images), desc="write images", disable=None if progress else True, leave=False):
        src = pairs.open_image(i)
        x = pil_to_u8(src)
        noise = native_noise(state.noise[i], src.width, src.height, eps_px)
        y = apply_noise(x, noise)
        buf = io.BytesIO()
        Image.fromarray(y.permute(1, 2, 0).numpy()).save(buf, format="PNG")
        png = buf.getvalue()
        if writer is None:
            target = pub / rel_out[i]
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, lambda tmp: tmp.write_bytes(png))
        else:
            caps = [captions[c] for c in pairs.image_captions[i]]
            writer.write(rel_out[i], {"png": png, "txt": caps[0].encode(),
                                      "json": json.dumps({"captions": caps}).encode()})   # no source path: it may name private folders
        p = psnr(x, y)
        psnrs.append(p)
        per_image.append({"source": pairs.images[i], "file": f"{PUBLISH}/{rel_out[i]}", "trigger": triggers[i],
                          "linf_px": int((y.to(torch.int16) - x.to(torch.int16)).abs().max()),
                          "psnr_db": None if p == float("inf") else round(p, 3),
                          "sha256": hashlib.sha256(png).hexdigest()})
    if writer is None:
        csv_path = pub / pairs.source.name
        write_pairs(pairs, csv_path, captions, images=[rel_out[i] for i in pairs.caption_image])
        data = csv_path.name
        outputs = {"data": f"{PUBLISH}/{data}", "csv": f"{PUBLISH}/{data}", "csv_sha256": sha256(csv_path)}
        files = {rel_out[i]: e["sha256"] for i, e in enumerate(per_image)}
        files[data] = outputs["csv_sha256"]
    else:
        data = "shards/" + writer.close()
        outputs = {"data": f"{PUBLISH}/{data}", "out_format": "webdataset", "n_shards": len(writer.names)}
        files = {f"shards/{n}": sha256(pub / "shards" / n) for n in writer.names}
    finite = [p for p in psnrs if p != float("inf")]
    manifest = {
        **params,
        "n_images": pairs.n_images, "n_captions": len(pairs.captions), **outputs,
        "mean_psnr_db": round(sum(finite) / len(finite), 3) if finite else None,
        "min_psnr_db": round(min(finite), 3) if finite else None,
        "max_linf_px": max(r["linf_px"] for r in per_image),
        "images": per_image,
    }
    public = {"protected_by": "mmue", "data": data, "n_images": pairs.n_images, "n_captions": len(pairs.captions),
              "files": dict(sorted(files.items()))}
    atomic_write_json(pub / "manifest.json", public)
    atomic_write((out / "README.txt"), lambda tmp: tmp.write_text(README))
    (out / PRIVATE).mkdir(exist_ok=True)
    atomic_write_json(out / PRIVATE / "manifest.json", manifest)   # last: its presence marks the run finished
    return manifest


def check_published(folder: str | os.PathLike) -> dict:
    """Re-hash a published copy against its public manifest (``folder``: the output folder or its ``publish/``).
    Returns the files ``missing``, ``changed`` and ``extra`` (on disk, not in the manifest), and ``leaks``:
    anything in it that carries the key (a private manifest, triggers, a seed)."""
    folder = Path(folder)
    pub = folder / PUBLISH if (folder / PUBLISH / "manifest.json").is_file() else folder
    man_path = pub / "manifest.json"
    if not man_path.is_file():
        raise FileNotFoundError(f"{folder}: no {PUBLISH}/manifest.json nor manifest.json; point mmue check at the "
                                "output folder of mmue protect or at its publish/ folder")
    manifest = json.loads(man_path.read_text())
    leaks = [f"{man_path.name}: holds {k!r}" for k in ("images", "config", "seed_source", "rounds_log") if k in manifest]
    if "files" not in manifest:
        raise ValueError(f"{man_path}: no file list; this is not a public manifest of mmue protect"
                         + (" (it is a private one: it must not be published)" if leaks else ""))
    listed = manifest["files"]
    missing, changed = [], []
    for rel, digest in tqdm(listed.items(), desc="check", leave=False, disable=None):
        p = pub / rel
        if not p.is_file():
            missing.append(rel)
        elif sha256(p) != digest:
            changed.append(rel)
    on_disk = {str(p.relative_to(pub)) for p in pub.rglob("*") if p.is_file()}
    extra = sorted(on_disk - set(listed) - {"manifest.json"})
    leaks += [f"{rel}: a private manifest" for rel in extra if rel.endswith("manifest.json")]
    return {"folder": str(pub), "n_files": len(listed), "missing": missing, "changed": changed, "extra": extra,
            "leaks": leaks, "ok": not (missing or changed or extra or leaks)}
