import json
import zipfile

import pytest

from mmue import api
from mmue.data import read_pairs
from mmue.data.layouts import detect
from mmue.protect.package import package
from mmue.runs import RunDirError
from tests.helpers.layouts import make_layout


@pytest.fixture(scope="module")
def protected(tiny_synth, tmp_path_factory):
    """One protection, packaged below into every layout (reading each layout is tests/test_layouts.py)."""
    tmp = tmp_path_factory.mktemp("pkg")
    folder = make_layout(tiny_synth, tmp / "in", "captions-txt", n=4)
    man = api.protect(folder, tmp / "out", "trigger-only", device="cpu", progress=False, rounds=0)
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
    pairs = read_pairs(unzipped)
    triggers = {e["trigger"] for e in man["images"]}
    assert pairs.n_images == 4 and all(any(c.startswith(t + " ") for t in triggers) for c in pairs.captions)
    (unzipped / names[0]).write_bytes(b"changed")
    assert not api.check(unzipped)["ok"]


def test_package_refuses_unknown_layouts_and_unfinished_runs(tmp_path):
    with pytest.raises(ValueError, match="unknown layout"):
        package(tmp_path, "parquet", tmp_path / "x.zip")
    with pytest.raises(FileNotFoundError, match="no finished protection"):
        package(tmp_path, "csv", tmp_path / "x.zip")


def test_protecting_a_folder_packs_its_copy_in_that_layout(protected, tmp_path):
    out, man = protected
    with zipfile.ZipFile(out / api.PACKAGED) as z:   # beside publish/, in the folder's own layout
        names = set(z.namelist())
        layout = json.loads(z.read("manifest.json"))["layout"]
    assert layout == "captions-txt" and sum(n.endswith(".txt") for n in names) == 4
    assert (out / "publish" / "captions.csv").is_file() and man["train_data"] == str(out.parent / "in")
    with pytest.raises(RunDirError, match="inside the input folder"):   # its copy would be read as input next time
        api.protect(out.parent / "in", out.parent / "in" / "out", "trigger-only", device="cpu", rounds=0)


def test_check_reads_the_zip_itself(protected, tmp_path):
    out, _ = protected
    packed = out / api.PACKAGED
    r = api.check(packed)
    assert r["ok"] and r["n_files"] == 8 and r["folder"] == str(packed)
    # zipped again under one top folder, as people re-zip a folder: still found; an edit and an extra file are not
    with zipfile.ZipFile(packed) as z, zipfile.ZipFile(tmp_path / "again.zip", "w") as again:
        names = z.namelist()
        for n in names:
            data = z.read(n)
            again.writestr("my copy/" + n, b"edited" if n == names[0] else data)
        again.writestr("my copy/notes.txt", b"mine")
    r = api.check(tmp_path / "again.zip")
    assert not r["ok"] and r["changed"] == [names[0]] and r["extra"] == ["notes.txt"] and not r["missing"]
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("a.png", b"x")
    with pytest.raises(FileNotFoundError, match="no manifest.json inside"):
        api.check(tmp_path / "other.zip")
