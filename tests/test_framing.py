import numpy as np
import torch
from PIL import Image

from mmue.data.images import preprocess
from mmue.data.types import pil_to_u8
from mmue.protect.export import native_noise
from mmue.protect.framing import Framing, blur, resize_kernel, tile_index, trainer_crop
from mmue.protect.pgd import apply_noise


def test_trainer_crop_follows_torchvision():
    assert trainer_crop(64, 64, 64) == (0, 0, 64, 64) and trainer_crop(192, 64, 64) == (64, 0, 64, 64)
    assert trainer_crop(4000, 3000, 64) == (471, 0, 3012, 3000)   # 85 px wide after the resize, crop from 10
    assert trainer_crop(100, 200, 64) == (0, 50, 100, 100)
    assert tile_index(10, 4, 1).tolist() == [3, 0, 1, 2, 3, 0, 1, 2, 3, 0]


def test_resize_kernel_is_what_a_stretch_and_a_trainers_resize_do():
    k = resize_kernel()
    assert k.shape == (5,) and abs(float(k.sum()) - 1) < 1e-6 and 0.70 < float(k[2]) < 0.76
    assert torch.allclose(k, k.flip(0)) and (k[[0, 4]] < 0).all()           # symmetric, bicubic's negative lobes
    s = 32
    delta = torch.randint(-8, 9, (1, 3, s, s)).float()
    big = native_noise(delta[0].to(torch.int8), 6 * s, 6 * s, 8).float()
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF
    back = TF.resize(big[None], [s, s], interpolation=InterpolationMode.BICUBIC, antialias=True)
    inner = (slice(None), slice(None), slice(3, -3), slice(3, -3))
    assert (back - blur(delta))[inner].abs().max() < 0.6                   # rounding of the int8 stretch only
    assert (back - delta)[inner].abs().mean() > 2                           # without the blur: far off
    assert resize_kernel("nearest")[2] > resize_kernel("bilinear")[2] + 0.05  # blocks keep more of a pixel


def _photo(w, h, seed=0):
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    return pil_to_u8(field)


def test_the_surrogate_sees_what_the_trainer_sees_of_the_published_photo():
    """Photos of several sizes and aspects: the trainer's own preprocessing (resize the shorter side to 64,
    centre crop) of the exported protected photo equals the surrogate's view (the stored centre crop plus the
    grid noise through the resize kernel) within 1/255 RMS; without the kernel it is much further."""
    s, g = 64, torch.Generator().manual_seed(0)
    to_pil = lambda t: Image.fromarray(t.permute(1, 2, 0).numpy())  # noqa: E731
    for w, h in ((384, 384), (576, 192), (384, 250), (250, 384), (1732, 1155)):
        native = _photo(w, h)
        grid_noise = torch.randint(-8, 9, (3, s, s), generator=g, dtype=torch.int16).to(torch.int8)
        published = apply_noise(native, native_noise(grid_noise, w, h, 8))
        trainer = preprocess(to_pil(published), s).float() / 255
        stored = preprocess(to_pil(native), s).float()[None] / 255
        seen = Framing(torch.tensor([[w, h]]), s)(stored, grid_noise.float()[None] / 255, torch.tensor([0]))[0]
        plain = stored[0] + grid_noise.float() / 255
        rms = lambda a: float((255 * (a - trainer)).pow(2).mean().sqrt())  # noqa: E731
        assert rms(seen) < 1.0 and rms(plain) > 2 * rms(seen), (w, h, rms(seen), rms(plain))


def test_a_wide_photo_carries_the_pattern_to_both_ends():
    s = 16
    grid_noise = torch.randint(-8, 9, (3, s, s), generator=torch.Generator().manual_seed(0),
                               dtype=torch.int16).to(torch.int8)
    n = native_noise(grid_noise, 3 * 48, 48, 8)                           # 3:1, shorter side 48 = 3 x the grid
    assert n.shape == (3, 48, 144)
    left, _, tw, _ = trainer_crop(144, 48, s)
    assert left == 48 and tw == 48
    assert torch.equal(n[:, :, :48], n[:, :, 48:96]) and torch.equal(n[:, :, 96:], n[:, :, 48:96])
    square = native_noise(grid_noise, 48, 48, 8)
    assert torch.equal(n[:, :, 48:96], square)                            # the centre copy is the square's noise


