import json

import pytest

from mmue.data import read_pairs
from mmue.data.layouts import as_csv, detect
from mmue.data.types import DataError
from tests.helpers.layouts import make_layout


@pytest.mark.parametrize("layout", ["csv", "captions-txt", "imagefolder-csv", "imagefolder-jsonl"])
def test_each_layout_reads_as_the_same_pairs(tiny_synth, tmp_path, layout):
    folder = make_layout(tiny_synth, tmp_path / "in", layout, n=6)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert detect(folder) == layout
    got, csv_path = as_csv(folder, tmp_path / "work")
    assert got == layout
    pairs = read_pairs(csv_path)
    src = read_pairs(tiny_synth / "train.csv")
    first = [src.captions[src.image_captions[i][0]] for i in range(6)]
    assert pairs.n_images == 6 and sorted(pairs.captions[pairs.image_captions[i][0]] for i in range(6)) == sorted(first)
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before   # originals untouched


def test_layout_errors_name_the_file_and_the_fix(tiny_synth, tmp_path):
    folder = make_layout(tiny_synth, tmp_path / "txt", "captions-txt", n=3)
    next(folder.rglob("*.txt")).unlink()
    with pytest.raises(DataError, match="no caption file"):
        as_csv(folder, tmp_path / "w")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no captions found"):
        detect(empty)
    bad = make_layout(tiny_synth, tmp_path / "jsonl", "imagefolder-jsonl", n=2)
    (bad / "metadata.jsonl").write_text(json.dumps({"file_name": "x.png"}) + "\n")
    with pytest.raises(DataError, match="line 1"):
        as_csv(bad, tmp_path / "w2")
    two = make_layout(tiny_synth, tmp_path / "two", "csv", n=2)
    (two / "more.tsv").write_text("a\tb\n")
    with pytest.raises(DataError, match="several caption tables"):
        detect(two)
