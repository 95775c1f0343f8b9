"""``imgvec bench``: NumPy exact vs FAISS flat vs FAISS IVF on the same vectors."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest
from PIL import Image

from imgvec.errors import ImgvecError
from imgvec.index import recall, rules
from imgvec.tools.bench import (
    TABLE_HEADER,
    BenchReport,
    plot_bench,
    run_bench,
    synthetic_vectors,
)

SIZES = [200, 2000]
NPROBES = (1, 2, 4, 8, 16, 32, 64)


@pytest.fixture(scope="module")
def report() -> BenchReport:
    return run_bench(SIZES, dim=32, queries=20, nprobes=NPROBES)


def _rows(report: BenchReport, method: str, size: int) -> list:  # type: ignore[type-arg]
    return [r for r in report.rows if r.method == method and r.size == size]


def test_rows_and_exact_recall(report: BenchReport) -> None:
    assert report.source == "synthetic" and report.dim == 32 and report.queries == 20
    for size in SIZES:
        [numpy_row] = _rows(report, "numpy", size)
        [flat_row] = _rows(report, "flat", size)
        assert numpy_row.recall == 1.0 and flat_row.recall == 1.0
        for row in report.rows:
            assert row.p50_ms > 0 and row.mean_ms > 0 and row.build_s >= 0
        nlist = rules.ivf_nlist(size)
        ivf = _rows(report, "ivf", size)
        assert [r.nprobe for r in ivf] == [p for p in NPROBES if p <= nlist]  # none above nlist
        assert all(r.nlist == nlist for r in ivf)


def test_ivf_recall_grows_with_nprobe(report: BenchReport) -> None:
    for size in SIZES:
        ivf = _rows(report, "ivf", size)
        recalls = [r.recall for r in ivf]
        assert recalls == sorted(recalls)
        assert ivf[-1].nprobe == rules.ivf_nlist(size) and ivf[-1].recall == 1.0
        assert 0 < ivf[0].recall <= 1.0


def test_numpy_exact_equals_faiss_flat() -> None:
    rng = np.random.default_rng(1)
    base, centres = synthetic_vectors(500, 32, rng)
    queries, _ = synthetic_vectors(10, 32, rng, centres)
    np.testing.assert_allclose(np.linalg.norm(base, axis=1), 1.0, rtol=1e-5)
    index = faiss.IndexFlatIP(32)
    index.add(base)
    _, faiss_ids = index.search(queries, 10)
    numpy_ids = recall.exact_top_k(base, queries, 10)[1]
    np.testing.assert_array_equal(numpy_ids, faiss_ids)
    assert recall.recall_at_k(numpy_ids, faiss_ids, 10) == 1.0
    assert recall.recall_at_k(numpy_ids, np.full_like(faiss_ids, -1), 10) == 0.0


def test_json_and_table(report: BenchReport) -> None:
    data = json.loads(report.to_json())
    assert data["sizes"] == SIZES and len(data["rows"]) == len(report.rows)
    assert set(data["rows"][0]) >= {"method", "size", "nprobe", "build_s", "p50_ms", "recall"}
    table = report.table()
    assert table[0] == TABLE_HEADER and len(table) == len(report.rows) + 1
    assert all(len(line) == len(TABLE_HEADER) for line in table)


def test_plot(report: BenchReport, tmp_path: Path) -> None:
    out = plot_bench(report, tmp_path / "plots" / "bench.png")
    with Image.open(out) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert 400 <= width <= 2000 and 300 <= height <= 1500
    assert [p.name for p in out.parent.iterdir()] == ["bench.png"]  # no temporary left behind


def test_user_vectors_cap_sizes() -> None:
    rng = np.random.default_rng(2)
    vectors, _ = synthetic_vectors(300, 16, rng)
    report = run_bench([100, 1000, 5000], dim=768, queries=500, nprobes=(1, 4), vectors=vectors)
    assert report.source == "library" and report.dim == 16
    assert report.sizes == [100, 300] and report.queries == 300
    assert {r.size for r in report.rows} == {100, 300}
    assert all(r.recall == 1.0 for r in report.rows if r.method == "flat")


def test_tiny_and_bad_inputs() -> None:
    report = run_bench([5], dim=8, queries=3, k=10)  # fewer vectors than k
    assert {r.method for r in report.rows} == {"numpy", "flat", "ivf"}
    assert all(r.recall == 1.0 for r in report.rows)
    with pytest.raises(ImgvecError):
        run_bench([0])
    with pytest.raises(ImgvecError):
        run_bench([10], vectors=np.zeros((0, 8), np.float32))


@pytest.mark.parametrize("threads", [1, 2])
def test_every_thread_pool_is_held_while_measuring(
    threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FAISS's OpenMP and every BLAS (NumPy's, FAISS's) run on ``threads`` during the
    measurements, and are given back after."""
    from threadpoolctl import threadpool_info

    import imgvec.tools.bench as bench

    def pools() -> set[tuple[str, int]]:
        return {(pool["internal_api"], pool["num_threads"]) for pool in threadpool_info()}

    before = pools()
    seen: list[set[tuple[str, int]]] = []
    exact_top_k = recall.exact_top_k

    def watched(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(pools())
        return exact_top_k(*args, **kwargs)

    monkeypatch.setattr(bench.recall, "exact_top_k", watched)
    report = run_bench([300], dim=8, queries=3, nprobes=(1,), threads=threads)
    assert report.threads == threads and json.loads(report.to_json())["threads"] == threads
    assert seen and all({n for _, n in during} == {threads} for during in seen)
    assert {api for api, _ in seen[0]} >= {"openmp", "openblas"}
    assert pools() == before
