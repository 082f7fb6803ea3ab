import json

import pytest

from mmue import api
from mmue.bench import BenchConfig, owner_published_table, owner_table, owner_worst_case_table, run_bench
from mmue.cli import main
from mmue.data import read_pairs
from mmue.fileio import read_jsonl, write_jsonl
from mmue.owner import Owner, gap_closed, owner_metrics, write_subset


def test_owner_specs_pick_images(tiny_synth):
    pairs = read_pairs(tiny_synth / "train.csv")
    a = Owner.parse({"fraction": 0.1}).images(pairs, seed=0)
    assert len(a) == 10 and a == Owner.parse({"fraction": 0.1}).images(pairs, seed=0)
    assert a != Owner.parse({"fraction": 0.1}).images(pairs, seed=1)
    word = pairs.captions[0].split()[2]
    found = Owner.parse({"query": word}).images(pairs, 0)
    assert 0 in found and all(any(word in pairs.captions[c].lower() for c in pairs.image_captions[i]) for i in found)
    assert len(found) < pairs.n_images
    for bad in ({}, {"fraction": 0.1, "query": "x"}, {"fraction": 1.5}, {"column": "a"}, {"frac": 0.1}):
        with pytest.raises(ValueError):
            Owner.parse(bad)
    assert gap_closed(1.0, 11.0, 1.0) == 1.0 and gap_closed(1.0, 11.0, 11.0) == 0.0


