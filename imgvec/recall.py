"""Measuring recall@k of an approximate index against exact search, and tuning nprobe to a target.

Queries are a sample of the library's own vectors; each query's own id is left out of both the
exact and the approximate neighbours, so recall counts only the other images it should find.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

from imgvec import index_rules

DEFAULT_TARGET = 0.95
SAMPLE_QUERIES = 256
K = 10


@dataclass(frozen=True)
class Tuning:
    nprobe: int
    recall: float
    curve: dict[int, float]


def sample(
    ids: np.ndarray, vectors: np.ndarray, n: int = SAMPLE_QUERIES, seed: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    pick = _pick(len(ids), n, seed)
    return ids[pick], vectors[pick]


def sample_ids(ids: np.ndarray, n: int = SAMPLE_QUERIES, seed: int = 1) -> np.ndarray:
    return ids[_pick(len(ids), n, seed)]


def _pick(total: int, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(total, min(n, total), replace=False)


def exact_neighbours(
    ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int = K + 1
) -> np.ndarray:
    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    flat.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
    return flat.search(np.ascontiguousarray(queries, dtype=np.float32), k)[1]


def recall_at_k(query_ids: np.ndarray, truth: np.ndarray, found: np.ndarray, k: int = K) -> float:
    """Share of each query's k exact neighbours (itself excluded) found among its k results."""
    hits = total = 0
    for own, exact, approx in zip(query_ids, truth, found, strict=True):
        wanted = [i for i in exact if i != own and i >= 0][:k]
        got = [i for i in approx if i != own and i >= 0][:k]
        hits += len(set(wanted) & set(got))
        total += len(wanted)
    return hits / total if total else 1.0


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
    for nprobe in index_rules.nprobe_candidates(nlist):
        curve[nprobe] = recall_at_k(query_ids, truth, search(nprobe))
        if curve[nprobe] >= target:
            return Tuning(nprobe, curve[nprobe], curve)
    best = max(curve, key=lambda p: (curve[p], -p))
    return Tuning(best, curve[best], curve)
