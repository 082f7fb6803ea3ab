"""The trigger policy and the noise parameterisation, alone."""
import torch

from mmue.protect import resolve
from mmue.protect.noise import PixelNoise
from mmue.protect.store import ProtectionState
from mmue.protect.triggers import TriggerPolicy


def test_policy_draws_from_its_vocabulary_and_places_inside_the_context():
    vocab = torch.tensor([11, 22, 33])
    p = TriggerPolicy(3, vocab, "random", 0.5, seed=1)
    t = p.initial(50, torch.Generator().manual_seed(0))
    assert t.shape == (50, 3) and set(t.unique().tolist()) <= {11, 22, 33}
    starts = [[0, 1, 2, 3, 4, 5]] * 40 + [[0, 2, 70]]
    words, at = p.placement(starts, len(starts), context_length=16)
    assert len(set(words)) > 1                                   # random word boundaries
    assert all(a <= 16 - 2 - 3 for a in at)                      # the trigger fits the context
    assert words == p.placement(starts, len(starts), 16)[0]      # seeded
    drop = p.dropped(10_000, torch.Generator().manual_seed(0))
    assert 0.45 < drop.float().mean() < 0.55
    assert "position=random" in repr(p) and "3 words" in repr(p)


def test_prefix_policy_without_dropout():
    p = TriggerPolicy(3, torch.tensor([5]), "prefix")
    assert p.placement(None, 4, 77) == ([0] * 4, [0] * 4)
    assert p.dropped(8, torch.Generator()) is None
    assert TriggerPolicy(0, None).initial(4, torch.Generator()).shape == (4, 0)
    assert not TriggerPolicy.needs_words_for(resolve("mem-3"))
    assert TriggerPolicy.needs_words_for(resolve("mem-3-robust"))
    assert TriggerPolicy.needs_words_for(resolve("mem-3-blend"))


def test_pixel_noise_round_trip_stays_within_eps_and_the_8_bit_range():
    x = torch.tensor([[[[0, 128, 255, 3]]]], dtype=torch.uint8).expand(2, 3, 1, 4).contiguous()
    state = ProtectionState(noise=torch.zeros(2, 3, 1, 4, dtype=torch.int8), triggers=torch.zeros(2, 0), rounds_done=0)
    noise, idx = PixelNoise(8), torch.arange(2)
    noise.store(state, idx, x, torch.full((2, 3, 1, 4), 20 / 255))
    assert state.noise.abs().max() == 8
    y = noise.protected(state, idx, x) * 255
    assert y.max() <= 255 and y.min() >= 0 and torch.allclose(y[0, 0, 0], torch.tensor([8.0, 136, 255, 11]))
    assert torch.allclose(noise.delta(state, idx, "cpu") * 255, state.noise.float())
