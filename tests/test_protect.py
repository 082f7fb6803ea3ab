import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from mmue import api
from mmue.data import DataError, read_pairs
from mmue.data.encoded import EncodedPairs
from mmue.models import create_model
from mmue.protect import MEMEngine, resolve
from mmue.protect.placement import insert_trigger, trigger_positions
from mmue.protect.vocab import blocked_words, dataset_vocab, safe_words
from mmue.losses import clip_loss, clip_loss_options

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from naive_engine import NaiveMEMEngine  # noqa: E402  (the reference formulation, outside the library)

FAST = dict(rounds=2, surrogate_steps=3, pgd_steps=2, text_rounds=2, candidates=4, batch_size=32)


def test_presets_and_overrides():
    assert resolve("mem", "high").rounds == 20 and resolve("mem", "high").pgd_steps == 8
    assert resolve("mem") == resolve("mem", "low") and resolve("mem").rounds == 3   # low is the default
    assert resolve("mem-5").trigger_len == 5
    em = resolve("em")
    assert em.trigger_len == 0 and not em.shuffle and em.noise == "pgd"
    assert resolve("random").noise == "random" and not resolve("random").optimises
    assert resolve("trigger-only").noise == "none"
    assert resolve("mem", "low", rounds=7).rounds == 7
    assert resolve("mem", eps=4 / 255).eps_px == 4
    with pytest.raises(ValueError, match="unknown method"):
        resolve("nope")
    with pytest.raises(ValueError, match="eps"):
        resolve("mem", eps=2.0)
    assert "mem" in repr(resolve("mem"))
    robust = resolve("mem-3-robust")
    assert robust.trigger_position == "random" and robust.trigger_dropout == 0.5 and robust.trigger_len == 3
    assert "trigger_dropout=0.5" in repr(robust) and "trigger_position" not in repr(resolve("mem-3"))
    ab = resolve("mem-3-anypos-blend")
    assert ab.trigger_position == "random" and ab.trigger_vocab_min_images == 10 and ab.trigger_dropout == 0
    assert resolve("mem-3-jpeg").eot == "jpeg" and resolve("mem-3-jpeg").trigger_dropout == 0.5
    assert resolve("mem-3-smooth").grad_blur == 2.0 and "grad_blur=2.0" in repr(resolve("mem-3-smooth"))
    for bad in (dict(trigger_position="middle"), dict(trigger_dropout=1.0), dict(eot="png"), dict(grad_blur=-1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            resolve("mem", **bad)


def test_clip_loss_options_matches_loop():
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(3, 6, 8, generator=g), dim=-1)
    s = torch.tensor(10.0)
    got = clip_loss_options(img, txt, s)
    for o in range(3):
        assert got[o].item() == pytest.approx(clip_loss(img, txt[o], s).item(), rel=1e-5)


@pytest.mark.parametrize("method,extra", [("mem", {}), ("mem-3-robust", {"eot": "rrc-flip"}),
                                          ("mem-3-robust", {"eot": "jpeg", "grad_blur": 1.0})])
def test_efficient_and_naive_formulations_agree(tiny_synth, method, extra):
    torch.manual_seed(0)
    model = create_model("mmue-tiny-rn")
    data = EncodedPairs.build(read_pairs(tiny_synth / "train.csv"), model.image_size, model.codec.encode, False,
                              words=True)
    out = {}
    cfg = resolve(method, **{**FAST, **extra, "candidates": 3})
    for form, engine in (("efficient", MEMEngine), ("naive", NaiveMEMEngine)):
        eng = engine(model, data, cfg)
        model.eval()
        state = eng.init_state()
        g = torch.Generator().manual_seed(5)
        idx = torch.arange(16)
        batch = eng.make_batch(idx, g)
        delta = torch.zeros(16, 3, 64, 64)
        trig, tl = eng.text_step(batch, delta, state.triggers[idx])
        d2, il = eng.image_step(batch, delta, trig, torch.Generator().manual_seed(9))
        out[form] = (trig, tl, d2, il)
    e, n = out["efficient"], out["naive"]
    assert torch.equal(e[0], n[0])                      # same triggers chosen
    assert e[1] == pytest.approx(n[1], rel=1e-4)        # same text loss
    assert e[3] == pytest.approx(n[3], rel=1e-4)        # same image loss
    assert (e[2] == n[2]).float().mean() > 0.99         # same noise up to sign flips of ~zero gradients


def test_grad_blur_makes_spatially_coherent_noise(tiny_synth):
    torch.manual_seed(0)
    model = create_model("mmue-tiny-rn").eval()
    data = EncodedPairs.build(read_pairs(tiny_synth / "train.csv"), model.image_size, model.codec.encode, False)
    agree = {}
    for sigma in (0.0, 2.0):
        eng = MEMEngine(model, data, resolve("em", **{**FAST, "pgd_steps": 1, "grad_blur": sigma}))
        batch = eng.make_batch(torch.arange(16), torch.Generator().manual_seed(0))
        d, _ = eng.image_step(batch, torch.zeros(16, 3, 64, 64), eng.init_state().triggers[:16],
                              torch.Generator().manual_seed(1))
        s = d.sign()
        agree[sigma] = (s[..., 1:] == s[..., :-1]).float().mean().item()  # neighbours with the same sign
    assert agree[2.0] > agree[0.0] + 0.15, agree


def written_noise(clean, prot, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``i``'s noise as written (protected minus clean, int16 HxWx3), and where the valid pixel range cannot
    have clipped it."""
    a = np.asarray(Image.open(clean.image_path(i)).convert("RGB"), dtype=np.int16)
    d = np.asarray(Image.open(prot.image_path(i)).convert("RGB"), dtype=np.int16) - a
    return d, (a >= 8) & (a <= 247)


def test_noise_block_makes_pgd_noise_constant_on_squares(tiny_synth, tmp_path):
    m = api.protect(tiny_synth / "train.csv", tmp_path / "b", "em", device="cpu", progress=False, noise_block=8,
                    **FAST)
    assert m["config"]["noise_block"] == 8 and m["max_linf_px"] > 0
    clean, prot = read_pairs(tiny_synth / "train.csv"), read_pairs(tmp_path / "b/publish/train.csv")
    moved = 0
    for i in range(4):
        d, inside = written_noise(clean, prot, i)
        for y in range(0, 64, 8):
            for x in range(0, 64, 8):
                for ch in range(3):
                    vals = d[y:y + 8, x:x + 8, ch][inside[y:y + 8, x:x + 8, ch]]
                    assert len(set(vals.tolist())) <= 1, (i, y, x, ch)
                    moved += bool(len(vals) and vals[0])
    assert moved > 100   # and the squares did move: 4 images x 64 squares x 3 channels in all


def test_noise_tile_makes_pgd_noise_periodic(tiny_synth, tmp_path):
    m = api.protect(tiny_synth / "train.csv", tmp_path / "t", "em", device="cpu", progress=False, noise_tile=8,
                    **FAST)
    assert m["config"]["noise_tile"] == 8 and m["max_linf_px"] > 0
    clean, prot = read_pairs(tiny_synth / "train.csv"), read_pairs(tmp_path / "t/publish/train.csv")
    compared = 0
    for i in range(4):
        d, inside = written_noise(clean, prot, i)
        for ty in range(8):
            for tx in range(8):
                for ch in range(3):
                    vals = d[ty::8, tx::8, ch][inside[ty::8, tx::8, ch]]
                    assert len(set(vals.tolist())) <= 1, (i, ty, tx, ch)
                    compared += len(vals) > 1
        assert len(set(d[:8, :8].ravel().tolist())) > 1   # a texture, not a constant shift
    assert compared > 100
    with pytest.raises(ValueError, match="noise_tile"):
        api.protect(tiny_synth / "train.csv", tmp_path / "x", "em", device="cpu", progress=False, noise_tile=8,
                    noise_block=8, **FAST)


def test_grey_noise_moves_the_three_channels_together(tiny_synth, tmp_path):
    m = api.protect(tiny_synth / "train.csv", tmp_path / "g", "em", device="cpu", progress=False,
                    noise_colour="grey", **FAST)
    assert m["config"]["noise_colour"] == "grey" and m["max_linf_px"] > 0
    clean, prot = read_pairs(tiny_synth / "train.csv"), read_pairs(tmp_path / "g/publish/train.csv")
    for i in range(4):
        d, inside = written_noise(clean, prot, i)
        both = inside.all(-1)          # pixels no channel of which was clipped at 0 or 255
        assert both.sum() > 100 and (d[both] == d[both][:, :1]).all(), i
        assert len(set(d[both][:, 0].tolist())) > 1
    with pytest.raises(ValueError, match="noise_colour"):
        api.protect(tiny_synth / "train.csv", tmp_path / "x", "em", device="cpu", progress=False,
                    noise_colour="grey", noise="random", **FAST)


def test_random_tile_noise_repeats_one_tile_per_image():
    from mmue.protect.pgd import random_noise
    r = random_noise((3, 3, 20, 20), 8, torch.Generator().manual_seed(0), tile=8)
    assert r.dtype == torch.int8 and r.abs().max() <= 8
    assert torch.equal(r[..., :8, :8], r[..., 8:16, 8:16]) and torch.equal(r[..., 16:, :4], r[..., :4, :4])
    assert not torch.equal(r[0], r[1])


def test_protect_writes_publishable_dataset(tiny_synth, tmp_path):
    out = tmp_path / "prot"
    before = (tiny_synth / "images/train_00000.png").read_bytes()
    api.protect(tiny_synth / "train.csv", out, "mem", device="cpu", progress=False, **FAST)
    assert (tiny_synth / "images/train_00000.png").read_bytes() == before        # original untouched
    assert not (out / ".mmue_state").exists()
    src = read_pairs(tiny_synth / "train.csv")
    prot = read_pairs(out / "publish/train.csv")                                    # own loader reads it back
    assert prot.n_images == src.n_images and len(prot.captions) == len(src.captions)
    assert prot.fieldnames == src.fieldnames
    model = create_model("mmue-tiny-rn")
    codec = model.codec
    manifest = json.loads((out / "private/manifest.json").read_text())
    assert manifest["config"]["eps_px"] == 8 and manifest["max_linf_px"] <= 8
    assert manifest["mean_psnr_db"] >= 30
    # the round log says how many triggers each text round changed (FAST: text step in both rounds)
    changed = [r["triggers_changed"] for r in manifest["rounds_log"]]
    assert len(changed) == 2 and all(0 <= c <= src.n_images for c in changed)
    for i, entry in enumerate(manifest["images"]):
        trig = entry["trigger"]
        assert len(codec.encode(trig)) == 3
        # one trigger per image, on every one of its captions, and the body unchanged after it
        for c in prot.image_captions[i]:
            assert prot.captions[c] == f"{trig} {src.captions[c]}"
            ids = codec.tokenize([prot.captions[c]])[0]
            assert ids[1:4].tolist() == codec.encode(trig)
        a = torch.tensor(list(Image.open(src.image_path(i)).get_flattened_data()), dtype=torch.int16)
        b = torch.tensor(list(Image.open(prot.image_path(i)).get_flattened_data()), dtype=torch.int16)
        assert (a - b).abs().max() <= 8
        assert Image.open(prot.image_path(i)).format == "PNG"
    assert len({e["trigger"] for e in manifest["images"]}) > 1
    # the default vocabulary: after HotFlip too, every trigger word is a safe word and none is blocked
    assert manifest["config"]["trigger_vocab"] == "safe"
    words = {w for e in manifest["images"] for w in e["trigger"].split()}
    assert words <= safe_words() and not words & blocked_words()
    # refuses to clobber, or to write into the input folder
    with pytest.raises(ValueError, match="--overwrite"):
        api.protect(tiny_synth / "train.csv", out, "mem", device="cpu", progress=False, **FAST)
    with pytest.raises(ValueError, match="originals are never modified"):
        api.protect(tiny_synth / "train.csv", tiny_synth, "mem", device="cpu", progress=False, overwrite=True, **FAST)


def _published(out: Path) -> tuple[list[bytes], list[str]]:
    m = json.loads((out / "private/manifest.json").read_text())
    return [(out / e["file"]).read_bytes() for e in m["images"]], [e["trigger"] for e in m["images"]]


def test_stop_once_the_shortcut_is_learned(small_synth, tmp_path):
    base = dict(FAST, seed=4, text_rounds=1)
    # a bar every surrogate clears: stops at the first check (round 2, after the text round and one data pass),
    # with exactly what a one-round run wrote (the check draws from its own generator)
    stopped = api.protect(small_synth / "train.csv", tmp_path / "s", "mem-3", device="cpu", progress=False,
                          **{**base, "rounds": 4, "stop_accuracy": 0.01})
    log = stopped["rounds_log"]
    assert [r["round"] for r in log] == [1, 2] and log[-1]["stopped"] and log[-1]["images_optimised"] == 0
    assert 0.01 <= log[-1]["fit_accuracy"] <= 1 and 0 <= log[-1]["clean_fit_accuracy"] <= 1
    api.protect(small_synth / "train.csv", tmp_path / "one", "mem-3", device="cpu", progress=False,
                **{**base, "rounds": 1})
    assert _published(tmp_path / "s") == _published(tmp_path / "one")
    # a bar no surrogate clears in 3 steps: every round runs, each check is logged, and the result is the
    # unchecked run's
    full = api.protect(small_synth / "train.csv", tmp_path / "f", "mem-3", device="cpu", progress=False,
                       **{**base, "rounds": 3, "stop_accuracy": 1.0})
    assert [r.get("fit_accuracy") is not None for r in full["rounds_log"]] == [False, True, True]
    assert all(r["fit_accuracy"] < 1 and not r.get("stopped") for r in full["rounds_log"][1:])
    assert all(0 <= r["clean_fit_accuracy"] <= 1 for r in full["rounds_log"][1:])
    api.protect(small_synth / "train.csv", tmp_path / "n", "mem-3", device="cpu", progress=False,
                **{**base, "rounds": 3})
    assert _published(tmp_path / "f") == _published(tmp_path / "n")


def test_the_clean_fit_is_the_fit_on_the_pairs_before_protection(small_synth, tmp_path):
    # no noise and no trigger: the protected pairs are the clean ones, so both checks must agree to the digit
    kw = dict(FAST, seed=2, rounds=3, text_rounds=1, surrogate_steps=20, stop_accuracy=1.0, device="cpu",
              progress=False)
    same = api.protect(small_synth / "train.csv", tmp_path / "e", "em", **{**kw, "pgd_steps": 0})["rounds_log"][1:]
    assert [r["fit_accuracy"] for r in same] == [r["clean_fit_accuracy"] for r in same]
    # with noise and triggers, the clean check sees neither
    trig = api.protect(small_synth / "train.csv", tmp_path / "t", "mem-3", **kw)["rounds_log"][1:]
    assert any(r["fit_accuracy"] != r["clean_fit_accuracy"] for r in trig)


@pytest.mark.parametrize("position", ["random", "suffix"])
def test_engine_rows_match_what_the_victim_tokenizes(tiny_synth, position):
    """Mid-caption triggers: the token rows the engine optimises are exactly the published captions' tokens,
    and trigger dropout swaps in the caption without its trigger."""
    model = create_model("mmue-tiny-rn")
    pairs = read_pairs(tiny_synth / "train.csv")
    data = EncodedPairs.build(pairs, model.image_size, model.codec.encode, False, words=True)
    eng = MEMEngine(model, data, resolve("mem-3-robust", **FAST, trigger_position=position))
    assert len(set(eng.trigger_words)) > 2                    # positions vary across captions
    state = eng.init_state()
    g = torch.Generator().manual_seed(1)
    idx = torch.arange(12)
    batch = eng.make_batch(idx, g)
    triggers = state.triggers[idx]
    rows = batch.ids(triggers)
    for b in range(12):
        c = next(c for c in data.image_captions[b] if data.caption_bodies[c] == [t for t in batch.plain[b].tolist()
                                                                                 if t][1:-1])
        text = insert_trigger(pairs.captions[c], model.codec.trigger_text(triggers[b]), eng.trigger_words[c])
        assert rows[b].tolist() == model.codec.tokenize([text])[0].tolist()
        if position == "suffix":
            assert text.endswith(model.codec.trigger_text(triggers[b]))
        assert batch.at_slots(rows.unsqueeze(-1))[b, :, 0].tolist() == triggers[b].tolist()
    drop = torch.tensor([True, False] * 6)
    mixed = batch.ids(triggers, drop=drop)
    assert torch.equal(mixed[drop], batch.plain[drop]) and torch.equal(mixed[~drop], rows[~drop])
    order = torch.arange(12).roll(1)                            # shuffled bodies; dropped rows keep their own
    shuffled = batch.ids(triggers, order, drop)
    assert torch.equal(shuffled[drop], batch.plain[drop])
    assert torch.equal(shuffled[~drop], batch.ids(triggers, order)[~drop])
    opts = torch.stack([triggers, triggers.flip(0)])
    assert torch.equal(batch.option_ids(opts).view(2, 12, -1)[1], batch.ids(triggers.flip(0)))


def test_random_and_suffix_positions_stay_inside_the_context():
    starts = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [0, 4]]      # word boundaries in tokens
    pos = trigger_positions(starts * 50, k=3, context_length=10, mode="random", seed=0)
    assert max(pos[0::2]) == 5 and min(pos) == 0                # 10 - 2 - 3 = 5 body tokens fit before it
    assert set(pos[1::2]) == {0, 1}
    assert trigger_positions(starts, 3, 10, "prefix", 0) == [0, 0]
    assert trigger_positions(starts, 3, 10, "suffix", 0) == [5, 1]   # the last word boundary it fits behind
    assert insert_trigger("a  red dog", "x y", 0) == "x y a  red dog"
    assert insert_trigger("a red dog", "x y", 2) == "a red x y dog"


def test_dataset_vocab_counts_whole_words_per_image():
    bodies = [[5, 6], [5, 6, 6], [6, 7, 9], [8]]
    starts = [[0, 1, 2], [0, 1, 2, 3], [0, 1, 3], [0, 1]]   # caption 2: "6" then a two-token word "7 9"
    images = [[0, 1], [2], [3]]                            # id 5 is in two captions but one image
    allowed = torch.tensor([5, 6, 7, 8, 9])
    assert dataset_vocab(bodies, starts, images, allowed, 2).tolist() == [6]
    assert dataset_vocab(bodies, starts, images, allowed, 1).tolist() == [5, 6, 8]   # 7 and 9 only inside a word
    assert dataset_vocab(bodies, None, images, allowed, 0) is allowed
    assert dataset_vocab(bodies, starts, images, allowed, 2, others=Counter({5: 1, 8: 1})).tolist() == [5, 6, 8]
    with pytest.raises(ValueError, match="trigger_vocab_min_images"):
        dataset_vocab(bodies, starts, images, allowed, 3)


def test_protect_with_mid_caption_triggers(tiny_synth, tmp_path):
    """mem-3-blend = mem-3-robust (random positions, dropout) + trigger words from the dataset's own words."""
    m = api.protect(tiny_synth / "train.csv", tmp_path / "p", "mem-3-blend", device="cpu", progress=False,
                    **{**FAST, "eot": "rrc-flip"})
    src, prot = read_pairs(tiny_synth / "train.csv"), read_pairs(tmp_path / "p/publish/train.csv")
    images_with = {}
    for caps in src.image_captions:
        for w in {w.strip(".,").lower() for c in caps for w in src.captions[c].split()}:
            images_with[w] = images_with.get(w, 0) + 1
    assert all(images_with.get(w, 0) >= 10 for e in m["images"] for w in e["trigger"].split())
    codec = create_model("mmue-tiny-rn").codec
    moved = 0
    for i, entry in enumerate(m["images"]):
        trig = codec.encode(entry["trigger"])
        for c in prot.image_captions[i]:
            words, orig = prot.captions[c].split(), src.captions[c].split()
            at = next(w for w in range(len(orig) + 1) if words[:w] + words[w + len(entry["trigger"].split()):] == orig
                      and " ".join(words[w:w + len(entry["trigger"].split())]) == entry["trigger"])
            moved += at > 0
            ids = codec.tokenize([prot.captions[c]])[0].tolist()
            assert any(ids[j:j + 3] == trig for j in range(len(ids)))   # the trigger survives tokenizing
    assert moved > len(prot.captions) // 2 and m["config"]["eot"] == "rrc-flip" and m["max_linf_px"] <= 8


@pytest.mark.parametrize("method", ["em", "random", "trigger-only"])
def test_baselines(tiny_synth, tmp_path, method):
    m = api.protect(tiny_synth / "train.csv", tmp_path / method, method, device="cpu", progress=False, **FAST)
    triggers = {e["trigger"] for e in m["images"]}
    if method == "trigger-only":
        assert m["max_linf_px"] == 0 and "" not in triggers
    else:
        assert triggers == {""} and 0 < m["max_linf_px"] <= 8


def test_native_noise_covers_the_whole_image():
    from mmue.protect.export import native_noise
    n = torch.randint(-8, 9, (3, 8, 8), dtype=torch.int8)
    assert torch.equal(native_noise(n, 8, 8, 8), n)                 # same size: exact
    big = native_noise(n, 24, 16, 8)                                # landscape: stretched edge to edge
    assert big.shape == (3, 16, 24) and big.dtype == torch.int8 and big.abs().max() <= 8
    assert big[:, :, :4].abs().sum() > 0 and big[:, :, -4:].abs().sum() > 0
    small = native_noise(n, 4, 12, 8)                               # smaller than the grid on one side
    assert small.shape == (3, 12, 4) and small.abs().max() <= 8


def _wide_dataset(folder: Path, n: int = 6, size=(192, 64)) -> Path:
    rng = np.random.default_rng(0)
    (folder / "img").mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(40, 216, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"img/p{i}.png")
        rows.append(f"img/p{i}.png,a wide photo number {i}\n")
    (folder / "d.csv").write_text("filepath,caption\n" + "".join(rows))
    return folder / "d.csv"


def test_panorama_is_protected_edge_to_edge(tmp_path):
    """A 3:1 panorama: the noise reaches its left and right ends (the trainer's centre crop misses them, a
    random crop or a squash does not), |noise| <= 8 on the native pixels."""
    csv = _wide_dataset(tmp_path)
    man = api.protect(csv, tmp_path / "out", "mem-3", "low", device="cpu", progress=False, seed=0, **FAST)
    for i in range(6):
        clean = np.asarray(Image.open(tmp_path / f"img/p{i}.png"), dtype=np.int16)
        out = np.asarray(Image.open(tmp_path / "out" / man["images"][i]["file"]), dtype=np.int16)
        d = np.abs(out - clean)
        assert out.shape == clean.shape and d.max() <= 8
        left, centre, right = d[:, :19].mean(), d[:, 85:107].mean(), d[:, -19:].mean()   # 10 % each
        assert centre > 0.5 and left > 0.4 * centre and right > 0.4 * centre   # (centre-only PGD: ends all 0)


def test_jpeg_and_webp_output_record_what_survived(tmp_path):
    from mmue.protect.manifest import check_published
    csv = _wide_dataset(tmp_path, n=4, size=(96, 64))
    # an ICC profile (RGB) and GPS data on one source: the profile is kept, the location is not
    from PIL import ImageCms
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (52.0, 22.0, 0.0)}
    Image.open(tmp_path / "img/p0.png").convert("RGB").save(tmp_path / "img/p0.png", icc_profile=icc, exif=exif)
    for fmt, ext in (("jpeg", ".jpg"), ("webp", ".webp")):
        man = api.protect(csv, tmp_path / fmt, "random", device="cpu", progress=False, seed=0, image_format=fmt,
                          quality=90)
        assert man["image_format"] == fmt and man["quality"] == 90 and 0.3 < man["mean_noise_kept"] < 1.2
        assert check_published(tmp_path / fmt)["ok"]
        for e in man["images"]:
            # a projection: the codec error may add a little
            assert e["file"].endswith(ext) and 0 < e["noise_kept"] < 1.2
            with Image.open(tmp_path / fmt / e["file"]) as im:
                assert im.format == fmt.upper() and im.size == (96, 64)
                assert not im.getexif().get(0x8825)                              # no location data
                if e["source"].endswith("p0.png"):
                    assert im.info.get("icc_profile") == icc
                clean = np.asarray(Image.open(tmp_path / e["source"]).convert("RGB"), dtype=np.int16)
                assert e["linf_px"] == int(np.abs(np.asarray(im.convert("RGB"), dtype=np.int16) - clean).max())


def test_output_paths_mirror_relative_folders(tmp_path):
    from mmue.data.pairs import PairSet
    from mmue.protect.export import output_paths
    pairs = PairSet(tmp_path / "d.csv", tmp_path, "filepath", "caption", ",", ["filepath", "caption"], [{}, {}],
                    ["imgs/a/x.jpg", "imgs/b/y.png"], ["c1", "c2"], [0, 1])
    assert output_paths(pairs) == ["images/a/x.png", "images/b/y.png"]


def test_distinct_sources_never_share_an_output_file(tmp_path):
    from mmue.data.pairs import PairSet
    from mmue.protect.export import output_paths
    names = ["p/photo.png", "p/photo.jpg", "p/other.jpg", "p/Photo.JPG", "p/photo.jpeg"]
    pairs = PairSet(tmp_path / "d.csv", tmp_path, "filepath", "caption", ",", ["filepath", "caption"],
                    [{}] * 5, names, [f"c{i}" for i in range(5)], list(range(5)))
    out = output_paths(pairs)
    assert out[2] == "images/other.png"                                     # no clash: name kept
    assert out[0] == "images/photo-png.png" and out[1] == "images/photo-jpg.png"
    assert len({o.lower() for o in out}) == 5 and out == output_paths(pairs)   # distinct and deterministic


def test_one_image_under_two_spellings_is_one_image(tmp_path):
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "imgs" / "a.png")
    Image.new("RGB", (8, 8), (30, 20, 10)).save(tmp_path / "imgs" / "b.png")
    (tmp_path / "d.csv").write_text("filepath,caption\nimgs/a.png,first\nimgs/../imgs/a.png,second\n"
                                    f"{tmp_path / 'imgs' / 'a.png'},third\nimgs/b.png,fourth\n")
    p = read_pairs(tmp_path / "d.csv")
    assert p.n_images == 2 and p.caption_image == [0, 0, 0, 1] and p.images[0] == "imgs/a.png"


