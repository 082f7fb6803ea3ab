import numpy as np
import pytest
import torch

from mmue import api
from mmue.protect import ProtectConfig
from mmue.protect.convolution import BLUR, conv_filters, conv_images, conv_noise


def test_kernels_are_cuda_s_draws_and_seeded():
    k = conv_filters(16, torch.Generator().manual_seed(0))
    assert k.shape == (16, 3, 3) and torch.equal(k, conv_filters(16, torch.Generator().manual_seed(0)))
    flat = k.flatten(1)
    assert ((flat == 1).sum(1) == 1).all() and (flat[flat != 1] < BLUR).all() and (flat >= 0).all()


def test_the_noise_is_the_filtering_clipped_to_the_bound():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (6, 3, 16, 16), generator=g, dtype=torch.uint8)
    kernels, clusters = conv_filters(3, g), torch.tensor([0, 1, 2, 0, 1, 2])
    target = (conv_images(x.float() / 255, kernels[clusters]) * 255).round()
    assert target.amax((1, 2, 3)).eq(255).all()                       # each image divided by its maximum
    wide = conv_noise(x, clusters, kernels, 127)
    assert (x.float() + wide.float()).sub(target).abs()[target.sub(x.float()).abs() <= 127].max() == 0
    tight = conv_noise(x, clusters, kernels, 8)
    assert tight.abs().max() == 8 and torch.equal(tight, wide.clamp(-8, 8))
    # a cluster's images share one kernel: the same image in two clusters gets two different noises
    assert not torch.equal(conv_noise(x[:1], torch.tensor([0]), kernels, 8),
                           conv_noise(x[:1], torch.tensor([1]), kernels, 8))


def test_eps_is_refused_beyond_what_int8_noise_holds():
    with pytest.raises(ValueError, match=r"eps must be <= 127/255 \(got 200/255\)"):
        ProtectConfig(eps=200 / 255).validate()
    ProtectConfig(eps=127 / 255).validate()


def test_conv_cluster_writes_the_filtered_images_and_no_trigger(tiny_synth, tmp_path):
    from PIL import Image
    from mmue.data import read_pairs
    with pytest.raises(ValueError, match="noise=conv is per-image noise"):
        ProtectConfig(noise="conv", noise_block=8).validate()
    m = api.protect(tiny_synth / "train.csv", tmp_path / "c", "conv-cluster", device="cpu", progress=False,
                    clusters=4)
    assert {e["trigger"] for e in m["images"]} == {""} and m["max_linf_px"] == 8
    assert m["config"]["noise"] == "conv" and m["config"]["rounds"] == 0
    clean, prot = read_pairs(tiny_synth / "train.csv"), read_pairs(tmp_path / "c/publish/train.csv")
    a, b = (np.asarray(Image.open(p.image_path(0)).convert("RGB"), dtype=np.int16) for p in (clean, prot))
    assert (a != b).mean() > 0.3