def test_column_owner_takes_the_rows_with_that_value(tiny_synth, tmp_path):
    import csv
    rows = list(csv.DictReader(open(tiny_synth / "train.csv", encoding="utf-8")))
    ann = {"images/train_00007.png", "images/train_00011.png"}          # every caption of these: one artist's
    with open(tmp_path / "train.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["filepath", "caption", "author"])
        for r in rows:
            w.writerow([str((tiny_synth / r["filepath"]).resolve()), r["caption"],
                        "Ann" if r["filepath"] in ann else "Bo"])
    pairs = read_pairs(tmp_path / "train.csv")
    owner = Owner.parse({"column": "author", "value": "Ann"})
    assert sorted(pairs.images[i].rsplit("/", 1)[-1] for i in owner.images(pairs, seed=0)) == \
        ["train_00007.png", "train_00011.png"]
    assert owner.semantic and owner.label() == "author = 'Ann'"
    with pytest.raises(ValueError, match="0 training images"):
        Owner.parse({"column": "author", "value": "Cy"}).images(pairs, seed=0)


def test_owner_metrics_restrict_queries_to_the_owner(tiny_synth, tmp_path):
    from mmue.models import create_model
    pairs = read_pairs(tiny_synth / "train.csv")
    own = write_subset(pairs, [0, 1, 2, 3], tmp_path / "own.csv")
    m = owner_metrics(None, own, tiny_synth / "test.csv", "cpu", model=create_model("mmue-tiny-rn"))
    assert m["mem/gallery_images"] == 4 + 48
    assert 0 <= m["mem/image_to_text_R@1"] <= 1 and m["mem/random_text_to_image_R@10"] == pytest.approx(10 / 52)
    alone = owner_metrics(None, own, None, "cpu", model=create_model("mmue-tiny-rn"))
    assert alone["mem/gallery_images"] == 4 and alone["mem/text_to_image_R@10"] == 1.0   # 4 images: all in top 10
    published = owner_metrics(None, own, tiny_synth / "test.csv", "cpu", model=create_model("mmue-tiny-rn"),
                              prefix="pub")
    assert published["pub/gallery_images"] == 52 and not any(k.startswith("mem/") for k in published)


def test_bench_owner_mode_trains_absent_clean_and_protected_on_the_mix(tiny_synth, tmp_path):
    cfg = BenchConfig(data=str(tiny_synth), methods=["absent", "clean", "trigger-only"], seeds=[0], epochs=1,
                      protect={"rounds": 0}, owner={"fraction": 0.25}, defenses=["none", "oracle-captions"])
    rows = run_bench(cfg, tmp_path / "b", device="cpu")
    assert [(r["method"], r["defense"]) for r in rows] == [(m, d) for m in ("absent", "clean", "trigger-only")
                                                           for d in ("none", "oracle-captions")]
    assert all(r["owner_images"] == 24 and "owner/last/mem/text_to_image_R@10" in r for r in rows)
    mix = read_pairs(tmp_path / "b" / "owner" / "s0" / "mix-trigger-only.csv")
    assert mix.n_images == 96 and len(mix.captions) == 96 * 5       # the 72 others clean + the owner's 24
    original = set(read_pairs(tiny_synth / "train.csv").captions)
    assert sum(c not in original for c in mix.captions) == 24 * 5     # only the owner's captions carry triggers
    # caption cleaning at its best: the owner's released images with their original captions, row for row
    defended = tmp_path / "b/defended/trigger-only-low-mmue-tiny-rn-s0-owner-oracle-captions"
    oracle = read_pairs(defended / "mix-trigger-only.csv")
    assert [oracle.image_path(i).resolve() for i in range(oracle.n_images)] == \
        [mix.image_path(i).resolve() for i in range(mix.n_images)] and set(oracle.captions) <= original
    assert oracle.captions == read_pairs(tmp_path / "b/owner/s0/mix-original.csv").captions
    table = owner_table(rows)
    assert "absent" in table and "gap closed" in table
    # memorisation as published: the protected victim and the absent one queried with the owner's copy, where
    # the scraper trained on it as published (not once it re-captioned the copy: it holds another one then)
    prot = [r for r in rows if r["method"] == "trigger-only" and r["defense"] == "none"]
    assert all(r[f"owner/last/{k}/gallery_images"] == 24 + 48 for r in prot for k in ("pub", "pub_absent"))
    assert not any("owner/last/pub/image_to_text_R@1" in r for r in rows if r not in prot)
    report = (tmp_path / "b" / "report.md").read_text()
    assert "the owner's view" in report and "the owner's photos as published" in report
    # rows finished before the published view existed gain it when the bench runs again (no victim retrained)
    results = tmp_path / "b" / "results.jsonl"
    stripped = [{k: v for k, v in r.items() if "/pub" not in k} for r in read_jsonl(results)]
    write_jsonl(results, stripped)
    trained = {p: p.stat().st_mtime_ns for p in (tmp_path / "b" / "victims").glob("*/summary.json")}
    again = run_bench(cfg, tmp_path / "b", device="cpu")
    assert [r.get("owner/last/pub/text_to_image_R@10") for r in again] == \
        [r.get("owner/last/pub/text_to_image_R@10") for r in rows]
    assert trained and {p: p.stat().st_mtime_ns for p in trained} == trained
    assert "## Released images" in report and "over 24 images" in report   # the owner's copy, beside its originals
    with pytest.raises(ValueError, match="needs an owner"):
        BenchConfig(methods=["absent"]).validate()


def test_verify_end_to_end(tiny_synth, tmp_path, capsys, caplog):
    import logging
    caplog.set_level(logging.INFO, logger="mmue.verify")
    pairs = read_pairs(tiny_synth / "train.csv")
    mine = write_subset(pairs, list(range(16)), tmp_path / "mine" / "mine.csv")
    public = write_subset(pairs, list(range(16, 96)), tmp_path / "public.csv")
    api.protect(mine, tmp_path / "prot", "trigger-only", device="cpu", progress=False, rounds=0)
    rc = main(["-q", "verify", "--clean", str(mine), "--protected", str(tmp_path / "prot"), "--out",
               str(tmp_path / "v"), "--public", str(public), "--distractors", str(tiny_synth / "test.csv"),
               "--epochs", "1", "--device", "cpu", "--scrapers", "none,oracle-captions,jpeg-75,jpeg-75+bn-clean",
               "--model", "mmue-tiny-rn"])
    out = capsys.readouterr().out
    assert rc == 0 and "your protected copy" in out and "A model (mmue-tiny-rn) trained on your protected copy" in out
    assert "does not show" in out
    assert "a scraper who re-captions your images" in out and "re-saves the images as JPEG at quality 75" in out
    # three victims as published, one re-captioned (clean data unchanged), three re-saved as JPEG, and those three
    # again with their BatchNorm statistics re-estimated on the clean mixes (evaluated, not trained again)
    assert "victim 3/7: mmue-tiny-rn on protected\n" in caplog.text
    assert "victim 4/7: mmue-tiny-rn on protected [oracle-captions]" in caplog.text
    assert "victim 5/7: mmue-tiny-rn on the others' data [jpeg-75]" in caplog.text and "victim 7/7" in caplog.text
    assert "victim 8/" not in caplog.text and \
        "mmue-tiny-rn on protected [jpeg-75+bn-clean]: the [jpeg-75] victim, its BatchNorm statistics" in caplog.text
    assert "re-estimates the model's BatchNorm statistics" in out
    r = json.loads((tmp_path / "v" / "verify.json").read_text())
    assert set(r["metrics"]) == {"absent", "clean", "protected"} and r["metrics"]["clean"]["mem/gallery_images"] == 64
    assert list(r["scrapers"]) == ["none", "oracle-captions", "jpeg-75", "jpeg-75+bn-clean"]
    assert r["worst"]["scraper"] in r["scrapers"]
    assert list(r["models"]) == ["mmue-tiny-rn"] and r["scrapers"] == r["models"]["mmue-tiny-rn"]["scrapers"]
    assert r["metrics"] == r["scrapers"]["none"]["metrics"]
    # the copy as published is also the query: the protected victim and the floor, on the owner's files
    pub = r["scrapers"]["none"]["published"]
    assert pub["metrics"]["protected"]["pub/gallery_images"] == 64 and set(pub["mean_R@10"]) == {"absent", "protected"}
    assert "queried with your copy as published" in out and "Queried with your copy as published" in out
    assert "published" not in r["scrapers"]["jpeg-75"]
    # re-captioning: the protected images with the owner's original captions; clean data is unchanged by it, so
    # its floor and ceiling are the undefended victims', while JPEG re-saves the clean mix too and trains its own
    folders = r["victim_folders"]   # each named by the data its victims train on
    assert sorted(folders) == ["absent", "clean", "protected"] and folders["clean"].startswith("clean-")
    oracle = read_pairs(tmp_path / "v/scraped/oracle-captions" / folders["protected"]
                        / f"train-{folders['protected']}.csv")
    mix = read_pairs(tmp_path / f"v/train-{folders['protected']}.csv")
    assert [oracle.image_path(i).resolve() for i in range(oracle.n_images)] == \
        [mix.image_path(i).resolve() for i in range(mix.n_images)]
    assert oracle.captions == read_pairs(tmp_path / f"v/train-{folders['clean']}.csv").captions != mix.captions
    assert r["scrapers"]["oracle-captions"]["metrics"]["clean"] == r["metrics"]["clean"]
    victims = tmp_path / "v/victims/mmue-tiny-rn"
    assert sorted(p.name for p in (victims / "oracle-captions").iterdir()) == [folders["protected"]]
    assert sorted(p.name for p in (victims / "jpeg-75").iterdir()) == sorted(folders.values())
    assert not (victims / "jpeg-75+bn-clean").exists()
    from mmue.experiments import load_victim
    recal = load_victim(victims / "jpeg-75" / folders["protected"], "cpu", "last",
                        tmp_path / f"v/train-{folders['clean']}.csv")
    assert owner_metrics(None, mine, tiny_synth / "test.csv", "cpu", model=recal) == \
        r["scrapers"]["jpeg-75+bn-clean"]["metrics"]["protected"]
    assert (tmp_path / "v" / "verify.md").read_text().startswith("# mmue verify")
    # the victims train with open_clip_train's mild crop unless told otherwise, and say so
    assert r["augment"] == "crop-0.9" and "augmentation crop-0.9" in out
    assert json.loads((victims / folders["clean"] / "params.json").read_text())["augment"] == "crop-0.9"
    # finished victims are reused only for the same recipe
    rc = main(["-q", "verify", "--clean", str(mine), "--protected", str(tmp_path / "prot"), "--out",
               str(tmp_path / "v"), "--public", str(public), "--epochs", "1", "--device", "cpu", "--augment", "none",
               "--model", "mmue-tiny-rn"])
    assert rc == 2 and "trained with augment 'crop-0.9' (asked: 'none')" in capsys.readouterr().err


def test_verify_trains_each_architecture_and_names_the_one_that_tuned_the_noise(tiny_synth, tmp_path, capsys,
                                                                                 caplog):
    import logging

    from mmue.verify import DEFAULT_MODELS
    caplog.set_level(logging.INFO, logger="mmue.verify")
    mine = write_subset(read_pairs(tiny_synth / "train.csv"), list(range(16)), tmp_path / "mine" / "mine.csv")
    api.protect(mine, tmp_path / "prot", "trigger-only", device="cpu", progress=False, rounds=0)
    # publish/ alone: the surrogate is still read from the private manifest beside it
    rc = main(["-q", "verify", "--clean", str(mine), "--protected", str(tmp_path / "prot" / "publish"), "--out",
               str(tmp_path / "v"), "--epochs", "1", "--device", "cpu", "--scrapers", "none,bn-clean"])
    out = capsys.readouterr().out
    r = json.loads((tmp_path / "v" / "verify.json").read_text())
    assert rc == 0 and list(r["models"]) == list(DEFAULT_MODELS) and r["surrogate"] == ["mmue-tiny-rn"]
    # re-estimating BatchNorm statistics: the ResNet has them; the ViT has none, and the table says so
    assert r["models"]["mmue-tiny-rn"]["scrapers"]["bn-clean"]["batchnorm"] is True
    vit = r["models"]["mmue-tiny-vit"]["scrapers"]
    assert vit["bn-clean"]["batchnorm"] is False and vit["bn-clean"]["metrics"] == vit["none"]["metrics"]
    assert "[bn-clean]: mmue-tiny-vit has no BatchNorm, the same as [none]" in out
    assert "[bn-clean]: mmue-tiny-rn has no" not in out
    assert "victims mmue-tiny-rn, trained from scratch 1 epochs (the architecture that tuned your noise):" in out
    assert "victims mmue-tiny-vit, trained from scratch 1 epochs:" in out
    assert r["models"]["mmue-tiny-vit"]["recipe"] == {"epochs": 1} and not r["models"]["mmue-tiny-vit"]["finetuned"]
    for m in DEFAULT_MODELS:   # no public data: each architecture's floor is its own untrained model
        folders = r["victim_folders"]
        assert sorted(p.name for p in (tmp_path / "v/victims" / m).iterdir()) == [folders["clean"],
                                                                                 folders["protected"]]
        assert json.loads((tmp_path / "v/victims" / m / folders["clean"] / "params.json").read_text())["model"] == m
    assert r["models"]["mmue-tiny-rn"]["scrapers"]["none"]["metrics"]["absent"] != \
        r["models"]["mmue-tiny-vit"]["scrapers"]["none"]["metrics"]["absent"]
    assert r["worst"]["model"] in DEFAULT_MODELS and "A model (mmue-tiny-rn) trained on your protected copy" in out
    # without public data the untrained model is the floor as published too
    floor = r["models"]["mmue-tiny-vit"]["scrapers"]["none"]["published"]["metrics"]["absent"]
    assert floor["pub/gallery_images"] == 16
    # progress over every victim trained, of every architecture: 2 x (clean, protected); bn-clean's are evaluated
    assert "victim 1/4: mmue-tiny-rn on clean" in caplog.text
    assert "victim 4/4: mmue-tiny-vit on protected" in caplog.text
    assert "mmue-tiny-rn on protected [bn-clean]: the [none] victim, its BatchNorm statistics re-estimated" \
        in caplog.text
    with pytest.raises(ValueError, match="unknown architecture"):
        api.verify(mine, tmp_path / "prot", tmp_path / "v2", model="mmue-tiny-rm", epochs=1, device="cpu")
    assert not (tmp_path / "v2").exists()


def test_verify_rerun_with_another_copy_trains_only_its_victims(tiny_synth, tmp_path, caplog):
    import logging
    caplog.set_level(logging.INFO, logger="mmue.verify")
    mine = write_subset(read_pairs(tiny_synth / "train.csv"), list(range(12)), tmp_path / "mine" / "mine.csv")
    for seed in (0, 1):   # two copies: other triggers
        api.protect(mine, tmp_path / f"prot{seed}", "trigger-only", device="cpu", progress=False, rounds=0, seed=seed)
    args = dict(model="mmue-tiny-rn", epochs=1, device="cpu", scrapers=["none", "oracle-captions"])
    first = api.verify(mine, tmp_path / "prot0", tmp_path / "v", **args)
    victims = tmp_path / "v/victims/mmue-tiny-rn"
    trained = {p: p.stat().st_mtime_ns for p in victims.rglob("summary.json")}
    caplog.clear()
    second = api.verify(mine, tmp_path / "prot1", tmp_path / "v", **args)
    a, b = first["victim_folders"], second["victim_folders"]
    assert a["clean"] == b["clean"] and a["protected"] != b["protected"]
    # the clean victim is reused, the first copy's victims are kept, the new copy's trained beside them
    assert {p: p.stat().st_mtime_ns for p in trained} == trained
    assert f"{a['clean']} already trained" in caplog.text and f"{a['protected']} already" not in caplog.text
    for where in (victims, victims / "oracle-captions"):
        assert {a["protected"], b["protected"]} <= {p.name for p in where.iterdir()}
    # each victim's record names what it trained on, still after the rerun: its copy's images (re-captioned too)
    assert second["protected"].startswith(str(tmp_path / "prot1"))
    for report, folder in ((first, a["protected"]), (second, b["protected"])):
        copy = read_pairs(report["protected"])
        for run in (victims / folder, victims / "oracle-captions" / folder):
            seen = read_pairs(json.loads((run / "params.json").read_text())["train_data"])
            assert [seen.image_path(i).resolve() for i in range(seen.n_images)] == \
                [copy.image_path(i).resolve() for i in range(copy.n_images)]
    assert second["metrics"]["clean"] == first["metrics"]["clean"]


def test_verify_fine_tunes_public_towers_as_a_scraper_would(tiny_synth, tmp_path, capsys):
    from mmue.train import FINETUNE_RECIPE
    from mmue.verify import victim_recipe
    assert victim_recipe("mmue-tiny-rn") == {"epochs": 20} and victim_recipe("mmue-effl0-minilm") == FINETUNE_RECIPE
    assert victim_recipe("mmue-effl0-minilm", epochs=1) == {**FINETUNE_RECIPE, "epochs": 1}
    mine = write_subset(read_pairs(tiny_synth / "train.csv"), list(range(8)), tmp_path / "mine" / "mine.csv")
    api.protect(mine, tmp_path / "prot", "trigger-only", device="cpu", progress=False, rounds=0)
    rc = main(["-q", "verify", "--clean", str(mine), "--protected", str(tmp_path / "prot"), "--out",
               str(tmp_path / "v"), "--epochs", "1", "--device", "cpu", "--scrapers", "none",
               "--model", "mmue-effl0-minilm"])
    out = capsys.readouterr().out
    r = json.loads((tmp_path / "v" / "verify.json").read_text())
    params = json.loads((tmp_path / "v/victims/mmue-effl0-minilm" / r["victim_folders"]["clean"] / "params.json")
                        .read_text())
    # the scraper's gentle recipe, not the from-scratch one; --epochs still rules
    assert rc == 0 and params["lr"] == FINETUNE_RECIPE["lr"] and params["warmup"] == FINETUNE_RECIPE["warmup"]
    assert params["epochs"] == 1 and r["models"]["mmue-effl0-minilm"]["finetuned"]
    assert "victims mmue-effl0-minilm, public pretrained towers fine-tuned 1 epochs at lr 0.0002:" in out
    # without public data the floor is the towers before fine-tuning, named as such, as published too
    assert "the towers, not fine-tuned (floor)" in out and "untrained" not in out.split("random guess")[0]
    assert "A model (mmue-effl0-minilm, fine-tuned from public pretrained weights) trained on your protected" in out


def test_verify_verdict_leads_with_the_worst_case_over_scrapers_and_architectures():
    from mmue.verify import verdict, worst_case

    def cell(absent, clean, protected):
        r10 = {"absent": absent, "clean": clean, "protected": protected}
        return {"mean_R@10": r10, "gap_closed": gap_closed(absent, clean, protected)}

    def report(models, surrogate=()):
        r = {"models": {m: {"scrapers": s} for m, s in models.items()}, "surrogate": list(surrogate),
             "gallery_images": 1000}
        r["worst"] = worst_case(r)
        return r
    rn = {"none": cell(0.2, 1.0, 0.4), "oracle-captions": cell(0.2, 1.0, 0.96), "jpeg-75": cell(0.3, 0.9, 0.5)}
    r = report({"mmue-tiny-rn": rn})
    text = verdict(r)
    assert r["worst"] == {"model": "mmue-tiny-rn", "scraper": "oracle-captions"}
    assert "2.5x less often than" in text and "75 % of the way" in text
    assert "after a scraper who re-captions your images" in text and "about as often as" in text
    assert "over the 3 scrapers measured" in text and "architectures" not in text
    assert "): 5 % of the way" in text and text.index("): 75 %") < text.index("): 5 %")
    rn["jpeg-75"] = cell(0.5, 0.5, 0.7)            # no gap to close: counts as none closed
    assert worst_case(report({"mmue-tiny-rn": rn}))["scraper"] == "jpeg-75"
    alone = report({"mmue-tiny-rn": {"none": cell(0.2, 1.0, 0.4)}})
    text = verdict(alone)
    assert "Worst case" not in text and "None of" not in text and "--distractors" not in text
    alone["gallery_images"] = 8   # a search among eight images: R@10 finds them all, whatever the model learned
    assert verdict(alone).startswith("Your images were searched among 8 only") and "--distractors" in verdict(alone)
    alone["gallery_images"] = 1000
    alone["models"]["mmue-tiny-rn"]["scrapers"]["none"]["published"] = {"mean_R@10": {"absent": 0.3, "protected": 1.0}}
    assert "as published (the files a scraper holds), it finds them about as often as your clean originals" \
        in verdict(alone) and "(mean R@10 100.0 % vs 100.0 %; without your data: 30.0 %)" in verdict(alone)
    alone["models"]["mmue-tiny-rn"]["scrapers"]["none"]["mean_R@10"]["clean"] = 0.6
    assert "it finds them more often than your clean originals" in verdict(alone)
    # a copy that holds for the surrogate's architecture and not another: the other one sets the verdict, even
    # as published, and a verdict from the surrogate's architecture alone says it flatters
    both = report({"mmue-tiny-rn": {"none": cell(0.2, 1.0, 0.4)}, "mmue-tiny-vit": {"none": cell(0.2, 1.0, 1.0)}},
                  surrogate=["mmue-tiny-rn"])
    text = verdict(both)
    assert both["worst"] == {"model": "mmue-tiny-vit", "scraper": "none"}
    assert "over the 2 architectures measured: a model (mmue-tiny-vit), as published, finds" in text
    assert "0 % of the way" in text and "flatters" not in text
    assert "the architecture that tuned your noise" in verdict(report({"mmue-tiny-rn": {"none": cell(0.2, 1, 0.4)}},
                                                                      surrogate=["mmue-tiny-rn"]))
    held = report({"mmue-tiny-rn": {"none": cell(0.2, 1.0, 0.4)}, "mmue-tiny-vit": {"none": cell(0.2, 1.0, 0.3)}})
    assert "None of the 2 architectures measured did better against it" in verdict(held)


def test_verify_finds_the_copys_csv_from_either_manifest_key(tmp_path):
    from mmue.verify import protected_csv
    out = tmp_path / "prot"
    (out / "private").mkdir(parents=True)
    (out / "publish").mkdir()
    (out / "private/manifest.json").write_text(json.dumps({"csv": "publish/train.csv"}))   # before "data" existed
    assert protected_csv(out) == out / "publish/train.csv"
    (out / "publish/manifest.json").write_text(json.dumps({"data": "train.csv"}))   # relative to publish/ itself
    assert protected_csv(out / "publish") == out / "publish/train.csv"
    (out / "private/manifest.json").write_text(json.dumps({"data": "publish/shards/{00000..00001}.tar"}))
    with pytest.raises(FileNotFoundError, match="not a protected copy"):   # shards are not a CSV to train on
        protected_csv(out)


def test_verify_refuses_unknown_architectures_before_training():
    from mmue.verify import DEFAULT_MODELS, split_models
    assert split_models(None) == list(DEFAULT_MODELS) and len({m.split("-")[-1] for m in DEFAULT_MODELS}) == 2
    assert split_models("mmue-tiny-rn, mmue-tiny-vit,mmue-tiny-rn") == ["mmue-tiny-rn", "mmue-tiny-vit"]
    with pytest.raises(ValueError, match="unknown architecture 'mmue-tiny-rm'.*mmue models"):
        split_models("mmue-tiny-rn,mmue-tiny-rm")
    with pytest.raises(ValueError, match="empty name"):
        split_models("mmue-tiny-rn,,mmue-tiny-vit")


def test_owner_table_reports_the_concept_view_with_its_gap():
    def row(method, seed, r10):
        gen = {f"owner/last/gen/{d}_R@{k}": (r10 if k == 10 else r10 / 2)
               for d in ("image_to_text", "text_to_image") for k in (1, 10)}
        return {"owner": "captions with 'food'", "victim": "v", "defense": "none", "method": method, "seed": seed,
                **gen}
    rows = [row("absent", s, 0.1) for s in (0, 1)] + [row("clean", s, 0.5) for s in (0, 1)] \
        + [row("mem-3", 0, 0.2), row("mem-3", 1, 0.3)]
    table = owner_table(rows, "gen")
    assert "concept" in table and "random" not in table.splitlines()[1]
    mem3 = next(line for line in table.splitlines() if " mem-3 " in line)
    assert mem3.split()[-1] == "0.62"          # (50 - 25) / (50 - 10), R@10 averaged over the seeds
    assert owner_table(rows).count("\n") == 1  # no memorisation keys: header lines only
    cleaned = [{**r, "defense": "rare-10+jpeg-75+oracle-captions"} for r in rows]
    line = next(x for x in owner_table(cleaned, "gen").splitlines() if " mem-3 " in x)
    assert line.split()[4:6] == ["rare-10+jpeg-75+oracle-captions", "mem-3"]    # long names keep their columns


def test_published_view_sets_the_copy_beside_the_originals_with_its_own_floor():
    def row(method, seed, mem, pub=None, floor=None):
        keys = {f"owner/last/mem/{d}_R@{k}": mem for d in ("image_to_text", "text_to_image") for k in (1, 10)}
        for kind, x in (("pub", pub), ("pub_absent", floor)):
            if x is not None:
                keys.update({f"owner/last/{kind}/{d}_R@{k}": x for d in ("image_to_text", "text_to_image")
                             for k in (1, 10)})
        return {"owner": "random 10 %", "victim": "v", "defense": "none", "method": method, "seed": seed, **keys}
    rows = [row("absent", s, 0.1) for s in (0, 1)] + [row("clean", s, 0.9) for s in (0, 1)] \
        + [row("random", 0, 0.2, pub=0.7, floor=0.1), row("random", 1, 0.2, pub=0.5, floor=0.3)]
    line = next(x for x in owner_published_table(rows).splitlines() if " random " in x).split()
    # clean 90, absent 10, originals 20 (gap 0.88); floor as published 20, published 60 (gap (90-60)/(90-20))
    assert line[-8:] == ["2", "90.0", "10.0", "20.0", "0.88", "20.0", "60.0", "0.43"]
    rows[-1] = row("random", 1, 0.2, pub=0.5)     # one seed lacks the floor as published: the originals' stand in
    line = next(x for x in owner_published_table(rows).splitlines() if " random " in x).split()
    assert line[-3:] == ["10.0*", "60.0", "0.38"]
    assert owner_published_table(rows[:4]).count("\n") == 1    # no published view measured: header only


def test_owner_worst_case_takes_the_scraper_that_learns_most():
    def row(method, defense, seed, r10):
        mem = {f"owner/last/mem/{d}_R@{k}": r10 for d in ("image_to_text", "text_to_image") for k in (1, 10)}
        return {"owner": "random 1 %", "victim": "v", "defense": defense, "method": method, "seed": seed, **mem}
    rows = [row("absent", d, s, 0.2) for d in ("none", "rare-10") for s in (0, 1)] \
        + [row("clean", d, s, 1.0) for d in ("none", "rare-10") for s in (0, 1)] \
        + [row("mem-3", "none", 0, 0.4), row("mem-3", "none", 1, 0.6),       # gap closed 0.75, 0.50
           row("mem-3", "rare-10", 0, 0.2), row("mem-3", "rare-10", 1, 0.3),  # 1.00, 0.88
           row("mem-3", "jpeg-75", 0, 0.9)]                                    # no absent / clean: not a scraper here
    line = next(x for x in owner_worst_case_table(rows).splitlines() if " mem-3 " in x).split()
    assert line[line.index("mem-3") + 1:] == ["2", "0.62", "v", "/", "none", "0.75,", "0.50", "30.0", "v", "/", "none"]
    rows = [r if r["defense"] != "none" or r["method"] != "mem-3" else {**r, "owner/last/mem/image_to_text_R@10": 0.1,
                                                                       "owner/last/mem/text_to_image_R@10": 0.1}
            for r in rows]   # below absent undefended: the filter is now the worst case, 5 points above absent
    line = next(x for x in owner_worst_case_table(rows).splitlines() if " mem-3 " in x).split()
    assert line[line.index("mem-3") + 2:line.index("mem-3") + 5] == ["0.94", "v", "/"] and line[-1] == "rare-10"
    assert line[-4] == "5.0"
    long = [{**r, "victim": "mmue-tiny-rn", "defense": "oracle-captions"} for r in rows if r["defense"] == "rare-10"]
    line = next(x for x in owner_worst_case_table(long).splitlines() if " mem-3 " in x).split()
    assert line[line.index("mem-3") + 3:line.index("mem-3") + 8] == ["mmue-tiny-rn", "/", "oracle-captions", "1.00,",
                                                                     "0.88"]   # long names keep the columns apart


def test_public_surrogate_trains_on_the_mix_and_protects_only_the_owner(tiny_synth, tmp_path):
    pairs = read_pairs(tiny_synth / "train.csv")
    mine = write_subset(pairs, list(range(12)), tmp_path / "mine.csv")
    others = write_subset(pairs, list(range(12, 96)), tmp_path / "others.csv")
    quick = dict(rounds=1, surrogate_steps=3, pgd_steps=1, text_rounds=0, batch_size=16, seed=3)
    alone = api.protect(mine, tmp_path / "alone", "mem-3", device="cpu", progress=False, **quick)
    mixed = api.protect(mine, tmp_path / "mixed", "mem-3", device="cpu", progress=False, public=others, **quick)
    assert mixed["public"] == str(others) and alone["public"] is None
    assert mixed["n_images"] == 12 and len(list((tmp_path / "mixed/publish/images").rglob("*.png"))) == 12
    assert [e["trigger"] for e in mixed["images"]] == [e["trigger"] for e in alone["images"]]   # same seed
    # a different surrogate (it saw the public images) gives different noise
    assert [e["sha256"] for e in mixed["images"]] != [e["sha256"] for e in alone["images"]]
    with pytest.raises(ValueError, match="owner_surrogate"):
        BenchConfig(methods=["mem-3"], owner_surrogate="own+rest").validate()


def test_every_stage_of_an_owners_stacked_copy_trains_its_surrogate_on_the_same_mix(tiny_synth, tmp_path):
    # own+rest is the owner's surrogate setting for the whole release: a later stage that saw only the owner's
    # images would tune its share of the noise against a different model than the first stage did
    quick = dict(rounds=1, surrogate_steps=2, pgd_steps=1, batch_size=32)
    cfg = BenchConfig(data=str(tiny_synth), methods=["em"], seeds=[0], epochs=1, owner={"fraction": 0.25},
                      owner_surrogate="own+rest", protect={**quick, "eps": 4 / 255},
                      stack=[{"method": "em", "protect": {**quick, "eps": 2 / 255}}])
    (row,) = run_bench(cfg, tmp_path / "b", device="cpu")
    rest = tmp_path / "b" / "owner" / "s0" / "rest.csv"
    first = tmp_path / "b" / "protected" / "em-low-mmue-tiny-rn-s0-owner-public"
    for release in (first, first.parent / f"{first.name}+1-em-mmue-tiny-rn"):
        assert json.loads((release / "private" / "manifest.json").read_text())["public"] == str(rest)
    # the report shows the release beside the owner's originals (the second stage's sources are the first's files)
    assert f"PSNR mean {row['mean_psnr_db']} dB" in (tmp_path / "b" / "report.md").read_text()


def test_public_negatives_make_the_owners_pairs_stand_apart_from_the_others(tiny_synth):
    from dataclasses import replace

    import torch
    from mmue.data.encoded import EncodedPairs
    from mmue.losses import clip_loss
    from mmue.models import create_model
    from mmue.protect import MEMEngine, resolve
    torch.manual_seed(0)
    model = create_model("mmue-tiny-rn").eval()
    pairs = read_pairs(tiny_synth / "train.csv")
    build = lambda rows: EncodedPairs.build(pairs.subset(list(rows)), model.image_size,  # noqa: E731
                                            model.codec.encode, False)
    mine, others = build(range(16)), build(range(16, 96))
    cfg = resolve("mem-3", rounds=1, surrogate_steps=0, pgd_steps=4, text_rounds=0, shuffle=False, seed=3)
    with pytest.raises(ValueError, match="needs public"):
        MEMEngine(model, mine, resolve("mem-3", public_negatives=8))
    eng = MEMEngine(model, mine, replace(cfg, public_negatives=32), public=others)
    neg = eng.public_features(torch.Generator().manual_seed(1))
    assert neg[0].shape == neg[1].shape and len(neg[0]) == 32
    batch = eng.make_batch(torch.arange(16), torch.Generator().manual_seed(0))
    trig = eng.init_state().triggers[:16]
    zero = torch.zeros(16, 3, 64, 64)
    d_own, _ = eng.image_step(batch, zero, trig, torch.Generator().manual_seed(2))
    d_neg, _ = eng.image_step(batch, zero, trig, torch.Generator().manual_seed(2), negatives=neg)
    assert not torch.equal(d_own, d_neg)

    def loss_against_others(delta):   # the owner's pairs among the public ones, as a scraper's batch mixes them
        with torch.no_grad():
            img = model.encode_image(eng._pixels(batch, delta)).float()
            txt = model.encode_text(batch.ids(trig)).float()
            return float(clip_loss(torch.cat([img, neg[0]]), torch.cat([txt, neg[1]]), model.logit_scale.exp()))
    assert loss_against_others(d_neg) < loss_against_others(d_own) < loss_against_others(zero)
