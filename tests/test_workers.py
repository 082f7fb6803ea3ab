import pytest

from mmue.workers import default_workers, ordered_map


def test_ordered_map_keeps_order_and_bounds_what_is_in_flight():
    pulled = [0]

    def items():
        for i in range(50):
            pulled[0] += 1
            yield i
    ahead = []
    for consumed, r in enumerate(ordered_map(lambda i: i * i, items(), 3), 1):
        ahead.append(pulled[0] - consumed)
    assert consumed == 50 and max(ahead) <= 4                     # never more than workers + 1 read ahead
    assert list(ordered_map(lambda i: i * i, range(50), 3)) == [i * i for i in range(50)]
    assert list(ordered_map(lambda i: i * i, range(5), 1)) == [0, 1, 4, 9, 16]
    assert 1 <= default_workers() <= 4


def test_ordered_map_raises_the_workers_error():
    def work(i):
        if i == 7:
            raise ValueError("bad image 7")
        return i
    with pytest.raises(ValueError, match="bad image 7"):
        list(ordered_map(work, range(20), 2))