def test_exif_rotated_photo_comes_out_upright(tmp_path):
    """A phone photo stored sideways with an EXIF orientation tag is protected as viewers show it."""
    from PIL import ImageOps
    rng = np.random.default_rng(0)
    stored = Image.fromarray(rng.integers(0, 256, (24, 48, 3), dtype=np.uint8))   # 48 wide, 24 high on disk
    exif = Image.Exif()
    exif[0x0112] = 6                                                                # "rotate 90 CW to view"
    (tmp_path / "img").mkdir()
    stored.save(tmp_path / "img/phone.jpg", quality=95, exif=exif)
    for i in range(3):
        stored.save(tmp_path / f"img/plain{i}.png")
    (tmp_path / "d.csv").write_text("filepath,caption\nimg/phone.jpg,a phone photo\n"
                                    + "".join(f"img/plain{i}.png,plain {i}\n" for i in range(3)))
    upright = ImageOps.exif_transpose(Image.open(tmp_path / "img/phone.jpg")).convert("RGB")
    assert upright.size == (24, 48)
    man = api.protect(tmp_path / "d.csv", tmp_path / "out", "random", device="cpu", progress=False, seed=0)
    out = Image.open(tmp_path / "out" / man["images"][0]["file"])
    assert out.size == (24, 48) and not out.getexif().get(0x0112)                  # upright, no tag left
    diff = np.abs(np.asarray(out, dtype=np.int16) - np.asarray(upright, dtype=np.int16))
    assert diff.max() <= 8


