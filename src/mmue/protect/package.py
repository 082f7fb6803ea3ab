"""The published copy as one zip, in the layout the owner gave (``mmue.data.layouts``): a CSV and its images
as written, a ``.txt`` beside each image, or a Hugging Face ``metadata.csv`` / ``metadata.jsonl``. The zip holds
only ``OUT/publish`` material and a public manifest of its own files' hashes (``mmue check`` reads it once
unzipped); the private record never goes in.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

from ..data.layouts import LAYOUTS
from ..data.pairs import read_pairs
from ..fileio import atomic_write
from .manifest import PUBLISH


def _layout_files(pub: Path, layout: str) -> dict[str, bytes]:
    """Relative path -> bytes of the published copy in ``layout`` (the public manifest excluded)."""
    listed = json.loads((pub / "manifest.json").read_text())
    if "files" not in listed or listed.get("out_format") == "webdataset" or "shards/" in listed.get("data", ""):
        raise ValueError(f"{pub}: only a copy written as files (not shards) can be packaged")
    table = pub / listed["data"]
    files = {rel: (pub / rel).read_bytes() for rel in listed["files"] if rel != listed["data"]}
    if layout == "csv" or (layout == "imagefolder-csv" and table.name == "metadata.csv"):
        files[listed["data"]] = table.read_bytes()   # the input's own table, columns and all
        return files
    pairs = read_pairs(table, check_files=False)
    if layout == "imagefolder-csv":
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(
            [("file_name", "text")] + [(pairs.images[pairs.caption_image[c]], cap)
                                       for c, cap in enumerate(pairs.captions)])
        files["metadata.csv"] = buf.getvalue().encode("utf-8")
    elif layout == "captions-txt":
        for i, img in enumerate(pairs.images):
            text = "\n".join(pairs.captions[c] for c in pairs.image_captions[i]) + "\n"
            files[str(Path(img).with_suffix(".txt"))] = text.encode("utf-8")
    else:   # imagefolder-jsonl: one line per caption, as the input had
        lines = [json.dumps({"file_name": pairs.images[pairs.caption_image[c]], "text": cap}, ensure_ascii=False)
                 for c, cap in enumerate(pairs.captions)]
        files["metadata.jsonl"] = ("\n".join(lines) + "\n").encode("utf-8")
    return files


def package(out: str | os.PathLike, layout: str, zip_path: str | os.PathLike) -> dict:
    """Write the published copy of the protection run ``out`` to ``zip_path`` in ``layout``; returns its public
    manifest (hashes only)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: one of {', '.join(LAYOUTS)}")
    pub = Path(out) / PUBLISH
    if not (pub / "manifest.json").is_file():
        raise FileNotFoundError(f"{out}: no finished protection ({PUBLISH}/manifest.json missing)")
    files = _layout_files(pub, layout)
    public = json.loads((pub / "manifest.json").read_text())
    manifest = {"protected_by": "mmue", "layout": layout, "n_images": public["n_images"],
                "n_captions": public["n_captions"],
                "files": {rel: hashlib.sha256(b).hexdigest() for rel, b in sorted(files.items())}}
    table = {"csv": public["data"], "imagefolder-csv": "metadata.csv", "imagefolder-jsonl": "metadata.jsonl"}
    if layout in table:
        manifest["data"] = table[layout]

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:   # PNGs do not compress further
            for rel, b in sorted(files.items()):
                z.writestr(rel, b)
            z.writestr("manifest.json", json.dumps(manifest, indent=1))
    atomic_write(Path(zip_path), write)
    return manifest

