import json
from pathlib import Path

import pytest

from mmue.bench import BenchConfig, defense_matrix, run_bench, summary_table, worst_case_table
from mmue.demo import demo_table, run_demo

TINY_PROTECT = dict(rounds=1, surrogate_steps=2, pgd_steps=1, candidates=2, batch_size=32)


@pytest.mark.slow
def test_demo_end_to_end_and_rerun_skips(tmp_path):
    out = tmp_path / "demo"
    r = run_demo(out, n_train=64, n_test=32, epochs=2, device="cpu", **TINY_PROTECT)
    saved = json.loads((out / "results.json").read_text())
    assert saved["n_test_images"] == 32
    for name in ("clean", "mem-3"):
        assert 0 <= saved[name]["image_to_text_R@1"] <= 1 and "text_to_image_R@10" in saved[name]
    assert saved["protection"]["max_linf_px"] <= 8
    assert "random guess" in demo_table(r)
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "Released images" in page and "SSIM" in page
    assert (out / "report.md").exists() and (out / "examples.png").exists() and (out / "curves.png").exists()
    stamp = (out / "victims/clean/summary.json").stat().st_mtime
    run_demo(out, n_train=64, n_test=32, epochs=2, device="cpu", **TINY_PROTECT)   # nothing is redone
    assert (out / "victims/clean/summary.json").stat().st_mtime == stamp


def test_bench_grid_skips_finished_cells(tiny_synth, tmp_path):
    cfg = BenchConfig(data=str(tiny_synth), methods=["clean", "random"], seeds=[0], epochs=1, protect=TINY_PROTECT,
                      defenses=["none", "strip-2"])
    rows = run_bench(cfg, tmp_path / "b", device="cpu")
    assert [(r["method"], r["seed"], r["defense"]) for r in rows] == [
        ("clean", 0, "none"), ("clean", 0, "strip-2"), ("random", 0, "none"), ("random", 0, "strip-2")]
    assert rows[2]["max_linf_px"] <= 8 and "last/image_to_text_R@1" in rows[1] and "best/text_to_image_R@5" in rows[1]
    again = run_bench(cfg, tmp_path / "b", device="cpu")
    assert len(again) == 4                                    # finished cells are not rerun
    # a config whose cells the finished rows would pass for is refused before any work: another recipe, data or
    # protection under the same method name (the rows name neither, and neither do the victims' folders)
    for change, named in ((dict(epochs=2), "epochs 1 (this config: 2)"), (dict(train={"lr": 1e-4}), "train"),
                          (dict(data=str(tmp_path)), "data"), (dict(strength="mid"), "random cells"),
                          (dict(protect={**TINY_PROTECT, "rounds": 2}), "settings")):
        with pytest.raises(ValueError, match="another --out") as e:
            run_bench(BenchConfig(**{**cfg.__dict__, **change}), tmp_path / "b", device="cpu")
        assert named in str(e.value)
    assert len((tmp_path / "b" / "results.jsonl").read_text().splitlines()) == 4
    table = summary_table(again, tiny_synth / "test.csv")
    assert "random guess" in table and "clean" in table and "strip-2" in table
    assert "last epoch" in (tmp_path / "b" / "report.md").read_text()
    matrix = defense_matrix(again, "mmue-tiny-rn", 1, tiny_synth / "test.csv").splitlines()
    assert matrix[1].split() == ["method", "none", "strip-2"]
    r = next(r for r in again if r["method"] == "random" and r["defense"] == "strip-2")
    assert matrix[3].startswith("random") and (f"{100 * r['last/image_to_text_R@1']:.1f} / "
                                               f"{100 * r['last/text_to_image_R@1']:.1f} (1)") in matrix[3]
    assert "methods x defenses" in (tmp_path / "b" / "report.md").read_text()
    assert "worst case over the attackers" in (tmp_path / "b" / "report.md").read_text()
    # every victim recorded its recall before training: the learning-gain table is last minus that
    assert all("init/image_to_text_R@1" in r for r in again)
    gain = summary_table(again, None, "gain")
    clean = next(r for r in again if r["method"] == "clean" and r["defense"] == "none")
    expected = 100 * (clean["last/image_to_text_R@1"] - clean["init/image_to_text_R@1"])
    assert f"{expected:5.1f} ±" in gain.splitlines()[2] and "learning gain" in gain