def test_images_at_the_grid_size_are_left_alone():
    fr = Framing(torch.tensor([[8, 8], [8, 20]]), 8)
    x, d = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8) / 30
    assert fr.trivial and torch.equal(fr(x, d, torch.arange(2)), x + d)
    big = Framing(torch.tensor([[500, 500], [8, 8]]), 8)                  # resized: blurred
    out = big(x, d, torch.arange(2))
    assert not big.trivial and torch.equal(out[1], x[1] + d[1]) and torch.allclose(out[0], x[0] + blur(d[:1])[0])
    assert "identity" in repr(fr) and "1/2" in repr(big)


def test_nearest_stretch_writes_blocks_and_is_modelled_too():
    s, g = 64, torch.Generator().manual_seed(1)
    grid_noise = torch.randint(-8, 9, (3, s, s), generator=g, dtype=torch.int16).to(torch.int8)
    blocks = native_noise(grid_noise, 384, 384, 8, "nearest")
    assert torch.equal(blocks[:, :6, :6], grid_noise[:, :1, :1].expand(3, 6, 6))   # 6 x 6 px per grid cell
    native = _photo(384, 384)
    to_pil = lambda t: Image.fromarray(t.permute(1, 2, 0).numpy())  # noqa: E731
    trainer = preprocess(to_pil(apply_noise(native, blocks)), s).float() / 255
    stored = preprocess(to_pil(native), s).float()[None] / 255
    seen = Framing(torch.tensor([[384, 384]]), s, "nearest")(stored, grid_noise.float()[None] / 255,
                                                             torch.tensor([0]))[0]
    assert float((255 * (seen - trainer)).pow(2).mean().sqrt()) < 1.0


def test_stretch_taps_are_the_interpolate_and_tile_they_replace():
    g = torch.Generator().manual_seed(0)
    grid = torch.randint(-8, 9, (3, 16, 16), generator=g).to(torch.int8)
    for w, h in ((48, 48), (100, 37), (37, 100), (161, 64)):
        left, top, tw, th = trainer_crop(w, h, 16)
        for mode in ("bilinear", "nearest"):
            ref = torch.nn.functional.interpolate(grid[None].float(), size=(th, tw), mode=mode,
                                                  **({"align_corners": False} if mode == "bilinear" else {}))[0]
            ref = ref[:, tile_index(h, th, top)][:, :, tile_index(w, tw, left)].round().clamp(-8, 8)
            got = native_noise(grid, w, h, 8, mode)
            assert got.shape == ref.shape and got.dtype == torch.int8
            diff = (got.float() - ref).abs()
            assert diff.max() <= (0 if mode == "nearest" else 1)     # bilinear: only ties at .5 may round apart
            assert (diff > 0).float().mean() < 1e-3


def test_no_native_noise_puts_more_of_a_grid_pattern_through_the_resize_than_the_bound():
    # benchmarks/noise_scale.py's bound (the docs choose the grid parameterisation by it): the best native noise
    # beats random native noise and both stretches, and blocks come within a few per cent of it
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from noise_scale import best_native, trainer_view
    g = torch.Generator().manual_seed(0)
    grid = (torch.randint(0, 2, (3, 64, 64), generator=g) * 2 - 1).float()
    w, h = 384, 288

    def along(native):
        return float((trainer_view(native.float()) * grid).sum() / grid.numel())

    best = along(best_native(grid, w, h))
    random = along(8 * (torch.randint(0, 2, (3, h, w), generator=g) * 2 - 1))
    bilinear = along(native_noise((8 * grid).to(torch.int8), w, h, 8))
    blocks = along(native_noise((8 * grid).to(torch.int8), w, h, 8, stretch="nearest"))
    assert abs(random) < 0.2 < bilinear < blocks <= best < 8 and blocks > 0.9 * best
