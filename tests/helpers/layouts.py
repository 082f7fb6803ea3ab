"""Small datasets in each folder layout MMUE reads (``mmue.data.layouts``), made from the built-in data."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from mmue.data import read_pairs


def make_layout(synth: Path, folder: Path, layout: str, n: int = 6, skip: int = 0) -> Path:
    """Training images ``skip`` to ``n`` of ``synth``, one caption each, in ``layout``, under ``folder``."""
    src = read_pairs(synth / "train.csv")
    folder.mkdir(parents=True)
    (folder / "photos").mkdir()
    rows = []
    for i in range(skip, n):
        name = f"photos/pic_{i}.png"
        shutil.copyfile(src.image_path(i), folder / name)
        rows.append((name, src.captions[src.image_captions[i][0]]))
    if layout == "csv":
        with open(folder / "captions.csv", "w", newline="") as f:
            csv.writer(f).writerows([("filepath", "caption"), *rows])
    elif layout == "imagefolder-csv":
        with open(folder / "metadata.csv", "w", newline="") as f:
            csv.writer(f).writerows([("file_name", "text"), *rows])
    elif layout == "imagefolder-jsonl":
        (folder / "metadata.jsonl").write_text("".join(json.dumps({"file_name": a, "text": b}) + "\n" for a, b in rows))
    elif layout == "captions-txt":
        for name, cap in rows:
            (folder / name).with_suffix(".txt").write_text(cap + "\n")
    else:
        raise ValueError(layout)
    return folder