def test_heic_photos_from_a_phone_are_read_or_refused_with_the_fix(tmp_path, monkeypatch):
    """iPhones store photos as HEIC: read through pillow-heif (mmue[heic]). HEIF turns a photo by the container's
    own rotation, which the reader applies; an EXIF orientation tag inside is ignored by HEIF viewers and reset by
    the reader, so it is not applied a second time. Without the reader: an error naming the photo and the fix."""
    from mmue.data import types
    pillow_heif = pytest.importorskip("pillow_heif")
    rng = np.random.default_rng(0)
    stored = Image.fromarray(rng.integers(0, 256, (24, 48, 3), dtype=np.uint8))
    pillow_heif.register_heif_opener()
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "photos").mkdir()
    stored.save(tmp_path / "photos/IMG_0001.HEIC", quality=95, exif=exif)
    (tmp_path / "photos/IMG_0001.txt").write_text("my phone photo\n")
    stored.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "photos/IMG_0002.heic", quality=95)
    (tmp_path / "photos/IMG_0002.txt").write_text("another one\n")
    man = api.protect(tmp_path / "photos", tmp_path / "out", "random", device="cpu", progress=False, seed=0)
    out = {Path(e["source"]).name: Image.open(tmp_path / "out" / e["file"]) for e in man["images"]}
    assert {k: v.size for k, v in out.items()} == {"IMG_0001.HEIC": (48, 24), "IMG_0002.heic": (24, 48)}
    shown = np.asarray(Image.open(tmp_path / "photos/IMG_0001.HEIC").convert("RGB"), dtype=np.int16)
    assert np.abs(np.asarray(out["IMG_0001.HEIC"], dtype=np.int16) - shown).max() <= 8   # the photo, +- the noise
    assert types._heif_reader()   # installed: registered with Pillow
    monkeypatch.setattr(types, "_heif_reader", lambda: False)
    with pytest.raises(DataError, match=r"IMG_0001.HEIC: a HEIC / HEIF photo.*pip install 'mmue\[heic\]'"):
        types.load_rgb(tmp_path / "photos/IMG_0001.HEIC")


