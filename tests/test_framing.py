import torch
import torch.nn.functional as F

from mmue.protect.export import native_noise
from mmue.protect.framing import FULL, Framing, centre_boxes, frame


def test_centre_boxes():
    b = centre_boxes(torch.tensor([[64, 64], [192, 64], [100, 200]]))
    assert torch.allclose(b, torch.tensor([list(FULL), [1 / 3, 0, 2 / 3, 1], [0, 0.25, 1, 0.75]]))


def test_full_boxes_are_the_identity_exactly():
    x = torch.rand(3, 3, 16, 16)
    assert frame(x, torch.tensor([FULL] * 3)) is x
    boxes = torch.tensor([FULL, [0.25, 0, 0.75, 1], FULL])
    out = frame(x, boxes)
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2]) and not torch.allclose(out[1], x[1])


def test_trainer_centre_crop_of_native_noise_is_the_centre_frame():
    """What a trainer sees of the exported noise (stretched over a 3:1 image, then its centre square) is what
    the surrogate was shown: the centre frame of the noise on the squashed grid."""
    s = 32
    delta = F.interpolate(torch.randint(-8, 9, (1, 3, 8, 8)).float(), size=(s, s), mode="bilinear")[0]
    delta = delta.round().to(torch.int8)
    native = native_noise(delta, 3 * s, s, 8).float()                    # 96 x 32: shorter side already s
    trainer = native[:, :, s:2 * s]                                      # centre crop
    shown = frame(delta[None].float(), centre_boxes(torch.tensor([[3 * s, s]])))[0]
    assert (trainer - shown).abs().max() <= 1.0                          # rounding only


def test_pgd_steps_reach_all_of_the_noise_of_a_wide_image():
    fr = Framing(torch.tensor([[192, 64]] * 8))
    delta = torch.zeros(8, 3, 16, 16, requires_grad=True)
    g = torch.Generator().manual_seed(0)
    phases = fr.phases(8, g)
    for step in range(2):                                                # every image: centre, whole, in turn
        fr.at_step(delta, torch.arange(8), phases, step).sum().backward()
    assert (delta.grad.abs().sum((1, 2)) > 0).all()                      # the ends too, through whole frames
    centre = torch.zeros(1, 3, 16, 16, requires_grad=True)
    fr.centre(centre, torch.tensor([0])).sum().backward()
    assert centre.grad[..., :4].abs().sum() == 0                          # the centre crop alone misses them


def test_square_data_draws_nothing():
    fr = Framing(torch.tensor([[64, 64], [500, 500]]))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8)
    assert fr.trivial and fr.phases(2, g) is None and fr.centre(x, torch.arange(2)) is x
    assert fr.at_step(x, torch.arange(2), None, 1) is x
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(0).get_state())
    assert "identity" in repr(fr) and "1/2 non-square" in repr(Framing(torch.tensor([[64, 64], [90, 60]])))
