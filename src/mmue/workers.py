"""Image files are decoded, resized and encoded by threads: Pillow and torch release the GIL in that work, so a
few threads keep a machine's cores busy on full-size photos without copying data between processes."""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T, R = TypeVar("T"), TypeVar("R")


def default_workers(cap: int = 4) -> int:
    """Threads for image work: the cores this process may use, at most ``cap`` (each holds one full-size image,
    about 0.5 GB at 12 MP while it is stretched, noised and encoded)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:   # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(cap, n))


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int | None = None) -> Iterator[R]:
    """``map(fn, items)`` on ``workers`` threads, results in input order, at most ``workers`` + 1 in flight (so
    memory holds a few images, not all). An exception in ``fn`` is raised where its result is reached."""
    workers = default_workers() if workers is None else workers
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