MEASURE = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")


def test_twelve_megapixel_photo_keeps_memory_flat(tmp_path):
    """A 4000 x 3000 photo among small ones: protected whole (noise in its corners, |noise| <= 8), and the
    process's peak memory grows by less than 1.2 GB over the same run without it (the photo is read, stretched
    and written one at a time, never held as float copies beside the others)."""
    import subprocess
    rng = np.random.default_rng(0)
    for name, big in (("small", False), ("big", True)):
        d = tmp_path / name / "img"
        d.mkdir(parents=True)
        rows = []
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(d / f"s{i}.png")
            rows.append(f"img/s{i}.png,small picture {i}\n")
        if big:
            field = Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)).resize((4000, 3000),
                                                                                           Image.BICUBIC)
            field.save(d / "photo.jpg", quality=90)
            rows.append("img/photo.jpg,a twelve megapixel photo\n")
        (tmp_path / name / "d.csv").write_text("filepath,caption\n" + "".join(rows))
    peak = {}
    for name in ("small", "big"):
        r = subprocess.run([sys.executable, "-c", MEASURE, sys.executable, "-m", "mmue", "protect", "--train-data",
                            str(tmp_path / name / "d.csv"), "--out", str(tmp_path / name / "out"), "--method",
                            "random", "--seed", "0", "--device", "cpu"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        peak[name] = int(r.stdout.split()[-1]) / 1024
    assert peak["big"] - peak["small"] < 1200, peak
    man = json.loads((tmp_path / "big/out/private/manifest.json").read_text())
    e = next(e for e in man["images"] if e["source"].endswith("photo.jpg"))
    assert e["size"] == [4000, 3000] and e["linf_px"] <= 8
    out = np.asarray(Image.open(tmp_path / "big/out" / e["file"]), dtype=np.int16)
    clean = np.asarray(Image.open(tmp_path / "big/img/photo.jpg").convert("RGB"), dtype=np.int16)
    for corner in (out[:300, :300] - clean[:300, :300], out[-300:, -300:] - clean[-300:, -300:]):
        assert (corner != 0).mean() > 0.5


def test_a_second_surrogate_at_another_size_shapes_the_noise_too(tiny_synth):
    from mmue.protect.engine import at_size
    torch.manual_seed(0)
    big, small = create_model("mmue-tiny-rn-128").eval(), create_model("mmue-tiny-rn").eval()
    data = EncodedPairs.build(read_pairs(tiny_synth / "train.csv"), big.image_size, big.codec.encode, False)
    cfg = resolve("mem-3", **{**FAST, "pgd_steps": 3, "shuffle": False})
    with pytest.raises(ValueError, match="largest input size first"):
        MEMEngine(small, data, cfg, helpers=[big])
    alone, both = MEMEngine(big, data, cfg), MEMEngine(big, data, cfg, helpers=[small])
    assert "Helper(ClipModel('mmue-tiny-rn'" in repr(both)
    batch = alone.make_batch(torch.arange(16), torch.Generator().manual_seed(0))
    trig, zero = alone.init_state().triggers[:16], torch.zeros(16, 3, 128, 128)
    d_alone, _ = alone.image_step(batch, zero, trig, torch.Generator().manual_seed(1))
    d_both, _ = both.image_step(batch, zero, trig, torch.Generator().manual_seed(1))

    def small_loss(delta):   # what a 64 px trainer's model makes of the protected pairs
        with torch.no_grad():
            img = small.encode_image(at_size(both._pixels(batch, delta), 64)).float()
            return float(clip_loss(img, small.encode_text(batch.ids(trig)).float(), small.logit_scale.exp()))
    assert small_loss(d_both) < small_loss(d_alone)
    assert small_loss(d_both) < small_loss(zero)
    balanced = MEMEngine(big, data, dataclasses.replace(cfg, ensemble="balanced"), helpers=[small])
    d_bal, _ = balanced.image_step(batch, zero, trig, torch.Generator().manual_seed(1))
    assert small_loss(d_bal) < small_loss(zero) and not torch.equal(d_bal, d_both)


def test_balanced_sum_gives_each_surrogate_the_same_say():
    from mmue.protect.filters import balanced_sum
    g, h = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)).unbind(0)
    g, h = g[None].repeat(2, 1, 1, 1), h[None].repeat(2, 1, 1, 1)
    louder = h * torch.tensor([1000.0, 0.001]).view(2, 1, 1, 1)     # per image, one surrogate far louder / quieter
    assert torch.allclose(balanced_sum([g, louder]), balanced_sum([g, h]))
    raw, bal = (g + louder).sign(), balanced_sum([g, louder]).sign()
    assert torch.equal(raw[0], h[0].sign()) and torch.equal(raw[1], g[1].sign())   # summed raw: the loud one decides
    assert (bal[0] == g[0].sign()).float().mean() > 0.6                  # balanced: both have their say


