import json

import pytest

from mmue.data import read_pairs
from mmue.data.layouts import detect
from mmue.data.types import DataError
from tests.helpers.layouts import make_layout


@pytest.mark.parametrize("layout", ["csv", "captions-txt", "imagefolder-csv", "imagefolder-jsonl"])
def test_each_layout_reads_as_the_same_pairs(tiny_synth, tmp_path, layout):
    folder = make_layout(tiny_synth, tmp_path / "in", layout, n=6)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert detect(folder) == layout
    pairs = read_pairs(folder)   # read where it is: nothing written
    src = read_pairs(tiny_synth / "train.csv")
    first = [src.captions[src.image_captions[i][0]] for i in range(6)]
    assert pairs.n_images == 6 and sorted(pairs.captions[pairs.image_captions[i][0]] for i in range(6)) == sorted(first)
    assert all(pairs.image_path(i).is_file() for i in range(6))
    # a copy's table: the folder's own, or captions.csv; an image is named by its row, or by itself
    assert pairs.table_name == {"csv": "captions.csv", "imagefolder-csv": "metadata.csv"}.get(layout, "captions.csv")
    assert pairs.where(2).endswith("row 4" if layout in ("csv", "imagefolder-csv") else "pic_2.png")
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before   # originals untouched


def test_layout_errors_name_the_file_and_the_fix(tiny_synth, tmp_path):
    folder = make_layout(tiny_synth, tmp_path / "txt", "captions-txt", n=3)
    next(folder.rglob("*.txt")).unlink()
    with pytest.raises(DataError, match="no caption file"):
        read_pairs(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no captions found"):
        detect(empty)
    bad = make_layout(tiny_synth, tmp_path / "jsonl", "imagefolder-jsonl", n=2)
    (bad / "metadata.jsonl").write_text(json.dumps({"file_name": "x.png"}) + "\n")
    with pytest.raises(DataError, match="line 1"):
        read_pairs(bad)
    (bad / "metadata.jsonl").write_text(json.dumps({"file_name": "photos/gone.png", "text": "a cat"}) + "\n")
    with pytest.raises(DataError, match="line 1: image 'photos/gone.png' not found"):
        read_pairs(bad)
    with pytest.raises(DataError, match="give its CSV itself"):
        read_pairs(make_layout(tiny_synth, tmp_path / "keys", "csv", n=2), caption_key="caption")
    two = make_layout(tiny_synth, tmp_path / "two", "csv", n=2)
    (two / "more.tsv").write_text("a\tb\n")
    with pytest.raises(DataError, match="several caption tables"):
        detect(two)
