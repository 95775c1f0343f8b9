"""Measuring recall@k of an approximate index against exact search, and tuning nprobe to a target.

Queries are a sample of the library's own vectors; each query's own id is left out of both the
exact and the approximate neighbours, so recall counts only the other images it should find.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from imgvec.index import rules

DEFAULT_TARGET = 0.95
SAMPLE_QUERIES = 256
K = 10


@dataclass(frozen=True)
class Tuning:
    nprobe: int
    recall: float
    curve: dict[int, float]


def sample_ids(ids: np.ndarray, n: int = SAMPLE_QUERIES, seed: int = 1) -> np.ndarray:
    return ids[_pick(len(ids), n, seed)]


def sample_rows(total: int, n: int = SAMPLE_QUERIES, seed: int = 1) -> np.ndarray:
    """The rows :func:`sample` takes of ``total``, for vectors read in chunks."""
    return _pick(total, n, seed)


def _pick(total: int, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(total, min(n, total), replace=False)


EXACT_BLOCK_BYTES = 64 << 20
"""Scores computed at once by :func:`exact_top_k` (queries x vectors x 4 bytes), so that exact
search over millions of vectors needs tens of MB beyond the vectors, not gigabytes."""


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """THE exact search: the ``k`` rows of ``vectors`` with the largest inner product with each
    query (cosine, for unit vectors), best first.

    Equal scores (copies of one photo) are settled as FAISS's exact search settles them, so that
    an exact index measures recall 1.0 against this: where a tie straddles the k-th place the
    earlier rows are kept, and among the kept the later row is listed first.

    ``vectors``: (N, d), ``queries``: (Q, d), float32. Returns ``(scores, rows)``, (Q, k) float32
    and int64, padded with ``-inf`` and ``-1`` when N < k. Everything that needs ground truth
    (index tuning, filtered search, ``imgvec bench``, the benchmarks) calls this one function.
    """
    n_queries = len(queries)
    scores = np.full((n_queries, k), -np.inf, np.float32)
    rows = np.full((n_queries, k), -1, np.int64)
    take = min(k, len(vectors))
    if take == 0 or n_queries == 0:
        return scores, rows
    block = max(1, EXACT_BLOCK_BYTES // (4 * len(vectors)))
    for start in range(0, n_queries, block):
        part = (
            np.asarray(queries[start : start + block], np.float32)
            @ np.asarray(vectors, np.float32).T
        )
        for offset, row_scores in enumerate(part):
            top = _top_rows(row_scores, take)
            order = np.lexsort((-top, -row_scores[top]))  # ties listed later row first
            rows[start + offset, :take] = top[order]
            scores[start + offset, :take] = row_scores[top[order]]
    return scores, rows


def _top_rows(row_scores: np.ndarray, take: int) -> np.ndarray:
    """The ``take`` best rows, a tie at the cut going to the earlier rows."""
    if take >= len(row_scores):
        return np.arange(len(row_scores))
    cut = np.partition(row_scores, len(row_scores) - take)[len(row_scores) - take]
    above = np.flatnonzero(row_scores > cut)
    at_cut = np.flatnonzero(row_scores == cut)[: take - len(above)]
    return np.concatenate([above, at_cut])


class RunningTopK:
    """:func:`exact_top_k` over vectors that arrive in chunks (a library read from storage, so
    that ground truth over millions of vectors needs one chunk in memory, not all of them).

    ``add(ids, vectors)`` takes the next chunk, in row order; :attr:`ids` and :attr:`scores`
    are then, for each of the (Q, d) ``queries``, the ``k`` best ids so far, (Q, k) int64 and
    float32, best first, ties settled as :func:`exact_top_k` settles them over all the rows
    (the earlier row kept at the cut, the later listed first), -1 / ``-inf`` padded.
    """

    def __init__(self, queries: np.ndarray, k: int = K + 1) -> None:
        self.queries = np.asarray(queries, np.float32)
        self.k = k
        self.scores = np.full((len(queries), k), -np.inf, np.float32)
        self.ids = np.full((len(queries), k), -1, np.int64)
        self._rows = np.full((len(queries), k), np.iinfo(np.int64).max, np.int64)
        self._seen = 0

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        scores, rows = exact_top_k(vectors, self.queries, self.k)
        found = rows >= 0
        chunk_ids = np.where(found, np.asarray(ids, np.int64)[np.maximum(rows, 0)], -1)
        chunk_rows = np.where(found, rows + self._seen, np.iinfo(np.int64).max)
        self._seen += len(vectors)
        scores = np.hstack([self.scores, scores])
        ids_all, rows_all = np.hstack([self.ids, chunk_ids]), np.hstack([self._rows, chunk_rows])
        keep = np.lexsort((rows_all, -scores), axis=1)[:, : self.k]  # best, earlier row at a tie
        kept_scores = np.take_along_axis(scores, keep, axis=1)
        kept_rows = np.take_along_axis(rows_all, keep, axis=1)
        order = np.lexsort((-kept_rows, -kept_scores), axis=1)  # among the kept: later first
        keep = np.take_along_axis(keep, order, axis=1)
        self.scores = np.take_along_axis(scores, keep, axis=1)
        self.ids = np.take_along_axis(ids_all, keep, axis=1)
        self._rows = np.take_along_axis(rows_all, keep, axis=1)


def recall_at_k(
    relevant: Sequence[Iterable[int]],
    found: Sequence[Iterable[int]] | np.ndarray,
    k: int = K,
    own: Sequence[int] | np.ndarray | None = None,
) -> float:
    """THE recall@k: per query, the share of its relevant ids found among its first ``k``
    results, averaged over the queries (a query with nothing relevant counts 1.0).

    For an approximate index, ``relevant`` is each query's exact top-k (:func:`exact_top_k`);
    for retrieval quality (``imgvec eval``), the other members of its labelled group. With
    ``own`` (each query's own id), that id is left out of both. Negative ids are padding.
    """
    if own is None:
        own = [None] * len(relevant)
    shares = []
    for query_own, wanted_ids, got_ids in zip(own, relevant, found, strict=True):
        wanted = [int(i) for i in wanted_ids if i != query_own and i >= 0]
        if own[0] is not None:
            wanted = wanted[:k]
        got = [int(i) for i in got_ids if i != query_own][:k]
        hits = len(set(got).intersection(wanted))
        shares.append(Fraction(hits, len(wanted)) if wanted else Fraction(1))
    return float(sum(shares, Fraction(0)) / len(shares)) if shares else 1.0


def tune_nprobe(
    search: Callable[[int], np.ndarray],
    query_ids: np.ndarray,
    truth: np.ndarray,
    nlist: int,
    target: float = DEFAULT_TARGET,
) -> Tuning:
    """The smallest nprobe (powers of two) whose recall@10 meets ``target``; else the best seen.

    ``search(nprobe)`` returns the approximate ids (k+1 per query) at that nprobe. autofaiss tunes
    its search parameters to a recall target on held-out queries in the same way.
    """
    curve: dict[int, float] = {}
    for nprobe in rules.nprobe_candidates(nlist):
        curve[nprobe] = recall_at_k(truth, search(nprobe), own=query_ids)
        if curve[nprobe] >= target:
            return Tuning(nprobe, curve[nprobe], curve)
    best = max(curve, key=lambda p: (curve[p], -p))
    return Tuning(best, curve[best], curve)
