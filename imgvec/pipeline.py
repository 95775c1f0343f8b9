"""Keeping the model busy: the next batch is read and decoded on worker threads while the current
one runs through the model (Pillow and hashing release the GIL)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Prepared = TypeVar("Prepared")

MAX_WORKERS = 4


def worker_count() -> int:
    """Decode threads: one per core, at most :data:`MAX_WORKERS`."""
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def prefetched_batches(
    items: Sequence[Item], prepare: Callable[[Item], Prepared], batch_size: int
) -> Iterator[list[Prepared]]:
    """Yield ``prepare``d batches in order; the following batch is prepared meanwhile."""
    if not items:
        return
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    with ThreadPoolExecutor(worker_count(), thread_name_prefix="imgvec-decode") as pool:

        def submit(batch: Sequence[Item]) -> list[Future[Prepared]]:
            return [pool.submit(prepare, item) for item in batch]

        try:
            upcoming = submit(batches[0])
            for number in range(len(batches)):
                ready = [future.result() for future in upcoming]
                if number + 1 < len(batches):
                    upcoming = submit(batches[number + 1])
                yield ready
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
