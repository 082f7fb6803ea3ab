import numpy as np
import pytest
import torch

from mmue import api
from mmue.protect.autoregressive import ar_coefficients, ar_noise, ar_residual


def test_each_image_s_noise_is_told_apart_by_its_cluster_s_filter():
    g = torch.Generator().manual_seed(0)
    coeff = ar_coefficients(8, g, size=32)
    assert coeff.shape == (8, 3, 3, 3) and (coeff[:, :, -1, -1] == 0).all()
    assert torch.allclose(coeff.sum((2, 3)), torch.ones(8, 3))
    assert torch.equal(coeff, ar_coefficients(8, torch.Generator().manual_seed(0), size=32))   # seeded
    with pytest.raises(ValueError, match="ask for fewer --clusters"):   # no endless drawing
        ar_coefficients(2, g, size=32, max_spread=1.0, max_batches=2)
    clusters = torch.arange(64) % 8
    noise = ar_noise(clusters, coeff, (64, 3, 32, 32), 8, g)
    assert noise.dtype == torch.int8 and noise.abs().max() <= 8
    assert (noise != 0).float().mean() > 0.7            # the bound is used, not left at 0 by rounding
    # rows and columns alike: no corner holds the noise (the draws that grow along the raster were refused)
    halves = [noise[..., :16, :].float().std(), noise[..., 16:, :].float().std(), noise[..., :16].float().std(),
              noise[..., 16:].float().std()]
    assert max(halves) / min(halves) < 1.5
    own = ar_residual(noise, coeff[clusters]).abs().mean((1, 2, 3))
    others = torch.stack([ar_residual(noise, coeff[(clusters + k) % 8]).abs().mean((1, 2, 3)) for k in range(1, 8)])
    assert (own < others.amin(0)).float().mean() > 0.9   # the filter that annihilates its own process, not others'


def test_ar_cluster_writes_per_image_noise_and_no_trigger(tiny_synth, tmp_path):
    from PIL import Image
    from mmue.data import read_pairs
    from mmue.protect import ProtectConfig
    with pytest.raises(ValueError, match="noise=ar is per-image noise"):
        ProtectConfig(noise="ar", share="noise").validate()
    m = api.protect(tiny_synth / "train.csv", tmp_path / "ar", "ar-cluster", device="cpu", progress=False,
                    clusters=4)
    assert {e["trigger"] for e in m["images"]} == {""} and 0 < m["max_linf_px"] <= 8
    assert m["config"]["noise"] == "ar" and m["config"]["rounds"] == 0
    clean, prot = read_pairs(tiny_synth / "train.csv"), read_pairs(tmp_path / "ar/publish/train.csv")
    d = [np.asarray(Image.open(p.image_path(i)).convert("RGB"), dtype=np.int16) for p in (clean, prot) for i in (0, 1)]
    assert (d[2] != d[0]).mean() > 0.5 and not np.array_equal(d[2] - d[0], d[3] - d[1])   # a sample per image
