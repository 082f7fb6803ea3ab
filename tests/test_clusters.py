import numpy as np
import pytest
import torch

from mmue import api
from mmue.protect import ProtectionState
from mmue.protect.clusters import caption_clusters, cluster_targets, kmeans
from mmue.protect.noise import ClusterNoise

FAST = dict(rounds=2, surrogate_steps=3, pgd_steps=2, batch_size=32, clusters=4)


def test_kmeans_finds_separated_groups_and_leaves_none_empty():
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(4)
    x = centres.repeat_interleave(25, 0) + 0.05 * torch.randn(100, 4, generator=g)
    x = x / x.norm(dim=1, keepdim=True)
    a = kmeans(x, 4, seed=0)
    for grp in range(4):   # each true group lands in exactly one cluster
        assert len(set(a[grp * 25:(grp + 1) * 25].tolist())) == 1
    assert len(set(a.tolist())) == 4
    many = kmeans(x, 40, seed=0)   # more clusters than groups: none ends empty
    assert torch.bincount(many, minlength=40).min() >= 1
    assert torch.equal(kmeans(x, 4, seed=3), kmeans(x, 4, seed=3))


def test_caption_clusters_group_shared_words():
    bodies = [[1, 2, 3], [1, 2, 4], [7, 8, 9], [7, 8, 5], [1, 2, 3], [7, 9, 8]]
    a = caption_clusters(bodies, [[i] for i in range(6)], 2, seed=0).tolist()
    assert a[0] == a[1] == a[4] and a[2] == a[3] == a[5] and a[0] != a[2]


def test_cluster_targets_permute_clusters_without_a_fixed_point():
    clusters = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3, 3])
    for seed in range(5):
        t = cluster_targets(clusters, seed)
        to = clusters[t]
        assert (to != clusters).all()                                   # never its own cluster
        for c in range(4):                                              # one target cluster per cluster ...
            assert len(set(to[clusters == c].tolist())) == 1
        assert sorted(set(to.tolist())) == [0, 1, 2, 3]                 # ... a permutation of them
        assert torch.equal(t, cluster_targets(clusters, seed))          # a function of the seed
    assert torch.equal(cluster_targets(torch.zeros(3, dtype=torch.long), 0), torch.arange(3))


def test_targeted_image_step_pulls_images_toward_the_target_captions(tiny_synth):
    from mmue.data import read_pairs
    from mmue.data.encoded import EncodedPairs
    from mmue.losses import clip_loss
    from mmue.models import create_model
    from mmue.protect.engine import MEMEngine
    from mmue.protect.registry import resolve
    with pytest.raises(ValueError, match="needs shuffle off"):
        resolve("tap-cluster", shuffle=True)
    torch.manual_seed(0)
    model = create_model("mmue-tiny-rn").eval()
    data = EncodedPairs.build(read_pairs(tiny_synth / "train.csv"), model.image_size, model.codec.encode, False)
    eng = MEMEngine(model, data, resolve("tap-cluster", **{**FAST, "pgd_steps": 4}))
    idx = torch.arange(16)
    own, aimed = eng.make_batch(idx, torch.Generator().manual_seed(0)), \
        eng.make_batch(idx, torch.Generator().manual_seed(0), aim=True)
    assert not torch.equal(own.template, aimed.template)
    assert (eng.clusters[eng.targets[idx]] != eng.clusters[idx]).all()
    delta, _ = eng.image_step(aimed, torch.zeros(16, 3, 64, 64), torch.zeros(16, 0, dtype=torch.long),
                              torch.Generator().manual_seed(1))

    def loss(batch, d):
        with torch.no_grad():
            img = model.encode_image(eng._pixels(batch, d)).float()
            return float(clip_loss(img, model.encode_text(batch.template).float(), model.logit_scale.exp()))
    zero = torch.zeros_like(delta)
    assert loss(aimed, delta) < loss(aimed, zero)      # closer to the captions aimed at
    assert delta.abs().max() <= 8 / 255 + 1e-6


