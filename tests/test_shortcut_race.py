"""benchmarks/shortcut_race.py: the noise-alone images it trains on, and one tiny race end to end."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import shortcut_race  # noqa: E402


def test_noise_alone_is_the_copy_minus_the_original_on_grey():
    clean = np.array([[[0, 100, 255]]], dtype=np.uint8)
    released = np.array([[[5, 92, 250]]], dtype=np.uint8)
    assert shortcut_race.noise_only(clean, released, 8, None).tolist() == [[[133, 120, 123]]]
    r = shortcut_race.noise_only(np.zeros((16, 16, 3), np.uint8), None, 8, np.random.default_rng(0))
    assert r.dtype == np.uint8 and r.min() >= 120 and r.max() <= 136 and len(np.unique(r)) > 10
    with pytest.raises(ValueError, match="same size"):
        shortcut_race.noise_only(clean, np.zeros((2, 1, 3), np.uint8), 8, None)


def test_shuffled_background_puts_the_noise_on_another_image():
    clean = np.array([[[0, 100, 255]]], dtype=np.uint8)
    released = np.array([[[5, 92, 250]]], dtype=np.uint8)
    other = np.array([[[50, 3, 200]]], dtype=np.uint8)
    assert shortcut_race.noise_only(clean, released, 8, None, other).tolist() == [[[55, 0, 195]]]
    with pytest.raises(ValueError, match="one size"):
        shortcut_race.noise_only(clean, released, 8, None, np.zeros((1, 2, 3), np.uint8))
    for n in (2, 3, 50):
        d = shortcut_race.derangement(n, seed=1)
        assert sorted(d) == list(range(n)) and all(d[i] != i for i in range(n))
    assert shortcut_race.derangement(50, 1) == shortcut_race.derangement(50, 1) != shortcut_race.derangement(50, 2)


@pytest.mark.slow
def test_race_trains_each_victim_on_content_and_noise(tiny_synth, tmp_path):
    from mmue import api
    prot = tmp_path / "prot"
    api.protect(tiny_synth / "train.csv", prot, "em", strength="low", device="cpu", progress=False, rounds=1,
                surrogate_steps=2, pgd_steps=1)
    out = tmp_path / "race"
    cmd = [sys.executable, "shortcut_race.py", "--clean", str(tiny_synth / "train.csv"), "--noise",
           f"em={prot / 'publish/train.csv'}", "--noise", "random", "--victims", "mmue-tiny-rn", "--epochs", "1",
           "--subset", "16", "--out", str(out)]
    r = subprocess.run(cmd, cwd=BENCH, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "race.jsonl").read_text().splitlines()]
    assert {x["condition"] for x in rows} == {"content", "em", "random"} and all(x["epoch"] == 1 for x in rows)
    assert "| mmue-tiny-rn | em |" in r.stdout
    # the noise-alone copy is grey plus exactly the released noise; the originals are untouched
    from mmue.data.pairs import read_pairs
    c, p = read_pairs(tiny_synth / "train.csv"), read_pairs(prot / "publish/train.csv")
    n = read_pairs(out / "data/em/train.csv")
    a, b = (np.asarray(s.open_image(0), dtype=np.int16) for s in (c, p))
    assert np.array_equal(np.asarray(n.open_image(0), dtype=np.int16), np.clip(128 + b - a, 0, 255))
    assert len(read_pairs(out / "data/em/subset.csv").images) == 16