def test_worst_case_takes_the_best_attacker_by_seed_mean():
    def row(method, victim, defense, seed, r1, r10=0.5):
        return {"method": method, "victim": victim, "defense": defense, "seed": seed,
                **{f"last/{d}_R@{k}": (r1 if k == 1 else r10) for d in ("image_to_text", "text_to_image")
                   for k in (1, 5, 10)}}
    rows = [row("mem-3", "a", "none", 0, 0.01), row("mem-3", "a", "none", 1, 0.03),      # mean 2 %
            row("mem-3", "a", "jpeg-75", 0, 0.05), row("mem-3", "a", "jpeg-75", 1, 0.0),  # mean 2.5 %: worst
            row("mem-3", "b", "none", 0, 0.04)]                                             # max single, 1 seed
    line = worst_case_table(rows).splitlines()[2].split()
    assert line[:4] == ["mem-3", "3", "4.0", "b"]      # 4 % by b / none beats the 2-seed means
    rows[-1] = row("mem-3", "b", "none", 0, 0.02)
    line = worst_case_table(rows).splitlines()[2].split()
    assert line[2:7] == ["2.5", "a", "/", "jpeg-75", "(2)"]


def test_defense_matrix_keeps_long_composed_names_apart():
    rows = [{"method": "mem-3", "victim": "a", "defense": d, "seed": 0, "last/image_to_text_R@1": 0.125,
             "last/text_to_image_R@1": 0.25} for d in ("jpeg-75", "rare-10+jpeg-75+rrc-flip", "jpeg-30")]
    header, row = defense_matrix(rows, "a").splitlines()[1:3]
    assert header.split() == ["method", "jpeg-75", "rare-10+jpeg-75+rrc-flip", "jpeg-30"]
    assert row.split() == ["mem-3"] + ["12.5", "/", "25.0", "(1)"] * 3


def test_bench_victim_defenses(tmp_path):
    cfg = BenchConfig(victims=["mmue-tiny-rn", "mmue-tiny-vit"], defenses=["none", "jpeg-75"],
                      victim_defenses={"mmue-tiny-vit": ["rare-10+jpeg-75+rrc-flip"]}).validate()
    assert cfg.cells() == [("mmue-tiny-rn", "none"), ("mmue-tiny-rn", "jpeg-75"),
                           ("mmue-tiny-vit", "rare-10+jpeg-75+rrc-flip")]
    with pytest.raises(ValueError, match="not among victims"):
        BenchConfig(victim_defenses={"mmue-small-rn": ["none"]}).validate()
    with pytest.raises(ValueError, match="unknown defense"):
        BenchConfig(victim_defenses={"mmue-tiny-rn": ["jpeg-75+sharpen"]}).validate()


def test_bench_config_rejects_unknown_keys(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"methods": ["clean"], "sedes": [0]}))
    with pytest.raises(ValueError, match="sedes"):
        BenchConfig.load(p)