def test_photo_png_is_a_lossless_png_with_the_profile():
    import io
    from mmue.protect.export import encode_image, photo_png
    from mmue.quality import diff_stats
    rng = np.random.default_rng(0)
    y = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    with Image.open(io.BytesIO(photo_png(y, icc))) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.info["icc_profile"] == icc
        assert np.array_equal(np.asarray(im), y)
    big = np.zeros((1001, 1000, 3), np.uint8)                        # > 1 MP: the photo encoder
    assert encode_image(big)[:8] == b"\x89PNG\r\n\x1a\n" and encode_image(big) == photo_png(big)
    a, b = torch.zeros(2, 3, dtype=torch.uint8), torch.full((2, 3), 200, dtype=torch.uint8)
    assert diff_stats(a, b)[1] == 200 and abs(diff_stats(a, b)[0] - 10 * np.log10(255 ** 2 / 200 ** 2)) < 1e-9
    assert diff_stats(a, a) == (float("inf"), 0)


def test_surrogate_restart_gives_each_round_new_weights(tiny_synth):
    # --surrogate-restart: every round after the first starts from fresh weights (drawn from the run's seed and
    # the round) and a new optimiser, without touching the global random stream the rest of the run draws from
    torch.manual_seed(0)
    model = create_model("mmue-tiny-rn")
    data = EncodedPairs.build(read_pairs(tiny_synth / "train.csv"), model.image_size, model.codec.encode, False)
    eng = MEMEngine(model, data, resolve("em", **{**FAST, "surrogate_restart": True}))
    before = {k: v.clone() for k, v in model.clip.state_dict().items()}
    old_optimizer, rng = eng.optimizer, torch.random.get_rng_state()
    eng.restart_surrogates(1)
    assert torch.equal(rng, torch.random.get_rng_state())
    assert eng.optimizer is not old_optimizer and not eng.optimizer.state
    after = {k: v.clone() for k, v in model.clip.state_dict().items()}
    assert any(not torch.equal(before[k], after[k]) for k in before)
    eng.restart_surrogates(1)   # the same round: the same weights; another round: others
    assert all(torch.equal(after[k], v) for k, v in model.clip.state_dict().items())
    eng.restart_surrogates(2)
    assert any(not torch.equal(after[k], v) for k, v in model.clip.state_dict().items())
    # in a run: the weights the last round trained from are round 1's fresh ones, not round 0's trained ones
    state = eng.init_state()
    eng.run(state, progress=False)
    assert state.rounds_done == FAST["rounds"]
    with pytest.raises(ValueError, match="surrogate-restart"):
        api.protect(tiny_synth / "train.csv", "unused", method="em", strength="low", surrogate_restart=True,
                    surrogate_pretrained="w.safetensors")


