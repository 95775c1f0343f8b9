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
    found: list[np.ndarray] = []
    saturated = 0
    for ids, vectors in chunks:
        for start in range(0, len(ids), QUERY_BATCH):
            batch_ids = ids[start : start + QUERY_BATCH]
            batch = np.ascontiguousarray(vectors[start : start + QUERY_BATCH], np.float32)
            saturated += _collect(
                search, batch_ids, batch, threshold, allowed, first_k, max_k, found
            )
    return _unique(found), saturated


def _collect(
    search: Search,
    ids: np.ndarray,
    queries: np.ndarray,
    threshold: float,
    allowed: Callable[[np.ndarray], np.ndarray] | None,
    k: int,
    max_k: int,
    found: list[np.ndarray],
) -> int:
    """Append (low id, high id, score) rows, shape (m, 3) float64, of this batch's pairs."""
    rows = np.arange(len(ids))
    while len(rows):
        scores, neighbours = search(queries[rows], k + 1)  # +1: the vector itself
        full = (scores[:, -1] >= threshold) & (neighbours[:, -1] >= 0)
        own = ids[rows, None]
        keep = (scores >= threshold) & (neighbours >= 0) & (neighbours != own)
        if allowed is not None and keep.any():
            keep[keep] = allowed(neighbours[keep])
        a = np.broadcast_to(own, keep.shape)[keep]
        b = neighbours[keep]
        found.append(np.stack([np.minimum(a, b), np.maximum(a, b), scores[keep]], axis=1))
        if k >= max_k:
            return int(full.sum())
        rows, k = rows[full], min(2 * k, max_k)
    return 0


def _unique(found: list[np.ndarray]) -> dict[tuple[int, int], float]:
    """Each pair once, with its highest score (found from both sides, or again with a larger k)."""
    rows = np.concatenate(found) if found else np.zeros((0, 3))
    if not len(rows):
        return {}
    low, high = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64)
    key = (low << 32) | high  # image ids are below 2**31
    best_first = np.argsort(-rows[:, 2], kind="stable")
    order = best_first[np.argsort(key[best_first], kind="stable")]  # by pair, best score first
    key = key[order]
    first = np.ones(len(key), bool)
    first[1:] = key[1:] != key[:-1]
    chosen = order[first]
    return dict(
        zip(
            zip(low[chosen].tolist(), high[chosen].tolist(), strict=True),
            rows[chosen, 2].tolist(),
            strict=True,
        )
    )
