import pytest
import torch

from mmue.protect.hotflip import greedy_rerank, hotflip_candidates, trigger_options
from mmue.protect.jpeg import diff_jpeg, quant_table
from mmue.protect.pgd import apply_noise, project, quantise, random_noise, sign_step
from mmue.quality import psnr


def test_projection_bounds():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 8, 8, generator=g)
    x[0] = 0.0
    x[1] = 1.0
    d = torch.randn(4, 3, 8, 8, generator=g)
    p = project(d, x, 8 / 255)
    assert p.abs().max() <= 8 / 255 + 1e-7
    assert (x + p).min() >= 0 and (x + p).max() <= 1
    s = sign_step(torch.zeros_like(x), torch.randn(x.shape, generator=g), 1 / 255, x, 8 / 255)
    assert s.abs().max() <= 1 / 255 + 1e-7


def test_sign_step_descends_a_linear_loss():
    x = torch.full((1, 3, 4, 4), 0.5)
    w = torch.randn(1, 3, 4, 4)
    d = sign_step(torch.zeros_like(x), w, 1 / 255, x, 8 / 255)
    assert (w * d).sum() < 0


def test_quantise_bounds_and_round_trip():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (5, 3, 6, 6), generator=g, dtype=torch.uint8)
    x[0] = 0
    x[1] = 255
    delta = (torch.rand(x.shape, generator=g) - 0.5) * 0.2        # up to ±25 px, deliberately too large
    q = quantise(x, delta, 8)
    assert q.dtype == torch.int8 and q.abs().max() <= 8
    y = apply_noise(x, q)
    assert (y.int() - x.int()).abs().max() <= 8
    assert torch.equal(y.int() - x.int(), q.int())            # no clipping left for apply_noise to do
    # integer deltas within bounds are represented exactly
    d_int = project(torch.randint(-8, 9, x.shape, generator=g).float() / 255, x.float() / 255, 8 / 255)
    assert torch.equal(quantise(x, d_int, 8).float() / 255, d_int.mul(255).round() / 255)


def test_random_noise_and_psnr():
    g = torch.Generator().manual_seed(0)
    r = random_noise((2, 3, 32, 32), 8, g)
    assert r.min() == -8 and r.max() == 8
    x = torch.full((3, 32, 32), 128, dtype=torch.uint8)
    assert psnr(x, x) == float("inf")
    expected = 20 * torch.log10(torch.tensor(255 / 8)).item()
    assert psnr(x, apply_noise(x, torch.full((3, 32, 32), 8, dtype=torch.int8))) == pytest.approx(expected, rel=1e-5)


def test_hotflip_candidates_brute_force():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(50, 6, generator=g)
    grad = torch.randn(2, 3, 6, generator=g)
    allowed = torch.tensor([3, 5, 7, 11, 13, 17, 19])
    c = hotflip_candidates(grad, emb, allowed, 3)
    assert c.shape == (2, 3, 3)
    for b in range(2):
        for j in range(3):
            scores = {int(t): -(grad[b, j] @ emb[t]).item() for t in allowed}
            want = sorted(scores, key=lambda t: -scores[t])[:3]
            assert c[b, j].tolist() == want


def test_greedy_rerank_finds_best_per_position():
    triggers = torch.tensor([[1, 1], [1, 1]])
    cands = torch.tensor([[[5, 6], [7, 8]], [[9, 10], [11, 12]]])   # [B=2,k=2,C=2]
    opts = trigger_options(triggers, cands, 0)
    assert opts.shape == (3, 2, 2) and opts[0].tolist() == [[1, 1], [1, 1]] and opts[2, 1].tolist() == [10, 1]

    target = torch.tensor([[6, 7], [10, 11]])

    def loss(options):  # distance to a target trigger, summed over the batch
        return (options != target).sum(dim=(1, 2)).float()
    new, best = greedy_rerank(triggers, cands, loss)
    assert new.tolist() == target.tolist() and best == 0


def test_diff_jpeg_matches_pillow_and_passes_gradients():
    import io

    import numpy as np
    from PIL import Image, ImageDraw
    g = torch.Generator().manual_seed(0)
    imgs = []
    for i in range(4):  # smooth gradients + shapes + a little noise, 40x56: not whole 16x16 macro-blocks
        im = Image.linear_gradient("L").resize((56, 40)).convert("RGB")
        ImageDraw.Draw(im).ellipse((5 + i, 4, 30 + 3 * i, 30), fill=(200, 40 * i, 90))
        a = np.asarray(im).astype(np.int16) + (torch.randint(-6, 7, (40, 56, 3), generator=g)).numpy()
        imgs.append(a.clip(0, 255).astype(np.uint8))
    x = torch.tensor(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255
    for q in (30, 75):
        ref = []
        for a in imgs:
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, "JPEG", quality=q)
            ref.append(np.asarray(Image.open(buf).convert("RGB")))
        ref = torch.tensor(np.stack(ref)).permute(0, 3, 1, 2).float() / 255
        out = diff_jpeg(x, q)
        assert out.shape == x.shape
        changed = (ref - x).abs().mean()                   # what JPEG does to the image
        assert (out - ref).abs().mean() < 0.3 * changed     # ours lands close to libjpeg's result
    assert quant_table(50)[0, 0] == 16 and quant_table(100).max() == 1 and quant_table(10, chroma=True)[7, 7] == 255
    d = torch.zeros_like(x, requires_grad=True)
    diff_jpeg(x + d, 30).sum().backward()
    assert d.grad.abs().sum() > 0                           # rounding passes gradients straight through