def test_noise_tuned_against_public_pretrained_weights_is_flagged(tiny_synth, tmp_path, caplog):
    import logging

    from mmue.protect.workflow import tuned_on_public_weights
    assert tuned_on_public_weights("mmue-effl0-minilm")
    assert tuned_on_public_weights("mmue-tiny-rn-128,mmue-tiny-rn+mmue-effl0-minilm")   # any stage, any member
    assert tuned_on_public_weights("mmue-tiny-rn", "w.safetensors")
    assert not tuned_on_public_weights("mmue-tiny-rn-128,mmue-tiny-rn+mmue-tiny-vit")
    caplog.set_level(logging.WARNING, logger="mmue.protect.workflow")
    with pytest.raises(FileNotFoundError):   # the weights do not exist: the warning came first
        api.protect(tiny_synth / "train.csv", tmp_path / "p", method="em", strength="low", rounds=0,
                    surrogate_pretrained=str(tmp_path / "missing.safetensors"), device="cpu", progress=False)
    assert "easier to match with their captions" in caplog.text and "missing.safetensors" in caplog.text


def test_a_stopped_run_is_not_resumed_on_changed_data(tiny_synth, tmp_path, monkeypatch):
    """The checkpoints' noise and triggers belong to the images and captions as they were when the run started:
    resuming after the folder changed (a photo added, a caption edited) is refused, not silently misaligned."""
    from tests.helpers.layouts import make_layout
    from mmue.protect.run import ProtectionRun
    from mmue.runs import RunDirError
    folder = make_layout(tiny_synth, tmp_path / "mine", "captions-txt", n=5)
    real = ProtectionRun.checkpoint

    def stop_after_round_one(self, engine, state, stats):
        real(self, engine, state, stats)
        if state.rounds_done == 1:
            raise KeyboardInterrupt
    monkeypatch.setattr(ProtectionRun, "checkpoint", stop_after_round_one)
    with pytest.raises(KeyboardInterrupt):
        api.protect(folder, tmp_path / "out", "mem-3", device="cpu", progress=False, rounds=2, seed=0)
    monkeypatch.setattr(ProtectionRun, "checkpoint", real)
    caption = folder / "photos" / "pic_2.txt"
    original = caption.read_text()
    caption.write_text("someone else's caption\n")
    with pytest.raises(RunDirError, match="changed since the protection .* started .*5 images and 5 captions then"):
        api.protect(folder, tmp_path / "out", "mem-3", device="cpu", progress=False, rounds=2, seed=0, resume=True)
    caption.write_text(original)   # as it was: the run resumes and finishes
    man = api.protect(folder, tmp_path / "out", "mem-3", device="cpu", progress=False, rounds=2, seed=0, resume=True)
    assert man["n_images"] == 5 and len(man["rounds_log"]) == 2
