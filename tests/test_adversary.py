"""REM's inner adversary: a bounded worst-case perturbation, alone and inside the engine."""
import torch

from mmue.protect.adversary import worst_case


def _quadratic(target: torch.Tensor):
    return lambda p: -((p - target) ** 2).sum()   # highest at ``target``


def test_worst_case_climbs_the_loss_within_the_ball_and_the_pixel_range():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 0.0, 1.0          # pixels at the range's ends stay inside it
    target = (x + 0.5 * torch.randn_like(x)).clamp(0, 1)
    loss = _quadratic(target)
    eps = 4 / 255
    rho = worst_case(x, loss, eps, steps=3, g=g)
    assert not rho.requires_grad
    assert rho.abs().max() <= eps + 1e-7
    assert (x + rho).min() >= 0 and (x + rho).max() <= 1
    assert loss(x + rho) > loss(x)
    # where the loss's optimum lies beyond the ball, the ascent reaches the ball's edge toward it
    far = (target - x).abs() > 2 * eps
    assert torch.allclose((x + rho)[far], (x + eps * torch.sign(target - x))[far].clamp(0, 1), atol=1e-6)


def test_worst_case_is_off_at_zero_radius_and_seeded():
    x = torch.rand(1, 3, 4, 4)
    loss = _quadratic(torch.zeros_like(x))
    assert torch.equal(worst_case(x, loss, 0.0, 2, torch.Generator()), torch.zeros_like(x))
    a = worst_case(x, loss, 2 / 255, 1, torch.Generator().manual_seed(5))
    b = worst_case(x, loss, 2 / 255, 1, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_rem_changes_the_surrogate_and_the_noise_and_is_recorded(tiny_synth, tmp_path):
    from mmue import api
    fast = dict(rounds=1, surrogate_steps=3, pgd_steps=2, batch_size=32, device="cpu", progress=False, seed=1)
    plain = api.protect(tiny_synth / "train.csv", tmp_path / "plain", "em", **fast)
    rem = api.protect(tiny_synth / "train.csv", tmp_path / "rem", "em", adversary_eps=4 / 255, **fast)
    assert rem["config"]["adversary_eps"] == 4 / 255 and plain["config"]["adversary_eps"] == 0
    # the surrogate trained on worst-case neighbours of the images, so its loss differs from the first step on
    assert rem["rounds_log"][0]["surrogate_loss"] != plain["rounds_log"][0]["surrogate_loss"]
    assert rem["max_linf_px"] <= 8
