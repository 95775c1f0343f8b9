"""Index sizing rules (pure functions) and FAISS index building, saving and searching."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from imgvec import faiss_index, index_rules


def clustered(n: int, dim: int = 32, clusters: int = 50, seed: int = 0) -> np.ndarray:
    """Normalised vectors around random centres, like real embeddings (IVF needs structure)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    vectors = centres[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize(
    ("n", "kind"),
    [
        (0, "flat"),
        (1000, "flat"),
        (index_rules.FLAT_MAX_VECTORS, "flat"),
        (index_rules.FLAT_MAX_VECTORS + 1, "ivf"),
        (10_000_000, "ivf"),
    ],
)
def test_choose_kind(n: int, kind: str) -> None:
    assert index_rules.choose_kind(n) == kind


@pytest.mark.parametrize("n", [40_000, 100_000, 1_000_000, 10_000_000])
def test_nlist_is_a_power_of_two_near_4_sqrt_n(n: int) -> None:
    nlist = index_rules.ivf_nlist(n)
    assert nlist & (nlist - 1) == 0
    assert 4 * math.sqrt(n) / math.sqrt(2) <= nlist <= 4 * math.sqrt(n) * math.sqrt(2)
    assert n / nlist >= index_rules.MIN_POINTS_PER_LIST


@pytest.mark.parametrize("n", [1, 38, 39, 100, 2000, 5000])
def test_nlist_keeps_enough_training_points_per_list(n: int) -> None:
    nlist = index_rules.ivf_nlist(n)
    assert nlist >= 1
    assert nlist == 1 or n / nlist >= index_rules.MIN_POINTS_PER_LIST


@pytest.mark.parametrize(("nlist", "nprobe"), [(1, 1), (4, 4), (64, 8), (256, 16), (4096, 256)])
def test_nprobe(nlist: int, nprobe: int) -> None:
    assert index_rules.ivf_nprobe(nlist) == nprobe


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_built_index_returns_row_ids_and_survives_save_and_load(kind: str, tmp_path: Path) -> None:
    vectors = clustered(4000)
    ids = np.arange(4000, dtype=np.int64) * 7 + 1000  # ids are image row ids, not positions
    built = faiss_index.build(ids, vectors, kind)
    assert built.kind == kind
    path = tmp_path / "index.faiss"
    faiss_index.save(built.index, path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    index = faiss_index.load(path, built.params)
    scores, found = faiss_index.search(index, vectors[:50], 10)
    assert list(found[:, 0]) == list(ids[:50])  # each vector finds itself first
    assert np.allclose(scores[:, 0], 1.0, atol=1e-4)


def test_ivf_recall_against_exact_search() -> None:
    vectors = clustered(25_000, dim=64, clusters=200)
    ids = np.arange(len(vectors), dtype=np.int64)
    exact = faiss_index.build(ids, vectors, "flat")
    ivf = faiss_index.build(ids, vectors, "ivf")
    assert ivf.params["nlist"] == index_rules.ivf_nlist(len(vectors))
    queries = clustered(200, dim=64, clusters=200, seed=1)
    _, truth = exact.index.search(queries, 10)
    _, found = ivf.index.search(queries, 10)
    recall = np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found, strict=True)])
    assert recall >= 0.9


def test_search_with_k_larger_than_the_index() -> None:
    built = faiss_index.build(np.array([5, 9]), clustered(2), "flat")
    _, ids = faiss_index.search(built.index, clustered(1, seed=3), 10)
    assert sorted(ids[0].tolist()) == [5, 9]


def test_empty_index_searches_to_nothing() -> None:
    built = faiss_index.build(np.zeros(0, np.int64), np.zeros((0, 8), np.float32))
    _, ids = faiss_index.search(built.index, clustered(1, dim=8), 5)
    assert (ids < 0).all()


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown index kind"):
        faiss_index.build(np.arange(3), clustered(3), "hnsw")
