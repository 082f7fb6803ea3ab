import json

import numpy as np
import pytest
from PIL import Image

from mmue import api
from mmue.data import read_pairs
from mmue.protect import workflow
from mmue.protect.stages import STAGES_DIR, budget_shares, later_settings, split_surrogates

FAST = dict(rounds=1, surrogate_steps=2, pgd_steps=2, alpha=2 / 255, text_rounds=1, candidates=4, batch_size=16,
            trigger_len=3)


def test_budget_splits_into_whole_pixels_that_sum_to_it():
    assert budget_shares(8, 2) == [4, 4]
    assert budget_shares(8, 3) == [3, 3, 2]
    assert sum(budget_shares(16, 5)) == 16
    with pytest.raises(ValueError, match="cannot be split"):
        budget_shares(2, 3)


def test_later_stages_take_only_image_knobs():
    s = later_settings({"rounds": 4, "trigger_len": 12, "candidates": 8, "eot": "jpeg", "seed": 1, "eps": 8 / 255},
                       3, seed=99)
    assert s == {"rounds": 4, "eot": "jpeg", "eps": 3 / 255, "seed": 99}
    assert split_surrogates("a+b, c") == ["a+b", "c"]
    with pytest.raises(ValueError, match="empty name"):
        split_surrogates("a,,b")


def test_two_surrogates_one_after_the_other(small_synth, tmp_path, monkeypatch):
    """A 128 px then a 64 px surrogate at 4/255 each: one published copy within 8/255 of the originals, the first
    stage's triggers on its captions, a manifest measured against the originals; a run that dies before the end
    resumes without redoing a finished stage."""
    out = tmp_path / "prot"

    def crash(*a, **k):
        raise RuntimeError("killed")
    monkeypatch.setattr(workflow, "merge_manifests", crash)
    with pytest.raises(RuntimeError, match="killed"):
        api.protect(small_synth / "train.csv", out, "mem-3", "low", surrogate="mmue-tiny-rn-128,mmue-tiny-rn",
                    device="cpu", progress=False, seed=5, **FAST)
    stage1 = json.loads((out / STAGES_DIR / "1-mmue-tiny-rn-128/private/manifest.json").read_text())
    monkeypatch.undo()
    man = api.protect(small_synth / "train.csv", out, "mem-3", "low", surrogate="mmue-tiny-rn-128,mmue-tiny-rn",
                      device="cpu", progress=False, resume=True)
    assert not (out / STAGES_DIR).exists() and api.check(out / "publish")["ok"]
    assert [(s["method"], s["surrogate"], s["eps_px"]) for s in man["stages"]] == [
        ("mem-3", "mmue-tiny-rn-128", 4), ("em", "mmue-tiny-rn", 4)]
    assert man["stages"][0]["generation_s"] == stage1["generation_s"]           # resumed, not redone
    assert man["config"]["eps_px"] == 8 and man["config"]["seed"] == 5 and man["stages"][1]["config"]["seed"] == 5
    assert man["stages"][1]["config"]["trigger_len"] == 0
    src, pub = read_pairs(small_synth / "train.csv"), read_pairs(out / "publish/train.csv")
    linf = []
    for i, e in enumerate(man["images"]):
        assert e["source"] == src.images[i] and e["trigger"] == stage1["images"][i]["trigger"] != ""
        for c in pub.image_captions[i]:
            assert pub.captions[c] == f"{e['trigger']} {src.captions[c]}"
        a = np.asarray(Image.open(src.image_path(i)), dtype=np.int16)
        b = np.asarray(Image.open(pub.image_path(i)), dtype=np.int16)
        d = np.abs(a - b).max()
        assert d == e["linf_px"] and d <= 8
        linf.append(d)
    assert max(linf) > 4                               # the two stages' noises add up beyond one share
    assert man["max_linf_px"] == max(linf) and man["mean_psnr_db"] > 30
    assert api.protect(small_synth / "train.csv", out, surrogate="a,b", resume=True) == man   # finished: as it is


def test_stages_write_shards_and_lossy_files_measured_against_the_originals(small_synth, tmp_path):
    """Only the last stage writes the asked format; the copy's fidelity is read back from the shards."""
    out = tmp_path / "prot"
    man = api.protect(small_synth / "train.csv", out, "mem-3", "low", surrogate="mmue-tiny-rn,mmue-tiny-rn",
                      device="cpu", progress=False, seed=1, out_format="webdataset", image_format="jpeg",
                      quality=90, **FAST)
    assert man["data"].startswith("publish/shards/") and api.check(out / "publish")["ok"]
    assert man["image_format"] == "jpeg" and len(man["images"]) == 32
    src, pub = read_pairs(small_synth / "train.csv"), read_pairs(out / man["data"])
    a, b = np.asarray(Image.open(src.image_path(3)), dtype=np.int16), np.asarray(pub.open_image(3), dtype=np.int16)
    assert np.abs(a - b).max() == man["images"][3]["linf_px"]
