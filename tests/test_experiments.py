import pytest

from mmue.experiments import engine_settings, ensure_protected
from mmue.protect import workflow
from mmue.protect.stages import STAGES_DIR


def test_a_finished_copy_is_reused_only_for_the_same_settings(tiny_synth, tmp_path):
    out, quick = tmp_path / "prot", dict(rounds=0, trigger_len=3)
    first = ensure_protected(tiny_synth / "train.csv", out, "trigger-only", "low", 0, "cpu", **quick)
    again = ensure_protected(tiny_synth / "train.csv", out, "trigger-only", "low", 0, "cpu", image_format="png",
                             **quick)
    assert again == first                       # nothing redone; protect's own options are not settings
    with pytest.raises(ValueError, match=r"trigger_len 3 \(asked: 5\)"):
        ensure_protected(tiny_synth / "train.csv", out, "trigger-only", "low", 0, "cpu", rounds=0, trigger_len=5)
    with pytest.raises(ValueError, match="seed"):
        ensure_protected(tiny_synth / "train.csv", out, "trigger-only", "low", 1, "cpu", **quick)
    assert engine_settings({"trigger_len": 5, "public": "x.csv", "quality": 90}) == {"trigger_len": 5}


def test_an_interrupted_copy_in_stages_is_resumed(small_synth, tmp_path, monkeypatch):
    out, quick = tmp_path / "prot", dict(rounds=0, surrogate="mmue-tiny-rn,mmue-tiny-rn")

    def crash(*a, **k):
        raise RuntimeError("killed")
    monkeypatch.setattr(workflow, "merge_manifests", crash)
    with pytest.raises(RuntimeError, match="killed"):
        ensure_protected(small_synth / "train.csv", out, "trigger-only", "low", 0, "cpu", **quick)
    monkeypatch.undo()
    assert (out / STAGES_DIR).exists()
    man = ensure_protected(small_synth / "train.csv", out, "trigger-only", "low", 0, "cpu", **quick)
    assert [s["surrogate"] for s in man["stages"]] == ["mmue-tiny-rn", "mmue-tiny-rn"]
    assert not (out / STAGES_DIR).exists()


def test_a_victim_folder_is_reused_only_for_its_own_training_data(tmp_path):
    import json
    from mmue.experiments import check_recipe
    from mmue.train import TrainConfig
    run, cfg = tmp_path / "victim", TrainConfig(seed=0)
    run.mkdir()
    (run / "params.json").write_text(json.dumps({"model": "m", "seed": 0, "train_data": str(tmp_path / "a/train.csv")}))
    check_recipe(run, "m", cfg, tmp_path / "a" / "train.csv")                 # its own data: reused
    with pytest.raises(ValueError, match=r"train_data .*a/train.csv.* \(asked: .*b/train.csv"):
        check_recipe(run, "m", cfg, tmp_path / "b" / "train.csv")


def test_a_victim_is_not_reused_when_its_training_file_now_holds_other_data(small_synth, tmp_path):
    """`mmue verify` (and the bench's owner mix) rewrite one training file per victim: an owner who verifies a new
    copy into the same folder must not be shown the verdict of the victim trained on the old one."""
    import csv
    import json
    from mmue.experiments import PINNED, train_victim
    from mmue.train import TrainConfig
    mix, run, cfg = tmp_path / "train-protected.csv", tmp_path / "victim", TrainConfig(seed=0, epochs=1)
    rows = list(csv.DictReader(open(small_synth / "train.csv")))
    for row in rows:
        row["filepath"] = str(small_synth / row["filepath"])

    def write(caption_of):
        with open(mix, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows({**r, "caption": caption_of(r)} for r in rows)
    write(lambda r: r["caption"])
    train_victim(mix, small_synth / "test.csv", run, "mmue-tiny-rn", cfg, "cpu")
    pinned = json.loads((run / "params.json").read_text())[PINNED]
    assert pinned["n_images"] == len({r["filepath"] for r in rows})
    stamp = (run / "summary.json").stat().st_mtime
    train_victim(mix, small_synth / "test.csv", run, "mmue-tiny-rn", cfg, "cpu")   # the same data: found again
    assert (run / "summary.json").stat().st_mtime == stamp
    write(lambda r: r["caption"] + " zq")                                          # another copy, same file name
    with pytest.raises(ValueError, match="other images or captions in .*train-protected.csv"):
        train_victim(mix, small_synth / "test.csv", run, "mmue-tiny-rn", cfg, "cpu")


def test_a_results_row_of_another_release_does_not_pass_for_this_cell():
    from mmue.bench import _cell_key, _row_key
    row = {"method": "mem-3", "victim": "v", "seed": 0, "defense": "none", "strength": "low", "surrogate": "s"}
    assert _row_key(row) == _cell_key("mem-3", "v", 0, "none", "low", "s", {})
    assert _row_key(row) != _cell_key("mem-3", "v", 0, "none", "mid", "s", {})            # another strength
    assert _row_key(row) != _cell_key("mem-3", "v", 0, "none", "low", "s2", {})           # another surrogate
    tuned = {**row, "protect": {"trigger_len": 12}}
    assert _row_key(tuned) == _cell_key("mem-3", "v", 0, "none", "low", "s", {"trigger_len": 12})
    assert _row_key(tuned) != _row_key(row)
    clean = {**row, "method": "clean", "strength": "mid", "surrogate": "s2"}             # clean data is clean
    assert _row_key(clean) == _cell_key("clean", "v", 0, "none", "low", "s", {"trigger_len": 12})
