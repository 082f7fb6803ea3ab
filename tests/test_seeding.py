import torch

from mmue.seeding import generator, seed_of


def test_streams_are_distinct_and_reproducible():
    seeds = {seed_of(s, name, i) for s in (0, 1) for name in ("captions", "batch order") for i in range(50)}
    assert len(seeds) == 200                                   # no collisions across seeds, streams, indices
    assert seed_of(0, "captions", 7) != seed_of(0, "batch order", 0)
    a = torch.randperm(10, generator=generator(3, "x", 1))
    b = torch.randperm(10, generator=generator(3, "x", 1))
    assert torch.equal(a, b)
