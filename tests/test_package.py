import zipfile

import pytest

from mmue import api
from mmue.data import read_pairs
from mmue.data.layouts import as_csv, detect
from mmue.protect.package import package
from tests.helpers.layouts import make_layout


@pytest.fixture(scope="module")
def protected(tiny_synth, tmp_path_factory):
    """One protection, packaged below into every layout (reading each layout is tests/test_layouts.py)."""
    tmp = tmp_path_factory.mktemp("pkg")
    folder = make_layout(tiny_synth, tmp / "in", "captions-txt", n=4)
    _, csv_path = as_csv(folder, tmp / "work")
    man = api.protect(csv_path, tmp / "out", "trigger-only", device="cpu", progress=False, rounds=0)
    return tmp / "out", man


@pytest.mark.parametrize("layout", ["csv", "captions-txt", "imagefolder-csv", "imagefolder-jsonl"])
def test_package_writes_the_layout_with_a_checkable_manifest(protected, tmp_path, layout):
    out, man = protected
    public = package(out, layout, tmp_path / "protected.zip")
    assert public["layout"] == layout and public["n_images"] == 4
    unzipped = tmp_path / "unzipped"
    with zipfile.ZipFile(tmp_path / "protected.zip") as z:
        names = z.namelist()
        z.extractall(unzipped)
    # nothing private inside: no private manifest, no seed, no trigger list
    assert not any("private" in n for n in names)
    assert "seed" not in (unzipped / "manifest.json").read_text()
    assert api.check(unzipped)["ok"]
    assert detect(unzipped) == layout                       # the copy reads back in the layout it came in
    _, back = as_csv(unzipped, tmp_path / "work2")
    pairs = read_pairs(back)
    triggers = {e["trigger"] for e in man["images"]}
    assert pairs.n_images == 4 and all(any(c.startswith(t + " ") for t in triggers) for c in pairs.captions)
    (unzipped / names[0]).write_bytes(b"changed")
    assert not api.check(unzipped)["ok"]


def test_package_refuses_unknown_layouts_and_unfinished_runs(tmp_path):
    with pytest.raises(ValueError, match="unknown layout"):
        package(tmp_path, "parquet", tmp_path / "x.zip")
    with pytest.raises(FileNotFoundError, match="no finished protection"):
        package(tmp_path, "csv", tmp_path / "x.zip")
