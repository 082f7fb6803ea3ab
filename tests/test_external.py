"""Victims trained by open_clip's own training app, driven through its command line."""
import csv
import json

import pytest
import torch

from mmue.bench import BenchConfig
from mmue.data import read_pairs
from mmue.experiments import train_victim, victim_metrics
from mmue.external import architecture, is_external, write_app_csv
from mmue.models import load_model
from mmue.train import TrainConfig


def test_the_app_reads_one_tab_separated_row_per_caption_with_absolute_paths(tiny_synth, tmp_path):
    pairs = read_pairs(tiny_synth / "train.csv")
    out = write_app_csv(tiny_synth / "train.csv", tmp_path / "app.tsv")
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == len(pairs.captions)
    assert [r["title"] for r in rows] == [" ".join(c.split()) for c in pairs.captions]
    assert all(r["filepath"].startswith("/") for r in rows)
    assert rows[0]["filepath"] == str(pairs.image_path(pairs.caption_image[0]).resolve())


def test_victim_names_and_a_crop_defense_refused_for_the_app():
    assert is_external("open_clip_train:mmue-tiny-rn")
    assert architecture("open_clip_train:mmue-tiny-rn") == "mmue-tiny-rn"
    assert not is_external("mmue-tiny-rn")
    with pytest.raises(ValueError, match="own augmentation"):
        BenchConfig(victims=["open_clip_train:mmue-tiny-rn"], defenses=["none", "rrc-flip"]).validate()
    BenchConfig(victims=["mmue-tiny-rn", "open_clip_train:mmue-tiny-rn"], defenses=["none", "rrc-flip"],
                victim_defenses={"open_clip_train:mmue-tiny-rn": ["none", "jpeg-75"]}).validate()


@pytest.mark.slow
def test_open_clip_train_victim_trains_and_is_evaluated_like_any_other(small_synth, tmp_path):
    pytest.importorskip("webdataset", reason="pip install 'mmue[opencliptrain]'")
    run = tmp_path / "victim"
    cfg = TrainConfig(epochs=2, batch_size=16, warmup=1, seed=0)
    train_victim(small_synth / "train.csv", small_synth / "test.csv", run, "open_clip_train:mmue-tiny-rn", cfg, "cpu")
    params = json.loads((run / "params.json").read_text())
    assert params["trainer"] == "open_clip_train" and "--batch-size" in params["args"]
    trained = load_model(run, which="last").clip.state_dict()
    app = torch.load(run / "open_clip_train" / "victim" / "checkpoints" / "epoch_2.pt", weights_only=True)
    assert trained.keys() == app["state_dict"].keys()
    assert all(torch.equal(trained[k], app["state_dict"][k]) for k in trained)   # the app's last epoch, read back
    m = victim_metrics(run, small_synth / "test.csv", "cpu")
    assert m["best_epoch"] == 2 and 0 <= m["image_to_text_R@1"] <= 1
    # a finished victim is not trained again
    mtime = (run / "checkpoints" / "last.safetensors").stat().st_mtime_ns
    train_victim(small_synth / "train.csv", small_synth / "test.csv", run, "open_clip_train:mmue-tiny-rn", cfg, "cpu")
    assert (run / "checkpoints" / "last.safetensors").stat().st_mtime_ns == mtime
    # nor passed off as one of another recipe, as MMUE's own victims are not
    with pytest.raises(ValueError, match=r"epochs 2 \(asked: 3\)"):
        train_victim(small_synth / "train.csv", small_synth / "test.csv", run, "open_clip_train:mmue-tiny-rn",
                     TrainConfig(epochs=3, batch_size=16, warmup=1, seed=0), "cpu")
