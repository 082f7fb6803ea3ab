import math

import pytest
import torch
from safetensors.torch import load_file

from mmue import api
from mmue.data import read_pairs
from mmue.data.encoded import EncodedPairs
from mmue.metrics import random_guess
from mmue.models import create_model, load_model
from mmue.runs import RunDir, RunDirError
from mmue.optim import lr_at, param_groups
from mmue.train import TrainConfig, evaluate

CFG = dict(epochs=6, batch_size=32, lr=2e-3, wd=0.1, warmup=3, seed=0)


def test_lr_schedule_warmup_then_cosine():
    assert lr_at(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(10, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(55, 1.0, 10, 100) == pytest.approx(0.5)
    assert lr_at(100, 1.0, 10, 100) == pytest.approx(0.0, abs=1e-12)


def test_no_weight_decay_on_norms_biases_and_scale():
    m = create_model("mmue-tiny-rn")
    no_wd, wd = param_groups(m, 0.2)
    names = {id(p): n for n, p in m.named_parameters()}
    assert any("logit_scale" in names[id(p)] for p in no_wd["params"])
    assert all(p.ndim >= 2 for p in wd["params"])
    assert not any("bias" in names[id(p)] for p in wd["params"])


def test_training_lowers_loss_and_beats_random(tiny_synth, tmp_path):
    cfg = TrainConfig(**{**CFG, "epochs": 20, "batch_size": 16, "lr": 1e-3, "warmup": 10})
    summary = api.train(tiny_synth / "train.csv", tmp_path / "run", config=cfg, device="cpu", progress=False)
    run = RunDir(tmp_path / "run")
    res = run.results()
    assert [r["epoch"] for r in res] == list(range(1, 21))
    assert res[-1]["train_loss"] < res[0]["train_loss"] - 0.3
    assert all(0 <= math.log(r["logit_scale"]) <= math.log(100) + 1e-6 for r in res)
    assert (run.checkpoints / "last.safetensors").exists() and (run.path / "params.json").exists()
    assert summary["best_epoch"] is not None
    # the model has learned its training pairs: far above random guessing on them
    model = load_model(tmp_path / "run", which="last")
    enc = EncodedPairs.build(read_pairs(tiny_synth / "train.csv"), model.image_size, model.codec.encode, False)
    m = evaluate(model, enc)
    rg = random_guess(enc.caption_image, enc.n_images)
    assert m["text_to_image_R@5"] > 3 * rg["text_to_image_R@5"]
    assert m["image_to_text_R@5"] > 2 * rg["image_to_text_R@5"]


def test_existing_run_dir_refused(tiny_synth, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "something").write_text("x")
    with pytest.raises(RunDirError, match="--resume"):
        api.train(tiny_synth / "train.csv", tmp_path / "run", config=TrainConfig(**CFG), device="cpu")
    with pytest.raises(RunDirError, match="nothing to resume"):
        api.train(tiny_synth / "train.csv", tmp_path / "new", config=TrainConfig(**CFG), device="cpu", resume=True)


def test_resume_after_interruption_matches_uninterrupted(tiny_synth, tmp_path, monkeypatch):
    cfg = TrainConfig(**{**CFG, "epochs": 4})
    api.train(tiny_synth / "train.csv", tmp_path / "full", config=cfg, val_data=tiny_synth / "test.csv",
              device="cpu", progress=False)

    calls = {"n": 0}
    real_append = RunDir.append_result

    def dying_append(self, record):
        real_append(self, record)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed after the second epoch
    monkeypatch.setattr(RunDir, "append_result", dying_append)
    with pytest.raises(KeyboardInterrupt):
        api.train(tiny_synth / "train.csv", tmp_path / "cut", config=cfg, val_data=tiny_synth / "test.csv",
                  device="cpu", progress=False)
    monkeypatch.setattr(RunDir, "append_result", real_append)
    assert [r["epoch"] for r in RunDir(tmp_path / "cut").results()] == [1, 2]
    api.train(tiny_synth / "train.csv", tmp_path / "cut", config=cfg, val_data=tiny_synth / "test.csv",
              device="cpu", resume=True, progress=False)

    a = load_file(str(tmp_path / "full/checkpoints/last.safetensors"))
    b = load_file(str(tmp_path / "cut/checkpoints/last.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    ra, rb = RunDir(tmp_path / "full").results(), RunDir(tmp_path / "cut").results()
    assert [r["epoch"] for r in rb] == [1, 2, 3, 4]
    assert ra[-1]["train_loss"] == pytest.approx(rb[-1]["train_loss"], abs=1e-6)


def test_crop_augment_is_validated_recorded_and_changes_training(tiny_synth, tmp_path):
    """``augment="crop-0.9"`` (open_clip_train's default view) trains on resampled crops, seeded."""
    with pytest.raises(ValueError, match="crop-S"):
        TrainConfig(augment="crop-2").validate()
    short = {**CFG, "epochs": 1}
    plain = api.train(tiny_synth / "train.csv", tmp_path / "plain", config=TrainConfig(**short), device="cpu",
                      progress=False)
    runs = [api.train(tiny_synth / "train.csv", tmp_path / f"crop{i}", config=TrainConfig(**short, augment="crop-0.9"),
                      device="cpu", progress=False) for i in range(2)]
    assert runs[0]["last"]["train_loss"] == pytest.approx(runs[1]["last"]["train_loss"], abs=1e-6)
    assert runs[0]["last"]["train_loss"] != pytest.approx(plain["last"]["train_loss"], abs=1e-4)
    assert RunDir(tmp_path / "crop0").params()["augment"] == "crop-0.9"


def test_rrc_whole_trains_on_whole_photos(tmp_path):
    """``augment="rrc-whole"`` reads crops from each photo whole (twice the model's size, native size kept)."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(12):
        w, h = (150, 50) if i % 2 else (40, 90)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"img/{i}.png")
        rows.append(f"img/{i}.png,photo {i}\n")
    (tmp_path / "d.csv").write_text("filepath,caption\n" + "".join(rows))
    model = create_model("mmue-tiny-rn")
    whole = api.load_encoded(tmp_path / "d.csv", model, whole_scale=2)
    assert whole.images.shape == (12, 3, 128, 128) and whole.sizes[:2].tolist() == [[40, 90], [150, 50]]
    cfg = TrainConfig(**{**CFG, "epochs": 1, "batch_size": 6, "augment": "rrc-whole"})
    summary = api.train(tmp_path / "d.csv", tmp_path / "run", config=cfg, device="cpu", progress=False)
    assert summary["last"]["train_loss"] > 0 and RunDir(tmp_path / "run").params()["augment"] == "rrc-whole"
