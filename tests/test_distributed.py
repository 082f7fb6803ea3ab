"""torchrun with 2 CPU processes (gloo) against the single-process semantics."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmue.distributed import DistInfo

HELPERS = Path(__file__).parent / "helpers"


def torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def test_shard_splits_a_global_batch_in_rank_order():
    assert [DistInfo(r, 2).shard(8) for r in (0, 1)] == [slice(0, 4), slice(4, 8)]
    assert DistInfo().shard(5) == slice(0, 5) and not DistInfo().enabled and DistInfo().is_main


def test_two_ranks_give_the_single_process_loss_and_gradient(tmp_path):
    torchrun([str(HELPERS / "ddp_step.py"), str(tmp_path / "ddp.safetensors")], tmp_path)
    r = subprocess.run([sys.executable, str(HELPERS / "ddp_step.py"), str(tmp_path / "one.safetensors")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ddp, one = load_file(str(tmp_path / "ddp.safetensors")), load_file(str(tmp_path / "one.safetensors"))
    assert ddp["loss"].item() == pytest.approx(one["loss"].item(), rel=1e-5)
    assert set(ddp) == set(one) and len(one) > 10
    for k in one:
        assert torch.allclose(ddp[k], one[k], rtol=1e-3, atol=1e-6), k   # logit scale included


def test_two_ranks_protect_every_image_exactly_once(tiny_synth, tmp_path):
    out = tmp_path / "p"
    torchrun(["-m", "mmue", "protect", "--train-data", str(tiny_synth / "train.csv"), "--out", str(out),
              "--method", "mem", "--strength", "low", "--rounds", "2", "--surrogate-steps", "2", "--pgd-steps", "1",
              "--candidates", "2", "--batch-size", "16", "--device", "cpu"], tmp_path)
    m = json.loads((out / "private/manifest.json").read_text())
    assert m["world_size"] == 2 and m["n_images"] == 96
    # the engine refuses a round where an image was optimised 0 or 2 times; here: all of them, each round
    assert [r["images_optimised"] for r in m["rounds_log"]] == [96, 96]
    assert all(0 < e["linf_px"] <= 8 for e in m["images"]) and all(e["trigger"] for e in m["images"])
    assert len({e["trigger"] for e in m["images"]}) > 1
    assert not (out / ".mmue_state").exists() and len(list((out / "publish/images").glob("*.png"))) == 96
    lines = (out / "publish/train.csv").read_text().splitlines()
    assert len(lines) == 1 + 96 * 5   # written once, not once per rank


def test_two_ranks_protect_in_stages(small_synth, tmp_path):
    """Surrogates joined by ',' under torchrun: rank 0 alone checks the folder and writes the plan, every stage runs
    on both ranks, one copy comes out."""
    out = tmp_path / "p"
    torchrun(["-m", "mmue", "protect", "--train-data", str(small_synth / "train.csv"), "--out", str(out),
              "--method", "mem", "--strength", "low", "--rounds", "1", "--surrogate-steps", "2", "--pgd-steps", "1",
              "--candidates", "2", "--batch-size", "8", "--device", "cpu", "--surrogate", "mmue-tiny-rn,mmue-tiny-rn"],
             tmp_path)
    m = json.loads((out / "private/manifest.json").read_text())
    assert [(s["method"], s["config"]["eps_px"]) for s in m["stages"]] == [("mem-3", 4), ("em", 4)]
    assert m["world_size"] == 2 and m["n_images"] == 32 and m["max_linf_px"] <= 8
    assert sorted(p.name for p in out.iterdir()) == ["README.txt", "private", "publish"]
