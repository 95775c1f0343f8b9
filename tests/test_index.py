"""Index rules (pure functions), recall measurement, and the FAISS layer: kinds, segments, fold."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from imgvec.errors import ImgvecError
from imgvec.index import faiss_ops, recall, rules

GIB = 1 << 30


def clustered(n: int, dim: int = 32, clusters: int = 50, seed: int = 0) -> np.ndarray:
    """Normalised vectors around random centres, like real embeddings (IVF needs structure)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    vectors = centres[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


# --- rules ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "kind"),
    [
        (0, "flat"),
        (1000, "flat"),
        (rules.FLAT_MAX_VECTORS, "flat"),
        (rules.FLAT_MAX_VECTORS + 1, "ivf"),
        (1_000_000, "ivf"),
    ],
)
def test_choose_kind_by_size(n: int, kind: str) -> None:
    assert rules.choose_kind(n, 768, 8 * GIB) == kind


def test_choose_kind_compresses_when_vectors_outgrow_memory() -> None:
    assert rules.choose_kind(1_000_000, 768, 2 * GIB) == "ivfpq"  # 3 GB of float32
    assert rules.choose_kind(1_000_000, 768, 4 * GIB) == "ivf"


def test_choose_kind_has_hysteresis_when_shrinking() -> None:
    n = rules.FLAT_MAX_VECTORS - 100
    assert rules.choose_kind(n, 768, 8 * GIB, current="ivf") == "ivf"
    assert rules.choose_kind(n // 3, 768, 8 * GIB, current="ivf") == "flat"


def test_memory_budget_is_a_quarter_of_memory() -> None:
    assert rules.memory_budget(24 * GIB) == 6 * GIB


@pytest.mark.parametrize("n", [40_000, 100_000, 1_000_000, 10_000_000])
def test_nlist_is_a_power_of_two_near_4_sqrt_n(n: int) -> None:
    nlist = rules.ivf_nlist(n)
    assert nlist & (nlist - 1) == 0
    assert 4 * math.sqrt(n) / math.sqrt(2) <= nlist <= 4 * math.sqrt(n) * math.sqrt(2)
    assert n / nlist >= rules.MIN_POINTS_PER_LIST


@pytest.mark.parametrize("n", [1, 38, 39, 100, 2000, 5000])
def test_nlist_keeps_enough_training_points_per_list(n: int) -> None:
    nlist = rules.ivf_nlist(n)
    assert nlist == 1 or n / nlist >= rules.MIN_POINTS_PER_LIST


def test_training_size() -> None:
    assert rules.training_size(1_000_000, 4096) == 64 * 4096
    assert rules.training_size(10_000, 4096) == 10_000


@pytest.mark.parametrize(("dim", "m"), [(768, 64), (1280, 64), (2048, 64), (48, 12), (100, 25)])
def test_pq_subquantizers_divide_the_dimension(dim: int, m: int) -> None:
    assert rules.pq_subquantizers(dim) == m
    assert dim % m == 0 and dim // m >= 4


@pytest.mark.parametrize(("nlist", "nprobe"), [(1, 1), (4, 4), (64, 8), (256, 16), (4096, 256)])
def test_default_nprobe(nlist: int, nprobe: int) -> None:
    assert rules.default_nprobe(nlist) == nprobe


def test_nprobe_candidates_are_powers_of_two_up_to_nlist() -> None:
    assert rules.nprobe_candidates(1) == [1]
    assert rules.nprobe_candidates(12) == [1, 2, 4, 8, 12]


@pytest.mark.parametrize(
    ("base", "changes", "segments", "compact"),
    [
        (100_000, 500, 1, False),
        (100_000, 10_500, 3, True),
        (100, 1000, 5, False),
        (100, 1001, 5, True),
        (100, 17, 17, True),
        (1_000_000, 99_000, 16, False),
        (10_000, 1_000, 1, False),
    ],
)
def test_should_compact(base: int, changes: int, segments: int, compact: bool) -> None:
    assert rules.should_compact(base, changes, segments) is compact


def test_retrain_reasons() -> None:
    assert rules.retrain_reason("flat", "flat", 100, None, None, 0.95) is None
    assert "call for a ivf" in rules.retrain_reason("flat", "ivf", 30_000, None, None, 0.95)
    assert rules.retrain_reason("ivf", "ivf", 40_000, 1024, 0.97, 0.95) is None
    assert "outgrew" in rules.retrain_reason("ivf", "ivf", 300_000, 1024, 0.97, 0.95)
    assert "below the target" in rules.retrain_reason("ivf", "ivf", 40_000, 1024, 0.8, 0.95)


# --- recall --------------------------------------------------------------------------------------


def test_recall_at_k_leaves_the_query_itself_out() -> None:
    truth = np.array([[7, 1, 2, 3]])
    assert recall.recall_at_k(truth, np.array([[7, 1, 2, 9]]), k=3, own=[7]) == 2 / 3
    assert recall.recall_at_k(truth, np.array([[1, 2, 3, -1]]), k=3, own=[7]) == 1.0
    assert recall.recall_at_k(truth, np.array([[1, 2, 3, -1]]), k=3) == 3 / 4


def test_recall_at_k_averages_over_queries_and_counts_positions() -> None:
    """Labelled groups (imgvec eval): a result relevant to no query (-1) still takes a place."""
    relevant = [{1, 2, 3}, {9}]
    assert recall.recall_at_k(relevant, [[-1, 2, 5], [9, 1, 2]], k=1) == pytest.approx(0.5)
    assert recall.recall_at_k(relevant, [[-1, 2, 5], [9, 1, 2]], k=2) == pytest.approx(
        (1 / 3 + 1) / 2
    )
    assert recall.recall_at_k([set()], [[4]], k=1) == 1.0


def test_exact_top_k_orders_copies_as_faiss_does() -> None:
    """Equal scores (copies of one photo): the later row first, as FAISS; so a flat index's
    recall against exact search is 1.0, and --where and plain queries rank copies alike."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((6, 4)).astype(np.float32)
    vectors[3] = vectors[5] = vectors[1]
    flat = faiss_ops.flat(np.arange(6), vectors)
    expected = faiss_ops.search([faiss_ops.Segment(flat, "flat")], vectors[1:2], 6)[1]
    np.testing.assert_array_equal(recall.exact_top_k(vectors, vectors[1:2], 6)[1], expected)
    assert list(expected[0, :3]) == [5, 3, 1]
    cut = faiss_ops.search([faiss_ops.Segment(flat, "flat")], vectors[1:2], 2)[1]
    np.testing.assert_array_equal(recall.exact_top_k(vectors, vectors[1:2], 2)[1], cut)
    assert list(cut[0]) == [3, 1]  # a tie at the cut keeps the earlier rows


@pytest.mark.parametrize("chunk", [1, 3, 7, 100])
def test_running_top_k_over_chunks_equals_exact_top_k_over_all(chunk: int) -> None:
    """Ground truth over a library read in chunks: the same ids, copies and cut ties included."""
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((40, 8)).astype(np.float32)
    vectors[[7, 19, 33]] = vectors[2]  # copies: ties that straddle chunk borders
    ids = np.arange(40, dtype=np.int64) * 3 + 100
    queries = np.vstack([vectors[[2, 5]], rng.standard_normal((3, 8)).astype(np.float32)])
    for k in (2, 3, 11, 45):
        running = recall.RunningTopK(queries, k)
        for start in range(0, 40, chunk):
            running.add(ids[start : start + chunk], vectors[start : start + chunk])
        scores, rows = recall.exact_top_k(vectors, queries, k)
        np.testing.assert_array_equal(running.ids, np.where(rows >= 0, ids[rows], -1))
        np.testing.assert_allclose(running.scores, scores, atol=1e-5)


def test_exact_top_k_is_sorted_padded_and_blockwise() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((50, 8)).astype(np.float32)
    queries = rng.standard_normal((7, 8)).astype(np.float32)
    scores, rows = recall.exact_top_k(vectors, queries, 5)
    full = queries @ vectors.T
    np.testing.assert_array_equal(rows, np.argsort(-full, axis=1, kind="stable")[:, :5])  # no ties
    np.testing.assert_allclose(scores, np.take_along_axis(full, rows, axis=1), rtol=1e-6)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recall, "EXACT_BLOCK_BYTES", 4 * 50 * 2)  # two queries per block
        np.testing.assert_array_equal(recall.exact_top_k(vectors, queries, 5)[1], rows)
    scores, rows = recall.exact_top_k(vectors[:3], queries, 5)
    assert (rows[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    assert sorted(rows[0, :3]) == [0, 1, 2]


def test_tune_nprobe_picks_the_smallest_that_meets_the_target() -> None:
    truth = np.array([[0, 1, 2, 3]])
    answers = {1: [[0, 1, 8, 9]], 2: [[0, 1, 2, 9]], 4: [[0, 1, 2, 3]], 8: [[0, 1, 2, 3]]}
    tuning = recall.tune_nprobe(lambda p: np.array(answers[p]), np.array([0]), truth, 8, target=0.6)
    assert (tuning.nprobe, tuning.curve) == (2, {1: 1 / 3, 2: 2 / 3})
    best = recall.tune_nprobe(
        lambda p: np.array(answers[min(p, 2)]), np.array([0]), truth, 8, target=0.9
    )
    assert best.nprobe == 2 and best.recall == pytest.approx(2 / 3)


# --- FAISS layer ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq"])
def test_each_kind_returns_row_ids_and_survives_save_and_memory_mapped_load(
    kind: str, tmp_path: Path
) -> None:
    vectors = clustered(12_000)
    ids = np.arange(len(vectors), dtype=np.int64) * 7 + 1000  # ids are row ids, not positions
    built = faiss_ops.build(ids, vectors, kind)
    assert built.kind == kind
    path = tmp_path / "index.faiss"
    faiss_ops.save(built.index, path)
    assert [p.name for p in tmp_path.iterdir()] == ["index.faiss"]  # no temporaries left
    segment = faiss_ops.Segment(faiss_ops.load(path, kind), kind, built.params)

    def lookup(wanted: np.ndarray) -> np.ndarray:
        return vectors[(wanted - 1000) // 7]

    scores, found = faiss_ops.search([segment], vectors[:50], 10, lookup)
    assert list(found[:, 0]) == list(ids[:50])  # each vector finds itself first
    assert np.allclose(scores[:, 0], 1.0, atol=1e-4)
    if kind != "flat":
        assert built.params["nprobe"] in rules.nprobe_candidates(built.params["nlist"])
        assert built.recall is not None and built.recall >= 0.95
        assert built.train_size is not None and built.train_size <= len(vectors)
    assert sorted(faiss_ops.stored_ids(segment.index)) == sorted(ids)


def test_given_nprobe_is_used_and_its_recall_measured() -> None:
    vectors = clustered(8000, clusters=100)
    built = faiss_ops.build(np.arange(8000), vectors, "ivf", nlist=64, nprobe=1)
    assert built.params == {"nlist": 64, "nprobe": 1}
    assert built.recall is not None and 0 < built.recall < 1


def test_dead_ids_are_filtered_per_segment_and_segments_merge() -> None:
    vectors = clustered(300)
    # Image 5 was re-embedded: its old vector (vectors[5]) is dead in the base; its new one
    # (vectors[250]) lives in a delta, beside image 250 (vectors[251]).
    base = faiss_ops.Segment(
        faiss_ops.flat(np.arange(200), vectors[:200]), "flat", dead=np.array([5])
    )
    delta = faiss_ops.Segment(faiss_ops.flat(np.array([5, 250]), vectors[[250, 251]]), "flat")
    scores, ids = faiss_ops.search([base, delta], vectors[[5, 250, 251]], 3)
    assert scores[0][0] < 0.999  # nothing holds the old vector any more
    assert ids[1][0] == 5 and scores[1][0] == pytest.approx(1.0, abs=1e-5)
    assert ids[2][0] == 250 and scores[2][0] == pytest.approx(1.0, abs=1e-5)
    assert all(list(row) == sorted(row, reverse=True) for row in scores)


def test_search_pads_with_minus_one() -> None:
    segment = faiss_ops.Segment(faiss_ops.flat(np.array([5, 9]), clustered(2)), "flat")
    _, ids = faiss_ops.search([segment], clustered(1, seed=3), 5)
    assert sorted(ids[0][:2].tolist()) == [5, 9]
    assert ids[0][2:].tolist() == [-1, -1, -1]
    empty = faiss_ops.Segment(faiss_ops.flat(np.zeros(0, np.int64), clustered(0)), "flat")
    assert (faiss_ops.search([empty], clustered(1), 3)[1] < 0).all()


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_fold_removes_dead_ids_and_adds_new_vectors(kind: str) -> None:
    vectors = clustered(5000)
    built = faiss_ops.build(np.arange(4000), vectors[:4000], kind)
    folded = faiss_ops.fold(built.index, np.arange(100), np.arange(4000, 5000), vectors[4000:])
    assert folded.ntotal == 4900
    assert sorted(faiss_ops.stored_ids(folded)) == list(range(100, 5000))
    segment = faiss_ops.Segment(folded, kind, built.params)
    _, ids = faiss_ops.search([segment], vectors[[4500, 50]], 1)
    assert ids[0][0] == 4500 and ids[1][0] != 50


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ImgvecError, match="unknown index kind 'hnsw'; choose one of flat, ivf"):
        faiss_ops.build(np.arange(3), clustered(3), "hnsw")


def test_a_handful_of_queries_search_on_one_thread_batches_on_all() -> None:
    assert rules.search_threads(1, 8) == 1
    assert rules.search_threads(rules.SINGLE_THREAD_MAX_QUERIES, 8) == 1
    assert rules.search_threads(rules.SINGLE_THREAD_MAX_QUERIES + 1, 8) == 8
    assert rules.search_threads(100, 0) == 1


def test_search_gives_faiss_its_threads_back(monkeypatch: pytest.MonkeyPatch) -> None:
    import faiss

    vectors = np.eye(8, dtype=np.float32)
    segment = faiss_ops.Segment(faiss_ops.build(np.arange(8), vectors, "flat").index, "flat")
    used: list[int] = []
    real_search = segment.index.search

    def spy(*args: object, **kwargs: object) -> object:
        used.append(faiss.omp_get_max_threads())
        return real_search(*args, **kwargs)

    monkeypatch.setattr(segment.index, "search", spy)
    before = faiss.omp_get_max_threads()
    faiss_ops.search([segment], vectors[:1], 3)
    faiss_ops.search([segment], np.repeat(vectors, 3, axis=0), 3)

    assert used == [1, rules.search_threads(24, before)]
    assert faiss.omp_get_max_threads() == before


def test_ivfpq_reranks_k_times_the_rerank_factor_candidates_exactly() -> None:
    vectors = clustered(12_000)
    built = faiss_ops.build(np.arange(12_000), vectors, "ivfpq")
    asked: list[int] = []

    def lookup(wanted: np.ndarray) -> np.ndarray:
        asked.append(len(wanted))
        return vectors[wanted]

    segment = faiss_ops.Segment(built.index, "ivfpq", built.params)
    scores, ids = faiss_ops.search([segment], vectors[:3], 5, lookup)
    assert asked == [3 * 5 * faiss_ops.RERANK_FACTOR]  # one lookup for every candidate
    exact = np.einsum("qd,qkd->qk", vectors[:3], vectors[ids])
    np.testing.assert_allclose(scores, exact, rtol=1e-5)  # the scores are exact cosines
    assert list(ids[:, 0]) == [0, 1, 2]