def test_cluster_step_moves_one_pattern_per_cluster():
    noise = ClusterNoise(8, torch.tensor([0, 0, 1, 1]))
    state = ProtectionState(torch.zeros(4, 3, 2, 2, dtype=torch.int8), torch.zeros(4, 0, dtype=torch.long))
    noise.init(state, torch.Generator().manual_seed(0), random=False)
    x = torch.full((4, 3, 2, 2), 0.5)
    grad = torch.tensor([1.0, 3.0, -1.0, 0.5]).view(4, 1, 1, 1).expand(4, 3, 2, 2)
    delta = noise.step(state, torch.arange(4), torch.zeros(4, 3, 2, 2), grad, 1 / 255, x, 8 / 255)
    assert torch.allclose(state.patterns[0], torch.full((3, 2, 2), -1 / 255))   # sign of 1 + 3
    assert torch.allclose(state.patterns[1], torch.full((3, 2, 2), 1 / 255))    # sign of -1 + 0.5
    assert torch.equal(delta[0], delta[1]) and torch.equal(delta[2], delta[3])


@pytest.mark.parametrize("method", ["mem-3-cluster", "random-cluster"])
def test_cluster_presets_share_noise_and_trigger(tiny_synth, tmp_path, method):
    m = api.protect(tiny_synth / "train.csv", tmp_path / method, method, device="cpu", progress=False, **FAST)
    from PIL import Image
    from mmue.data import read_pairs
    clean, prot = read_pairs(tiny_synth / "train.csv"), read_pairs(tmp_path / method / "publish/train.csv")
    triggers = [e["trigger"] for e in m["images"]]
    assert 1 < len(set(triggers)) <= 4 and "" not in triggers
    # images with one trigger share one cluster, hence one noise pattern (up to clipping at 0 and 255)
    by_trigger: dict[str, list[np.ndarray]] = {}
    for i in range(len(clean.images)):
        a = np.asarray(Image.open(clean.image_path(i)).convert("RGB"), dtype=np.int16)
        b = np.asarray(Image.open(prot.image_path(i)).convert("RGB"), dtype=np.int16)
        inside = (a >= 8) & (a <= 247)
        by_trigger.setdefault(triggers[i], []).append(np.where(inside, b - a, 99))
    for noises in by_trigger.values():
        ref = noises[0]
        for n in noises[1:]:
            both = (ref != 99) & (n != 99)
            assert (ref[both] == n[both]).mean() > 0.99
    assert 0 < m["max_linf_px"] <= 8


def test_block_noise_is_constant_on_squares_at_the_bound():
    from mmue.protect.pgd import random_noise
    r = random_noise((3, 3, 20, 20), 8, torch.Generator().manual_seed(0), block=8)
    assert r.dtype == torch.int8 and r.shape == (3, 3, 20, 20)
    assert set(r.unique().tolist()) == {-8, 8}
    assert (r[:, :, :8, :8] == r[:, :, :1, :1]).all() and (r[:, :, 16:, 16:] == r[:, :, 16:17, 16:17]).all()
    assert torch.equal(r, random_noise((3, 3, 20, 20), 8, torch.Generator().manual_seed(0), block=8))
    uniform = random_noise((3, 3, 20, 20), 8, torch.Generator().manual_seed(0))
    assert uniform.unique().numel() > 2                     # block 1: the per-pixel uniform baseline as before


def test_random_cluster_with_blocks_writes_patchwise_patterns(tiny_synth, tmp_path):
    from mmue.protect import ProtectConfig
    with pytest.raises(ValueError, match="needs image noise"):
        ProtectConfig(noise="none", noise_block=8).validate()
    m = api.protect(tiny_synth / "train.csv", tmp_path / "b", "random-cluster", device="cpu", progress=False,
                    noise_block=8, clusters=4)
    from PIL import Image
    from mmue.data import read_pairs
    clean, prot = read_pairs(tiny_synth / "train.csv"), read_pairs(tmp_path / "b/publish/train.csv")
    a = np.asarray(Image.open(clean.image_path(0)).convert("RGB"), dtype=np.int16)
    b = np.asarray(Image.open(prot.image_path(0)).convert("RGB"), dtype=np.int16)
    d, inside = b - a, (a >= 8) & (a <= 247)
    assert set(np.unique(d[inside]).tolist()) <= {-8, 8}
    square = d[:8, :8][inside[:8, :8]].reshape(-1)
    assert m["max_linf_px"] == 8 and m["config"]["noise_block"] == 8
    # one sign per channel over an 8 x 8 square (where the pixel range does not clip it)
    for ch in range(3):
        vals = d[:8, :8, ch][inside[:8, :8, ch]]
        assert len(set(vals.tolist())) <= 1
    assert square.size > 0


