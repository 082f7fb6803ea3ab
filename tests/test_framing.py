import numpy as np
import torch
from PIL import Image

from mmue.data.images import preprocess
from mmue.data.types import pil_to_u8
from mmue.protect.export import native_noise
from mmue.protect.framing import FULL, Framing, blur, centre_boxes, frame, resize_kernel
from mmue.protect.pgd import apply_noise


def test_centre_boxes():
    b = centre_boxes(torch.tensor([[64, 64], [192, 64], [100, 200], [4000, 3000]]), 64)
    assert torch.allclose(b, torch.tensor([list(FULL), [1 / 3, 0, 2 / 3, 1], [0, 0.25, 1, 0.75],
                                           [10 / 85, 0, 74 / 85, 1]]))            # 85 px wide, crop from 10


def test_full_boxes_are_the_identity_exactly():
    x = torch.rand(3, 3, 16, 16)
    assert frame(x, torch.tensor([FULL] * 3)) is x
    boxes = torch.tensor([FULL, [0.25, 0, 0.75, 1], FULL])
    out = frame(x, boxes)
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2]) and not torch.allclose(out[1], x[1])


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


def _photo(w, h, seed=0):
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    return pil_to_u8(field)


def test_the_surrogate_sees_what_the_trainer_sees_of_the_published_photo():
    """A square 384 px photo and a 3:1 one: the trainer's own preprocessing (resize the shorter side to 64,
    centre crop) of the exported protected photo equals the surrogate's centre view of the stored (squashed)
    image plus the grid noise, within 1.5/255 RMS; without modelling the trainer's resize it is much further."""
    s, g = 64, torch.Generator().manual_seed(0)
    for w, h in ((384, 384), (576, 192)):
        native = _photo(w, h)
        grid_noise = torch.randint(-8, 9, (3, s, s), generator=g, dtype=torch.int16).to(torch.int8)
        published = apply_noise(native, native_noise(grid_noise, w, h, 8))
        to_pil = lambda t: Image.fromarray(t.permute(1, 2, 0).numpy())  # noqa: E731
        trainer = preprocess(to_pil(published), s).float() / 255
        stored = preprocess(to_pil(native), s, "squash").float()[None] / 255
        fr = Framing(torch.tensor([[w, h]]), s)
        seen = fr.centre(stored, grid_noise.float()[None] / 255, torch.tensor([0]))[0]
        unblurred = frame(stored + grid_noise.float()[None] / 255, fr.boxes)[0]
        rms = lambda a: float((255 * (a - trainer)).pow(2).mean().sqrt())  # noqa: E731
        assert rms(seen) < 1.5 and rms(unblurred) > 1.5 * rms(seen), (w, h, rms(seen), rms(unblurred))


def test_pgd_steps_reach_all_of_the_noise_of_a_wide_image():
    fr = Framing(torch.tensor([[192, 64]] * 8), 16)
    x = torch.zeros(8, 3, 16, 16)
    delta = torch.zeros(8, 3, 16, 16, requires_grad=True)
    g = torch.Generator().manual_seed(0)
    phases = fr.phases(8, g)
    for step in range(2):                                                # every image: centre, whole, in turn
        fr.at_step(x, delta, torch.arange(8), phases, step).sum().backward()
    assert (delta.grad.abs().sum((1, 2)) > 0).all()                      # the ends too, through whole frames
    centre = torch.zeros(1, 3, 16, 16, requires_grad=True)
    fr.centre(x[:1], centre, torch.tensor([0])).sum().backward()
    assert centre.grad[..., :3].abs().sum() == 0                          # the centre crop alone misses them


def test_images_at_the_grid_size_are_left_alone():
    fr = Framing(torch.tensor([[8, 8], [8, 8]]), 8)
    g = torch.Generator().manual_seed(0)
    x, d = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8) / 30
    assert fr.trivial and fr.phases(2, g) is None and torch.equal(fr.centre(x, d, torch.arange(2)), x + d)
    assert torch.equal(fr.at_step(x, d, torch.arange(2), None, 1), x + d)
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(0).get_state())
    big = Framing(torch.tensor([[500, 500], [8, 8]]), 8)                  # square but resized: blurred, no draws
    assert not big.trivial and big.phases(2, g) is None
    out = big.centre(x, d, torch.arange(2))
    assert torch.equal(out[1], x[1] + d[1]) and torch.allclose(out[0], x[0] + blur(d[:1])[0])
    assert "identity" in repr(fr) and "1/2 non-square" in repr(Framing(torch.tensor([[64, 64], [90, 60]]), 64))


def test_nearest_stretch_writes_blocks_and_is_modelled_too():
    s, g = 64, torch.Generator().manual_seed(1)
    grid_noise = torch.randint(-8, 9, (3, s, s), generator=g, dtype=torch.int16).to(torch.int8)
    blocks = native_noise(grid_noise, 384, 384, 8, "nearest")
    assert torch.equal(blocks[:, :6, :6], grid_noise[:, :1, :1].expand(3, 6, 6))   # 6 x 6 px per grid cell
    native = _photo(384, 384)
    published = apply_noise(native, blocks)
    to_pil = lambda t: Image.fromarray(t.permute(1, 2, 0).numpy())  # noqa: E731
    trainer = preprocess(to_pil(published), s).float() / 255
    stored = preprocess(to_pil(native), s, "squash").float()[None] / 255
    seen = Framing(torch.tensor([[384, 384]]), s, "nearest").centre(stored, grid_noise.float()[None] / 255,
                                                                    torch.tensor([0]))[0]
    assert float((255 * (seen - trainer)).pow(2).mean().sqrt()) < 1.0
    assert resize_kernel("nearest")[2] > resize_kernel("bilinear")[2] + 0.05       # blocks keep more of a pixel