def test_ssim():
    import torch
    from mmue.quality import ssim
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (3, 32, 32), generator=g, dtype=torch.uint8)
    assert ssim(a, a) == pytest.approx(1.0)
    b = (a.int() + torch.randint(-8, 9, a.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    c = (a.int() + torch.randint(-60, 61, a.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    assert 1.0 > ssim(a, b) > ssim(a, c)


def test_bench_zeroshot_table_tap_and_unknown_methods(tmp_path):
    from mmue import api
    data = tmp_path / "data"
    api.synth(data, n_train=48, n_test=24, captions_per_image=2, zeroshot_per_class=2)
    cfg = BenchConfig(data=str(data), methods=["clean", "tap"], seeds=[0], epochs=1, protect=TINY_PROTECT)
    rows = run_bench(cfg, tmp_path / "b", device="cpu")
    assert {r["method"] for r in rows} == {"clean", "tap"}
    for r in rows:
        assert 0 <= r["last/zeroshot_acc1"] <= r["last/zeroshot_acc5"] <= 1
        assert r["last/zeroshot_chance_acc1"] == pytest.approx(1 / 12)
    tap = next(r for r in rows if r["method"] == "tap")
    assert 1 <= tap["max_linf_px"] <= 8 and tap["mean_psnr_db"] < 60   # error-maximising noise was written
    assert "zero-shot classification" in (tmp_path / "b" / "report.md").read_text()
    with pytest.raises(ValueError, match="mmue methods"):
        run_bench(BenchConfig(data=str(data), methods=["mem-9"]), tmp_path / "c", device="cpu")


def test_parallel_bench_splits_by_victim_sharing_protections(tmp_path):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from parallel_bench import split
    cfg = tmp_path / "g.json"
    cfg.write_text(json.dumps({"methods": ["clean", "mem-3"], "seeds": [0], "victims": ["a", "b"],
                               "defenses": ["none", "jpeg-75"], "victim_defenses": {"b": ["none"]}}))
    assert [n for n, _, _ in split(cfg)] == ["clean-s0", "mem-3-s0"]
    workers = split(cfg, by_victim=True)
    assert [(n, w) for n, _, w in workers] == [("clean-s0", None), ("clean-s0-b", None),   # clean: nothing to wait for
                                               ("mem-3-s0", None), ("mem-3-s0-b", "mem-3-s0")]
    b = workers[-1][1]
    assert b["victims"] == ["b"] and b["victim_defenses"] == {"b": ["none"]} and b["methods"] == ["mem-3"]
    assert BenchConfig(**{k: v for k, v in workers[2][1].items()}).cells() == [("a", "none"), ("a", "jpeg-75")]
    # at most one cell per worker: victim a's two defenses in two workers, both sharing the first one's protection
    cut = split(cfg, by_victim=True, max_cells=1)
    assert [(n, w) for n, _, w in cut][3:] == [("mem-3-s0", None), ("mem-3-s0-a-2", "mem-3-s0"),
                                               ("mem-3-s0-b", "mem-3-s0")]
    assert [BenchConfig(**c).cells() for _, c, _ in cut[3:]] == [[("a", "none")], [("a", "jpeg-75")], [("b", "none")]]


def test_every_experiment_config_in_the_docs_still_loads():
    # docs/results.md cites these as the commands behind its figures: they must stay runnable after refactors
    root = Path(__file__).resolve().parents[1] / "docs" / "results"
    configs = [p for p in sorted(root.glob("*.json")) if "methods" in json.loads(p.read_text())]
    assert len(configs) >= 90
    for p in configs:
        BenchConfig.load(p)
    with pytest.raises(ValueError, match="unknown settings"):       # a typo fails before anything trains
        BenchConfig(methods=["clean", "mem-3"], protect={"trigger_lenn": 12}).validate()
    with pytest.raises(ValueError, match="trigger_dropout must be <= 0.99"):
        BenchConfig(methods=["mem-3"], protect={"trigger_dropout": 2}).validate()
    BenchConfig(methods=["mem-3"], protect={"image_format": "jpeg", "quality": 90}).validate()   # api.protect's own


def test_each_release_is_defended_from_its_own_files(tiny_synth, tmp_path):
    # every protected copy's CSV sits in its folder's publish/: the defended copy must be named by the release,
    # or the second seed (or method) trains on the first one's images (a bug the bench once had)
    cfg = BenchConfig(data=str(tiny_synth), methods=["random"], seeds=[0, 1], epochs=1, protect=TINY_PROTECT,
                      defenses=["strip-2"])
    run_bench(cfg, tmp_path / "b", device="cpu")
    stamps = [json.loads(p.read_text()) for p in sorted((tmp_path / "b" / "defended").glob("*/defense.json"))]
    releases = sorted(Path(s["source"]).parents[1].name for s in stamps)
    assert releases == ["random-low-mmue-tiny-rn-s0", "random-low-mmue-tiny-rn-s1"]
    for stamp_file in (tmp_path / "b" / "defended").glob("*/defense.json"):
        release = Path(json.loads(stamp_file.read_text())["source"]).parent
        first = next(p for p in (stamp_file.parent / "images").rglob("*") if p.is_symlink())
        assert release.resolve() in first.resolve().parents


def test_a_stack_adds_each_stage_noise_to_the_previous_release(tiny_synth, tmp_path):
    # a stage protects the previous stage's published copy: the victim trains on both noises, and the row's
    # fidelity is measured against the original images (up to the sum of the stages' budgets)
    stage = {"method": "random", "protect": {**TINY_PROTECT, "eps": 2 / 255}}
    cfg = BenchConfig(data=str(tiny_synth), methods=["random"], seeds=[0], epochs=1,
                      protect={**TINY_PROTECT, "eps": 4 / 255}, stack=[stage])
    rows = run_bench(cfg, tmp_path / "b", device="cpu")
    first = tmp_path / "b" / "protected" / "random-low-mmue-tiny-rn-s0"
    second = first.parent / f"{first.name}+1-random-mmue-tiny-rn"
    assert json.loads((second / "private" / "manifest.json").read_text())["max_linf_px"] == 2
    (row,) = rows
    assert 4 < row["max_linf_px"] <= 6 and row["stack"] == [stage]
    assert row["mean_psnr_db"] < json.loads((first / "private" / "manifest.json").read_text())["mean_psnr_db"]
    assert json.loads((second / "fidelity.json").read_text())["mean_psnr_db"] == row["mean_psnr_db"]
    # the report shows the release as published: both noises, against the originals, with both stages' time
    report = (tmp_path / "b" / "report.md").read_text()
    assert f"PSNR mean {row['mean_psnr_db']} dB" in report and f"max |noise| {row['max_linf_px']}/255" in report
    assert f"generated in {row['generation_s']:.0f} s" in report
    victim = tmp_path / "b" / "victims" / "random-mmue-tiny-rn-s0"
    assert Path(json.loads((victim / "params.json").read_text())["train_data"]).parents[1] == second
    stamp = (victim / "summary.json").stat().st_mtime
    assert len(run_bench(cfg, tmp_path / "b", device="cpu")) == 1     # the finished cell is found again
    assert (victim / "summary.json").stat().st_mtime == stamp
    with pytest.raises(ValueError, match="stack stage 1"):
        BenchConfig(methods=["em"], stack=[{"surrogate": "mmue-tiny-vit"}]).validate()


def test_a_clean_victim_is_reused_where_the_defense_keeps_clean_data(tiny_synth, tmp_path):
    # oracle-captions puts back the original captions: on clean data that is the same data and the same training
    # as the undefended cell, so its victim is not trained twice; a defense that changes clean data is trained
    cfg = BenchConfig(data=str(tiny_synth), methods=["clean", "random"], seeds=[0], epochs=1, protect=TINY_PROTECT,
                      defenses=["oracle-captions", "strip-2", "none"])
    rows = run_bench(cfg, tmp_path / "b", device="cpu")
    assert [(r["method"], r["defense"]) for r in rows] == [   # none first, whatever the config's order
        ("clean", "none"), ("clean", "oracle-captions"), ("clean", "strip-2"),
        ("random", "none"), ("random", "oracle-captions"), ("random", "strip-2")]
    victims = tmp_path / "b" / "victims"
    assert not (victims / "clean-mmue-tiny-rn-s0-oracle-captions").exists()
    assert (victims / "clean-mmue-tiny-rn-s0-strip-2" / "summary.json").exists()
    assert (victims / "random-mmue-tiny-rn-s0-oracle-captions" / "summary.json").exists()   # protected: trained
    none, reused = rows[0], rows[1]
    assert reused["reused"] == "none" and "reused" not in rows[2] and "reused" not in rows[4]
    assert {k: v for k, v in reused.items() if k not in ("defense", "reused")} == \
           {k: v for k, v in none.items() if k != "defense"}
    assert len(run_bench(cfg, tmp_path / "b", device="cpu")) == 6   # the reused row is found again


def test_bn_clean_evaluates_the_same_victim_with_statistics_of_the_clean_originals(tiny_synth, tmp_path):
    # bn-clean trains nothing: it re-estimates the BatchNorm statistics of the victim trained under the rest of its
    # name on the clean originals of that victim's training rows, and evaluates that
    from mmue.experiments import load_victim
    from mmue.models import load_model, recalibrate_batchnorm
    from mmue.train import evaluate, load_encoded
    cfg = BenchConfig(data=str(tiny_synth), methods=["random"], seeds=[0], epochs=1, protect=TINY_PROTECT,
                      defenses=["strip-2+bn-clean", "bn-clean", "strip-2", "none"])
    rows = run_bench(cfg, tmp_path / "b", device="cpu")
    assert [r["defense"] for r in rows] == ["none", "strip-2", "strip-2+bn-clean", "bn-clean"]
    victims = tmp_path / "b" / "victims"
    assert sorted(p.name for p in victims.iterdir()) == ["random-mmue-tiny-rn-s0", "random-mmue-tiny-rn-s0-strip-2"]
    by = {r["defense"]: r for r in rows}
    assert by["bn-clean"]["trained_as"] == "none" and by["strip-2+bn-clean"]["trained_as"] == "strip-2"
    assert Path(by["bn-clean"]["bn_images"]) == tiny_synth / "train.csv"   # the originals, not the noisy copy
    for d, run in (("none", "random-mmue-tiny-rn-s0"), ("strip-2", "random-mmue-tiny-rn-s0-strip-2")):
        model = load_model(victims / run, "cpu", which="last")
        test = load_encoded(tiny_synth / "test.csv", model)
        as_trained = evaluate(model, test, "cpu")["image_to_text_R@10"]
        assert recalibrate_batchnorm(model, load_encoded(tiny_synth / "train.csv", model).images) > 0
        recal = evaluate(model, test, "cpu")["image_to_text_R@10"]
        assert by[d]["last/image_to_text_R@10"] == as_trained
        assert by[f"{d}+bn-clean" if d != "none" else "bn-clean"]["last/image_to_text_R@10"] == recal
    same = load_victim(victims / "random-mmue-tiny-rn-s0", "cpu", "last", tiny_synth / "train.csv")
    assert evaluate(same, load_encoded(tiny_synth / "test.csv", same), "cpu")["image_to_text_R@10"] == \
        by["bn-clean"]["last/image_to_text_R@10"]
    assert len(run_bench(cfg, tmp_path / "b", device="cpu")) == 4   # found again, nothing retrained
    assert "strip-2+bn-clean" in (tmp_path / "b" / "report.md").read_text()
    with pytest.raises(ValueError, match="add 'strip-2' to its defenses"):
        BenchConfig(defenses=["none", "strip-2+bn-clean"]).validate()
