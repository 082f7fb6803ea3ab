"""The PGD views and gradient filters: each a small callable with a readable repr."""
import pytest
import torch

from mmue.protect.filters import GaussianBlur, GradientFilter, make_filter
from mmue.protect.views import Crop, CropFlip, Identity, Jpeg, RandomChoice, Resize, parse_view


def test_parse_view_specs():
    assert isinstance(parse_view("none"), Identity)
    assert isinstance(parse_view("rrc-flip"), CropFlip)
    assert isinstance(parse_view("jpeg"), Jpeg) and repr(parse_view("jpeg")) == "Jpeg(quality=10..95)"
    assert repr(parse_view("resize-32")) == "Resize(32)"
    assert isinstance(parse_view("crop-0.9"), Crop) and repr(parse_view("crop-0.9")) == "Crop(scale=0.9..1)"
    assert repr(parse_view("jpeg-75")) == "Jpeg(quality=75..75)"
    assert repr(parse_view("jpeg-50-95")) == "Jpeg(quality=50..95)"
    mix = parse_view("rrc-flip|jpeg|resize-48")
    assert isinstance(mix, RandomChoice) and len(mix.views) == 3
    for bad in ("png", "resize-2", "jpeg|", "", "crop-0.01", "crop-2", "crop-", "jpeg-0", "jpeg-90-50", "jpeg-101"):
        with pytest.raises(ValueError, match="a view must be"):
            parse_view(bad)


@pytest.mark.parametrize("spec", ["none", "rrc-flip", "crop-0.9", "jpeg", "jpeg-60-90", "resize-16",
                                  "rrc-flip|jpeg|resize-16"])
def test_views_keep_shape_range_and_gradient(spec):
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    y = parse_view(spec)(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= -1e-3 and y.max() <= 1 + 1e-3
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_resize_view_removes_what_a_downscale_removes():
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2   # 1-pixel checkerboard
    x = checker.float().expand(1, 3, 32, 32)
    y = Resize(16)(x, torch.Generator())
    assert (y - 0.5).abs().max() < 0.05     # the finest pattern does not survive 16 px
    smooth = torch.linspace(0, 1, 32).expand(1, 3, 32, 32)
    assert (Resize(16)(smooth, torch.Generator()) - smooth).abs().max() < 0.05


def test_mild_crop_resamples_every_pixel_and_is_seeded():
    x = torch.rand(2, 3, 32, 32)
    a = Crop(0.9)(x, torch.Generator().manual_seed(1))
    b = Crop(0.9)(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    # a crop of >= 90 % of the area, resized back, moves pixel-level noise: little of it stays in place
    assert (a - x).abs().mean() > 0.1


def test_random_choice_draws_from_its_generator():
    mix = RandomChoice([Identity(), Resize(8)])
    x = torch.rand(1, 3, 32, 32)
    a = [not torch.equal(mix(x, g), x) for g in [torch.Generator().manual_seed(0)] for _ in range(20)]
    b = [not torch.equal(mix(x, g), x) for g in [torch.Generator().manual_seed(0)] for _ in range(20)]
    assert a == b and 0 < sum(a) < 20


def test_gradient_filters():
    g = torch.randn(2, 3, 32, 32)
    assert make_filter(0).__class__ is GradientFilter and torch.equal(make_filter(0)(g), g)
    blur = make_filter(2.0)
    assert isinstance(blur, GaussianBlur) and repr(blur) == "GaussianBlur(sigma=2.0)"
    out = blur(g)
    # neighbouring signs agree far more often after smoothing (low-frequency noise)
    agree = lambda t: (t[..., 1:].sign() == t[..., :-1].sign()).float().mean()  # noqa: E731
    assert agree(out) > 0.8 > agree(g) + 0.2


def test_block_filter_moves_whole_squares():
    from mmue.protect.filters import BlockSum
    g = torch.randn(2, 3, 20, 20)
    f = make_filter(0, block=8)
    out = f(g)
    assert isinstance(f, BlockSum) and repr(f) == "BlockSum(block=8)" and out.shape == g.shape
    # each square carries its own sum, on every one of its pixels; the ragged edge squares too
    assert torch.allclose(out[:, :, 3, 5], g[:, :, :8, :8].sum((-2, -1)))
    assert torch.allclose(out[:, :, 17, 19], g[:, :, 16:, 16:].sum((-2, -1)))
    assert (out[:, :, :8, :8] == out[:, :, :1, :1]).all() and not torch.equal(out[:, :, 0, 0], out[:, :, 0, 8])
    assert repr(make_filter(1.0, "maximise", block=4)) == "Ascend(BlockSum(GaussianBlur(sigma=1.0), block=4))"


def test_tile_filter_makes_one_tile_repeated():
    from mmue.protect.filters import TileSum
    g = torch.randn(2, 3, 20, 20)
    f = make_filter(0, tile=8)
    out = f(g)
    assert isinstance(f, TileSum) and repr(f) == "TileSum(period=8)" and out.shape == g.shape
    # every pixel carries the sum over all pixels with its coordinates modulo 8 (edge copies partial)
    assert torch.allclose(out[:, :, 3, 5], g[:, :, 3::8, 5::8].sum((-2, -1)))
    assert torch.allclose(out[:, :, 19, 17], g[:, :, 3::8, 1::8].sum((-2, -1)))
    assert torch.equal(out[..., :8, :8], out[..., 8:16, 8:16]) and torch.equal(out[..., :4, :4], out[..., 16:, 16:])
    assert not torch.equal(out[..., 0, 0], out[..., 0, 1])
    assert repr(make_filter(1.0, "maximise", tile=4)) == "Ascend(TileSum(GaussianBlur(sigma=1.0), period=4))"


def test_ascend_filter_turns_the_step_around():
    from mmue.protect.filters import Ascend
    g = torch.randn(1, 3, 8, 8)
    up = make_filter(0, "maximise")
    assert isinstance(up, Ascend) and torch.equal(up(g), -g) and repr(up) == "Ascend(Identity())"
    assert repr(make_filter(1.5, "maximise")) == "Ascend(GaussianBlur(sigma=1.5))"


def test_surrogate_view_is_the_surrogates_augmentation_and_checked_like_eot(tiny_synth, tmp_path):
    from mmue import api
    from mmue.protect import ProtectConfig
    with pytest.raises(ValueError, match="surrogate_view: a view must be"):
        ProtectConfig(surrogate_view="png").validate()
    fast = dict(rounds=1, surrogate_steps=3, pgd_steps=1, batch_size=32, device="cpu", progress=False, seed=1)
    plain = api.protect(tiny_synth / "train.csv", tmp_path / "plain", "mem-3", **fast)
    cropped = api.protect(tiny_synth / "train.csv", tmp_path / "crop", "mem-3", surrogate_view="rrc-flip", **fast)
    assert cropped["config"]["surrogate_view"] == "rrc-flip" and plain["config"]["surrogate_view"] == "none"
    # the surrogate learned from other pixels, so the noise fitted to it differs
    assert cropped["rounds_log"][0]["surrogate_loss"] != plain["rounds_log"][0]["surrogate_loss"]