def test_word_codes_take_each_images_rarest_words_that_enough_images_use():
    from mmue.protect.clusters import caption_word_codes
    # token 1 in every caption, 2 in four, 3 in three, 4 in two, 8 and 9 in one each
    bodies = [[1, 2, 3, 9], [1, 2, 3, 4], [1, 2, 3], [1, 2, 4], [1], [1, 8]]
    images = [[i] for i in range(len(bodies))]
    codes = caption_word_codes(bodies, images, words=2, min_images=2, seed=0)
    assert codes[0].tolist() == [3, 2]    # 9 is used by one image only: a rare-word filter would drop it
    assert codes[1].tolist() == [4, 3]
    assert codes[4].tolist() == [1, -1]   # one token: the code is shorter
    assert codes[5].tolist() == [1, 8]    # nothing common enough but 1: a rare one fills the rest
    assert torch.equal(codes, caption_word_codes(bodies, images, words=2, min_images=2, seed=0))


def test_word_noise_is_the_mean_of_its_words_patterns_and_steps_each_by_its_images():
    from mmue.protect.noise import SharedNoise
    codes = torch.tensor([[10, 20], [10, -1], [30, 20]])
    noise = SharedNoise(8, codes)
    assert noise.k == 3 and noise.ids.tolist() == [10, 20, 30]
    state = ProtectionState(torch.zeros(3, 3, 2, 2, dtype=torch.int8), torch.zeros(3, 0, dtype=torch.long))
    noise.init(state, torch.Generator().manual_seed(0), random=True)
    p = state.patterns
    mixed = noise.mix(p, torch.arange(3))
    assert torch.allclose(mixed[0], (p[0] + p[1]) / 2) and torch.allclose(mixed[1], p[0])
    assert torch.allclose(mixed[2], (p[2] + p[1]) / 2)
    noise.init(state, torch.Generator().manual_seed(0), random=False)
    x = torch.full((3, 3, 2, 2), 0.5)
    grad = torch.tensor([1.0, -3.0, 4.0]).view(3, 1, 1, 1).expand(3, 3, 2, 2)
    delta = noise.step(state, torch.arange(3), torch.zeros(3, 3, 2, 2), grad, 1 / 255, x, 8 / 255)
    assert torch.allclose(state.patterns[0], torch.full((3, 2, 2), 1 / 255))    # sign of 1/2 - 3
    assert torch.allclose(state.patterns[1], torch.full((3, 2, 2), -1 / 255))   # sign of 1/2 + 4/2
    assert torch.allclose(state.patterns[2], torch.full((3, 2, 2), -1 / 255))   # sign of 4/2
    assert torch.allclose(delta[0], torch.zeros(3, 2, 2)) and torch.allclose(delta[1], state.patterns[0])


def test_random_words_noise_follows_the_captions_words_and_keeps_the_captions(tiny_synth, tmp_path):
    from PIL import Image
    from mmue.data import read_pairs
    m = api.protect(tiny_synth / "train.csv", tmp_path / "w", "random-words", device="cpu", progress=False,
                    code_min_images=2)
    assert m["config"]["share"] == "words" and 0 < m["max_linf_px"] <= 8
    clean, prot = read_pairs(tiny_synth / "train.csv"), read_pairs(tmp_path / "w/publish/train.csv")
    assert prot.captions == clean.captions   # nothing added to the captions
    diffs = []
    for i in range(len(clean.images)):
        a = np.asarray(Image.open(clean.image_path(i)).convert("RGB"), dtype=np.int16)
        b = np.asarray(Image.open(prot.image_path(i)).convert("RGB"), dtype=np.int16)
        diffs.append(np.where((a >= 8) & (a <= 247), b - a, 99))
    # the mean of 3 patterns at +-8 on 8 px squares: +-8 or +-8/3 rounded
    vals = set(np.unique(np.concatenate([d[d != 99] for d in diffs])).tolist())
    assert vals <= {-8, -3, 3, 8} and {-8, 8} <= vals
    # images with different words get different noise; many share some of it (a word in common)
    same = [(diffs[i] == diffs[j])[(diffs[i] != 99) & (diffs[j] != 99)].mean()
            for i in range(len(diffs)) for j in range(i)]
    assert max(same) > min(same) + 0.2 and min(same) < 0.6
