"""Each hostile input of tests/helpers/hostile.py is either protected like any image or stopped with an error
that names the file and the row; the inputs are never modified; --skip-bad-images leaves out what it must."""
import hashlib
import sys
from pathlib import Path

import pytest

from mmue import api
from mmue.data import DataError, read_pairs
from mmue.data.images import load_images

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))
import hostile  # noqa: E402


def _digests(root: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*")
            if p.is_file() and not p.is_symlink()}


def _csv_of(folder: Path) -> Path:
    return next(folder.rglob("data.csv"))


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    return root, hostile.build(root)


def test_hostile_inputs_load_or_fail_clearly(cases):
    root, table = cases
    assert len(table) >= 25
    before = _digests(root)
    for name, (what, expected) in table.items():
        csv = _csv_of(root / name)
        try:
            pairs = read_pairs(csv)
            images = load_images(pairs, 64, progress=False)
            outcome = "ok"
        except DataError as e:
            outcome, msg = "error", str(e)
            assert str(csv) in msg or csv.name in msg, (name, msg)
            if name not in ("header-only", "empty-csv", "wrong-columns", "latin-1"):
                assert "row " in msg, (name, msg)          # the row the bad image or caption is on
        assert outcome == expected, (name, what)
        if outcome == "ok":
            assert images.shape[1:] == (3, 64, 64)
    assert _digests(root) == before                        # nothing was written into the inputs


def test_decompression_bomb_names_file_and_row(cases, monkeypatch):
    from PIL import Image
    root, _ = cases
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)   # 32x32 > 2x200 pixels: refused as a bomb
    with pytest.raises(DataError, match=r"row 2: .*decompression bomb"):
        load_images(read_pairs(_csv_of(root / "rgba")), 64, progress=False)


def test_skip_bad_images_protects_the_rest_and_lists_what_it_left_out(cases, tmp_path):
    root, _ = cases
    csv = _csv_of(root / "truncated-png")
    with pytest.raises(DataError, match=r"row 3: .*unreadable.*--skip-bad-images"):
        api.protect(csv, tmp_path / "a", "trigger-only", device="cpu", progress=False, rounds=0)
    m = api.protect(csv, tmp_path / "b", "trigger-only", device="cpu", progress=False, rounds=0, overwrite=True,
                    skip_bad_images=True)
    assert m["n_images"] == 1 and [s["source"] for s in m["skipped"]] == ["x.png"] and m["skipped"][0]["rows"] == [3]
    assert read_pairs(tmp_path / "b" / "publish" / "data.csv").captions[0].endswith("a good image")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"")
    (bad / "data.csv").write_text("filepath,caption\nx.png,empty\n")
    with pytest.raises(DataError, match="none of the 1 images"):
        api.protect(bad / "data.csv", tmp_path / "c", "trigger-only", device="cpu", progress=False, rounds=0,
                    skip_bad_images=True)
