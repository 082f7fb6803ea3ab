"""The layout of a protected copy and its public check, kept free of torch so that ``mmue check`` answers at once.

``out/publish/`` is what the owner uploads, with a public ``manifest.json`` of file hashes; ``out/private/`` holds
the key (``private/manifest.json``: seed, parameters, every image's trigger). ``check_published`` re-hashes a copy
(a folder or a zip) against its public manifest and looks for anything that carries the key.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

PUBLISH, PRIVATE = "publish", "private"
MANIFEST = f"{PRIVATE}/manifest.json"   # the full manifest, relative to the output folder
README = """This folder holds a dataset protected by MMUE.

  publish/   the protected copy: upload or share THIS folder only (images, captions, manifest.json of hashes).
             Check a copy before and after uploading with:  mmue check publish
  private/   the key: the seed, the parameters and every image's trigger. Keep it private. Anyone who has it
             can delete the triggers exactly and undo much of the protection.
"""


def released_data(folder: str | os.PathLike, manifest: dict) -> Path | None:
    """The dataset a protect output's manifest names, under ``folder`` (the output folder for the private manifest,
    publish/ for the public one: each names it relative to its own folder): "data" (a CSV or shards), or "csv" in
    manifests written before "data" existed; None when it names neither."""
    name = manifest.get("data", manifest.get("csv"))
    return Path(folder) / name if name else None


def _digest(f) -> str:
    h = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return _digest(f)


def _published(path: Path, stack: contextlib.ExitStack) -> tuple[str, str, dict]:
    """(where, the public manifest's text, relative path -> a function hashing that file) of a published copy:
    a folder (the output folder or its ``publish/``) or a zip of one (``protected.zip``, possibly under one top
    folder)."""
    if path.is_file() and zipfile.is_zipfile(path):
        z = stack.enter_context(zipfile.ZipFile(path))
        names = [n for n in z.namelist() if not n.endswith("/")]
        manifests = sorted((n for n in names if n.rsplit("/", 1)[-1] == "manifest.json"), key=lambda n: n.count("/"))
        if not manifests:
            raise FileNotFoundError(f"{path}: no manifest.json inside; this zip is not a copy written by mmue")
        top = manifests[0][:-len("manifest.json")]

        def hasher(name: str):
            return lambda: _digest(z.open(name))
        files = {n[len(top):]: hasher(n) for n in names if n.startswith(top)}
        return f"{path}" + (f" ({top})" if top else ""), z.read(manifests[0]).decode("utf-8"), files
    pub = path / PUBLISH if (path / PUBLISH / "manifest.json").is_file() else path
    if not (pub / "manifest.json").is_file():
        raise FileNotFoundError(f"{path}: no {PUBLISH}/manifest.json nor manifest.json; point mmue check at the "
                                "output folder of mmue protect, its publish/ folder, or its protected.zip")
    files = {str(p.relative_to(pub)): (lambda p=p: sha256(p)) for p in pub.rglob("*") if p.is_file()}
    return str(pub), (pub / "manifest.json").read_text(), files


def check_published(folder: str | os.PathLike) -> dict:
    """Re-hash a published copy against its public manifest (``folder``: the output folder, its ``publish/``, or
    a zip of the copy). Returns the files ``missing``, ``changed`` and ``extra`` (present, not in the manifest),
    and ``leaks``: anything in it that carries the key (a private manifest, triggers, a seed)."""
    with contextlib.ExitStack() as stack:
        where, text, present = _published(Path(folder), stack)
        manifest = json.loads(text)
        leaks = [f"manifest.json: holds {k!r}" for k in ("images", "config", "seed_source", "rounds_log")
                 if k in manifest]
        if "files" not in manifest:
            raise ValueError(f"{where}: its manifest.json has no file list; this is not a public manifest of mmue "
                             "protect"
                             + (" (it is a private one: it must not be published)" if leaks else ""))
        listed = manifest["files"]
        missing, changed = [], []
        for rel, digest in tqdm(listed.items(), desc="check", leave=False, disable=None):
            if rel not in present:
                missing.append(rel)
            elif present[rel]() != digest:
                changed.append(rel)
    extra = sorted(set(present) - set(listed) - {"manifest.json"})
    leaks += [f"{rel}: a private manifest" for rel in extra if rel.endswith("manifest.json")]
    return {"folder": where, "n_files": len(listed), "missing": missing, "changed": changed, "extra": extra,
            "leaks": leaks, "ok": not (missing or changed or extra or leaks)}
