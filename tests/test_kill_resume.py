"""kill -9 at any moment, then --resume: the same files and triggers as a run that was never interrupted
(protect during the surrogate steps, the data pass and the export; train mid-epoch; bench between cells)."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

KILL = [sys.executable, str(Path(__file__).parent / "helpers" / "kill_at.py")]
PROTECT = ["--method", "mem-3", "--strength", "low", "--seed", "0", "--rounds", "2", "--surrogate-steps", "6",
           "--pgd-steps", "2", "--candidates", "2", "--batch-size", "16", "--device", "cpu"]

pytestmark = pytest.mark.slow


def _run(args, cwd, kill: tuple[str, int] | None = None) -> int:
    """The killed run in its own process (kill -9 at the Nth call of ``kill``); the others in this one."""
    if kill is None:
        from mmue.cli import main
        return main(["-q"] + args)
    cmd = KILL + [kill[0], str(kill[1]), "--", "-q"] + args
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600).returncode


def _published(out: Path) -> dict:
    files = {str(p.relative_to(out / "publish")): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in (out / "publish").rglob("*") if p.is_file()}
    triggers = [e["trigger"] for e in json.loads((out / "private/manifest.json").read_text())["images"]]
    return {"files": files, "triggers": triggers}


@pytest.mark.parametrize("where,n", [("mmue.protect.engine:clip_train_step", 9),          # round 2's surrogate
                                     ("mmue.protect.engine:MEMEngine.image_step", 2),   # round 2's data pass
                                     ("mmue.protect.export:atomic_write", 20)])          # export, image 20
def test_protect_killed_then_resumed_equals_uninterrupted(small_synth, tmp_path_factory, where, n):
    tiny_synth = small_synth
    ref = tmp_path_factory.getbasetemp() / "kill-ref"
    if not (ref / "private/manifest.json").exists():
        assert _run(["protect", "--train-data", str(tiny_synth / "train.csv"), "--out", str(ref)] + PROTECT,
                    tiny_synth.parent) == 0
    out = tmp_path_factory.mktemp("killed") / "p"
    args = ["protect", "--train-data", str(tiny_synth / "train.csv"), "--out", str(out)] + PROTECT
    assert _run(args, tiny_synth.parent, (where, n)) == -9                   # really killed there
    assert not (out / "private/manifest.json").exists()
    assert _run(args + ["--resume"], tiny_synth.parent) == 0              # the dead process's lock is stale
    assert _published(out) == _published(ref)
    assert not (out / ".mmue.lock").exists() and not (out / ".mmue_state").exists()


def test_protect_with_two_surrogates_killed_then_resumed_equals_uninterrupted(small_synth, tmp_path):
    # the second surrogate (and its optimiser) is checkpointed with the first: round 2 redone from round 1's
    # state gives the same noise only if both come back as they were
    args = ["protect", "--train-data", str(small_synth / "train.csv"), "--surrogate", "mmue-tiny-rn+mmue-tiny-vit"]
    ref, out = tmp_path / "ref", tmp_path / "killed"
    assert _run(args + ["--out", str(ref)] + PROTECT, small_synth.parent) == 0
    killed = args + ["--out", str(out)] + PROTECT
    assert _run(killed, small_synth.parent, ("mmue.protect.engine:MEMEngine.image_step", 2)) == -9
    assert _run(killed + ["--resume"], small_synth.parent) == 0
    assert _published(out) == _published(ref)


def test_train_killed_mid_epoch_then_resumed_equals_uninterrupted(small_synth, tmp_path):
    args = ["train", "--train-data", str(small_synth / "train.csv"), "--val-data", str(small_synth / "test.csv"),
            "--epochs", "3", "--batch-size", "8", "--seed", "0", "--device", "cpu"]
    assert _run(args + ["--out", str(tmp_path / "ref")], tmp_path) == 0
    # 32 images / 8 = 4 steps an epoch: step 6 is in the middle of epoch 2
    assert _run(args + ["--out", str(tmp_path / "k")], tmp_path, ("mmue.train:clip_train_step", 6)) == -9
    assert _run(args + ["--out", str(tmp_path / "k"), "--resume"], tmp_path) == 0
    def last(p):   # every metric of the last epoch (its wall time aside)
        return {k: v for k, v in json.loads((p / "summary.json").read_text())["last"].items() if k != "elapsed_s"}
    assert last(tmp_path / "k") == last(tmp_path / "ref")


def test_bench_killed_during_a_cell_then_rerun_equals_uninterrupted(small_synth, tmp_path):
    cfg = {"data": str(small_synth), "methods": ["clean", "random"], "seeds": [0], "epochs": 1,
           "defenses": ["none", "strip-2"]}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    args = ["bench", "--config", str(tmp_path / "c.json"), "--device", "cpu"]
    assert _run(args + ["--out", str(tmp_path / "ref")], tmp_path) == 0
    # 4 cells of 1 epoch, one step each (32 images, batch 128): step 3 is the third cell's victim
    assert _run(args + ["--out", str(tmp_path / "k")], tmp_path, ("mmue.train:clip_train_step", 3)) == -9
    assert len((tmp_path / "k" / "results.jsonl").read_text().splitlines()) == 2
    assert _run(args + ["--out", str(tmp_path / "k")], tmp_path) == 0
    def rows(p):   # every figure of every cell (wall times aside)
        return [{k: v for k, v in json.loads(x).items() if "elapsed" not in k and k != "generation_s"}
                for x in (p / "results.jsonl").read_text().splitlines()]
    assert rows(tmp_path / "k") == rows(tmp_path / "ref")
