import numpy as np
import pytest
import torch

from mmue.protect.export import noise_kept
from mmue.quality import add_noise, diff_stats, psnr


def test_diff_stats_are_exact_across_row_blocks():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (300, 7, 3), dtype=np.uint8)               # 300 rows: several blocks
    b = a.copy()
    b[299, 6, 2] = a[299, 6, 2] ^ 0x80                                  # one value far off, in the last block
    d = b.astype(np.int64) - a.astype(np.int64)
    p, linf = diff_stats(a, b)
    assert linf == abs(int(d[299, 6, 2])) and p == pytest.approx(10 * np.log10(255 ** 2 / (d ** 2).mean()))
    assert psnr(torch.from_numpy(a), torch.from_numpy(b)) == p           # tensors too
    assert diff_stats(a, a) == (float("inf"), 0)


def test_noise_kept_is_the_share_of_the_noise_left():
    rng = np.random.default_rng(1)
    x = rng.integers(20, 230, (200, 9, 3), dtype=np.uint8)
    y = (x.astype(np.int16) + rng.choice([-8, 8], x.shape)).astype(np.uint8)
    assert noise_kept(x, y, y) == 1.0 and noise_kept(x, y, x) == 0.0
    half = ((x.astype(np.int16) + y) // 2).astype(np.uint8)            # what a blur would leave: half of it
    assert noise_kept(x, y, half) == pytest.approx(0.5, abs=0.07)


def test_add_noise_saturates_and_measures_what_it_changed():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (150, 11, 3), dtype=np.uint8)            # values at 0 and 255 clip
    n = rng.integers(-8, 9, x.shape).astype(np.int8)
    y, p, linf = add_noise(x, n)
    assert y.dtype == np.uint8 and np.array_equal(y, np.clip(x.astype(np.int16) + n, 0, 255))
    assert (p, linf) == diff_stats(x, y)
    assert add_noise(x, np.zeros_like(n))[1:] == (float("inf"), 0)
