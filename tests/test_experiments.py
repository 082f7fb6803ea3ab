import pytest

from mmue.experiments import engine_settings, ensure_protected


def test_a_finished_copy_is_reused_only_for_the_same_settings(tiny_synth, tmp_path):
    out, quick = tmp_path / "prot", dict(rounds=0, trigger_len=3)
    first = ensure_protected(tiny_synth / "train.csv", out, "trigger-only", "low", 0, "cpu", **quick)
    again = ensure_protected(tiny_synth / "train.csv", out, "trigger-only", "low", 0, "cpu", image_format="png", **quick)
    assert again == first                       # nothing redone; api.protect's own options are not settings
    with pytest.raises(ValueError, match=r"trigger_len 3 \(asked: 5\)"):
        ensure_protected(tiny_synth / "train.csv", out, "trigger-only", "low", 0, "cpu", rounds=0, trigger_len=5)
    with pytest.raises(ValueError, match="seed"):
        ensure_protected(tiny_synth / "train.csv", out, "trigger-only", "low", 1, "cpu", **quick)
    assert engine_settings({"trigger_len": 5, "public": "x.csv", "quality": 90}) == {"trigger_len": 5}
