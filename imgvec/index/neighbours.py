"""Every pair of vectors at or above a cosine, through the index: no all-pairs comparison.

Each vector queries the index for its k nearest neighbours; a row whose k-th score still reaches
the threshold may have more, so that row is asked again with k doubled (up to ``max_k``). Cost is
one batched k-NN search per vector, linear in the library for a fixed k (the "batched k-NN"
alternative to range search in the FAISS wiki, "Special operations on indexes": range search is
not implemented for every index kind, k-NN is). Pairs an approximate index misses from one side
are still found from the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
"""``search(queries float32 (n, dim), k) -> (scores float32 (n, k), ids int64 (n, k))``, best
first, -1 ids padding (:meth:`imgvec.index.segments.IndexStore.search`)."""

FIRST_K = 16
"""Neighbours asked for first: most photos have fewer near-duplicates than that."""
MAX_K = 1024
"""The most neighbours one vector is asked for: a group larger than this is cut (reported)."""
QUERY_BATCH = 2048
"""Query vectors per search call (a batch's (n, k) results stay small)."""


def near_pairs(
    search: Search,
    chunks: Iterable[tuple[np.ndarray, np.ndarray]],
    threshold: float,
    allowed: Callable[[np.ndarray], np.ndarray] | None = None,
    first_k: int = FIRST_K,
    max_k: int = MAX_K,
) -> tuple[dict[tuple[int, int], float], int]:
    """Pairs ``(a, b)`` with ``a < b`` and cosine >= ``threshold``, with their cosine.

    ``chunks``: (ids int64 (n,), vectors float32 (n, dim), unit length) of the query vectors.
    ``allowed(ids) -> bool mask`` keeps only neighbours it accepts (``--where``). Returns the pairs
    and how many query vectors hit ``max_k`` (their further neighbours are not looked at).
    """
    pairs: dict[tuple[int, int], float] = {}
    saturated = 0
    for ids, vectors in chunks:
        for start in range(0, len(ids), QUERY_BATCH):
            batch_ids = ids[start : start + QUERY_BATCH]
            batch = np.ascontiguousarray(vectors[start : start + QUERY_BATCH], np.float32)
            saturated += _collect(
                search, batch_ids, batch, threshold, allowed, first_k, max_k, pairs
            )
    return pairs, saturated


def _collect(
    search: Search,
    ids: np.ndarray,
    queries: np.ndarray,
    threshold: float,
    allowed: Callable[[np.ndarray], np.ndarray] | None,
    k: int,
    max_k: int,
    pairs: dict[tuple[int, int], float],
) -> int:
    rows = np.arange(len(ids))
    while len(rows):
        scores, found = search(queries[rows], k + 1)  # +1: the vector itself
        full = (scores[:, -1] >= threshold) & (found[:, -1] >= 0)
        keep = (scores >= threshold) & (found >= 0) & (found != ids[rows, None])
        if allowed is not None and keep.any():
            keep[keep] = allowed(found[keep])
        for row, column in zip(*np.nonzero(keep), strict=True):
            a, b = int(ids[rows[row]]), int(found[row, column])
            key = (a, b) if a < b else (b, a)
            pairs[key] = max(pairs.get(key, -1.0), float(scores[row, column]))
        if k >= max_k:
            return int(full.sum())
        rows, k = rows[full], min(2 * k, max_k)
    return 0
