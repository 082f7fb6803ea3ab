"""The published copy never carries the key, a default run's triggers are unpredictable, a copy can be checked,
and two processes never write one output folder."""
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from mmue import api
from mmue.cli import main
from mmue.protect.run import LOCK_FILE

QUICK = dict(rounds=0)   # trigger-only, no rounds: just the drawn triggers, exported


def _protect(src, out, **kw):
    return api.protect(src, out, "trigger-only", device="cpu", progress=False, **{**QUICK, **kw})


def test_default_runs_draw_secret_seeds_and_publish_no_key(small_synth, tmp_path):
    a = _protect(small_synth / "train.csv", tmp_path / "a")
    b = _protect(small_synth / "train.csv", tmp_path / "b")
    ta, tb = [e["trigger"] for e in a["images"]], [e["trigger"] for e in b["images"]]
    assert sum(x != y for x, y in zip(ta, tb)) > 0.9 * len(ta)          # not the same words per image index
    assert a["config"]["seed"] != b["config"]["seed"] and "operating system" in a["seed_source"]
    pub = tmp_path / "a" / "publish"
    public = json.loads((pub / "manifest.json").read_text())
    assert set(public) == {"protected_by", "data", "n_images", "n_captions", "files"}
    seed = str(a["config"]["seed"])
    for f in pub.rglob("*"):
        if f.suffix in (".json", ".csv", ".txt"):
            text = f.read_text()
            assert seed not in text, f
            # captions carry the drawn trigger words, which may be any word ("seeded"): look at the CSV's columns only
            named = text.splitlines()[0] if f.suffix == ".csv" else text
            assert "trigger" not in named and "seed" not in named, f
    assert (tmp_path / "a" / "private" / "manifest.json").is_file()
    assert "publish/" in (tmp_path / "a" / "README.txt").read_text()
    # an explicit seed is reproducible research: the same triggers again
    c = _protect(small_synth / "train.csv", tmp_path / "c", seed=5)
    d = _protect(small_synth / "train.csv", tmp_path / "d", seed=5)
    assert [e["trigger"] for e in c["images"]] == [e["trigger"] for e in d["images"]]
    assert "explicit" in c["seed_source"]


def test_check_finds_missing_changed_extra_and_leaked_files(small_synth, tmp_path, capsys):
    out = tmp_path / "p"
    _protect(small_synth / "train.csv", out)
    assert api.check(out)["ok"] and api.check(out / "publish")["ok"]
    copy = tmp_path / "copy"
    shutil.copytree(out / "publish", copy)          # what a person uploads, checked after copying
    assert main(["check", str(copy)]) == 0 and "ok:" in capsys.readouterr().out
    img = sorted((copy / "images").glob("*.png"))
    img[0].write_bytes(img[0].read_bytes() + b"x")
    img[1].unlink()
    (copy / "notes.txt").write_text("hello")
    shutil.copy(out / "private" / "manifest.json", copy / "images" / "manifest.json")
    r = api.check(copy)
    assert r["changed"] == [str(img[0].relative_to(copy))] and r["missing"] == [str(img[1].relative_to(copy))]
    assert "notes.txt" in r["extra"] and any("private manifest" in x for x in r["leaks"]) and not r["ok"]
    assert main(["check", str(copy)]) == 1 and "NOT OK" in capsys.readouterr().out
    with pytest.raises(ValueError, match="must not be published"):
        api.check(out / "private")
    assert main(["check", str(tmp_path / "nothing")]) != 0


def test_a_live_lock_refuses_a_second_writer_and_a_dead_one_is_taken_over(small_synth, tmp_path):
    out = tmp_path / "p"
    out.mkdir()
    live = {"pid": os.getppid(), "host": socket.gethostname(), "since": "earlier"}   # a process that runs
    (out / LOCK_FILE).write_text(json.dumps(live))
    with pytest.raises(ValueError, match="another mmue process"):
        _protect(small_synth / "train.csv", out, overwrite=True)
    assert (out / LOCK_FILE).exists()                                 # --overwrite removed nothing
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK_FILE).write_text(json.dumps({**live, "pid": dead.pid}))
    m = _protect(small_synth / "train.csv", out, overwrite=True)     # stale: taken over
    assert m["n_images"] == 32 and not (out / LOCK_FILE).exists()      # released at the end


def test_a_full_disk_stops_clearly_and_the_last_checkpoint_resumes(small_synth, tmp_path, monkeypatch, capsys):
    import errno
    import mmue.protect.store as store
    args = ["protect", "--train-data", str(small_synth / "train.csv"), "--method", "mem-3", "--strength", "low",
            "--seed", "0", "--rounds", "2", "--surrogate-steps", "2", "--pgd-steps", "1", "--candidates", "2",
            "--device", "cpu"]
    assert main(["-q"] + args + ["--out", str(tmp_path / "ref")]) == 0
    said = capsys.readouterr().out.splitlines()
    assert said[-4].startswith("publish this folder:") and said[-4].endswith("publish") and "private" in said[-3]
    assert said[-1] == api.LIMITS and "re-captions" in said[-1]     # every copy comes with what it does not stop
    real, calls = store.atomic_write, {"n": 0}

    def full(path, write):
        calls["n"] += 1
        if calls["n"] == 3:   # triggers of round 0 and 1 went through; round 2 dies after its noise checkpoint
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, write)
    monkeypatch.setattr(store, "atomic_write", full)
    assert main(["-q"] + args + ["--out", str(tmp_path / "k")]) == 3
    err = capsys.readouterr().err
    assert "No space left on device" in err and "--resume" in err
    monkeypatch.setattr(store, "atomic_write", real)
    assert main(["-q"] + args + ["--out", str(tmp_path / "k"), "--resume"]) == 0
    same = lambda p: json.loads((p / "publish/manifest.json").read_text())["files"]   # noqa: E731
    assert same(tmp_path / "k") == same(tmp_path / "ref")
