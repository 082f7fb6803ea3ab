"""The GPU paper-scale driver (benchmarks/paper_scale.py), run end to end in its CPU smoke mode so it cannot rot."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import paper_scale  # noqa: E402


def test_strength_choice_falls_back_when_the_budget_is_short():
    proj = {"surrogate_steps_per_s": 10.0, "pgd_steps": 8,
            "data_pass_images_per_s": {"text+image": 200.0, "image only": 400.0}}
    args = dict(n_train=3000, epochs=20, n_test=1000, batch=128, n_methods=2, n_victims=2)
    fast, est = paper_scale.choose_strength(proj, 10_000, **args)
    assert fast == "high" and est["high"]["wall_s"] <= 10_000
    slow, est = paper_scale.choose_strength(proj, 200, **args)
    assert slow == "low" and all(e["wall_s"] > 200 for e in est.values())
    # a stronger preset never costs less
    assert est["high"]["protect_s"] > est["mid"]["protect_s"] > est["low"]["protect_s"]


@pytest.mark.slow
def test_smoke_run_writes_rows_and_table(tmp_path):
    out = tmp_path / "ps"
    cmd = [sys.executable, "paper_scale.py", "--smoke", "--out", str(out), "--methods", "mem-3"]
    r = subprocess.run(cmd, cwd=BENCH, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "paper_scale.jsonl").read_text().splitlines()]
    assert {(x["method"], x["victim"]) for x in rows} == {
        (m, v) for m in ("clean", "mem-3") for v in ("mmue-tiny-rn", "mmue-tiny-vit")}
    for x in rows:
        assert 0 <= x["last/image_to_text_R@1"] <= x["last/image_to_text_R@10"] <= 1
        assert x["epochs"] == 1
    assert all(x["mean_psnr_db"] > 30 for x in rows if x["method"] == "mem-3")
    md = (out / "paper_scale.md").read_text()
    assert "same arch" in md and "transfer" in md and "random guess" in md
    # a rerun finds every job finished and only rewrites the table
    r = subprocess.run(cmd, cwd=BENCH, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "done before" in r.stdout
