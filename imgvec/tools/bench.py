"""``imgvec bench``: exact NumPy search vs FAISS flat vs FAISS IVF, by library size.

Every method searches the same vectors with the same queries, one query at a time (as
``imgvec query`` does), and is scored by recall@k against the NumPy exact result:

- ``numpy``: brute-force cosine over L2-normalised vectors
  (:func:`imgvec.index.recall.exact_top_k`);
- ``flat``: ``faiss.IndexFlatIP``, exact;
- ``ivf``: ``faiss.IndexIVFFlat`` (inner product) with the library's own sizing rules
  (:func:`imgvec.index.rules.ivf_nlist`, :func:`imgvec.index.rules.training_size`), at several
  nprobe values (those above nlist are skipped).

Every library that runs threads (FAISS's OpenMP, NumPy's and FAISS's BLAS) is held to
``threads`` (default 1) through threadpoolctl while it runs, so single-query figures do not
depend on what else the machine is doing: on two cores, FAISS's threads wait for each other
while another process holds a core (BENCHMARKS.md, the index section: 408 ms on two threads
against 146 ms on one for an exact query over 1M vectors).

By default the vectors are synthetic: L2-normalised points around random cluster centres, like
real embeddings (uniformly random high-dimensional vectors have no neighbours worth the name and
make IVF look useless). With ``vectors`` (a library's own, from ``store.all_vectors``) the sizes
are capped to how many there are and the queries are sampled from them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgvec.errors import ImgvecError
from imgvec.index import faiss_ops, recall

DEFAULT_SIZES = (100, 1_000, 10_000, 100_000)
DEFAULT_DIM = 768
DEFAULT_NPROBES = (1, 4, 16, 64)
METHODS = ("numpy", "flat", "ivf")
METHOD_LABELS = {"numpy": "NumPy exact", "flat": "FAISS flat (exact)", "ivf": "FAISS IVF"}
TABLE_HEADER = ("method", "size", "nlist", "nprobe", "build s", "p50 ms", "mean ms", "recall")

CLUSTER_NOISE = 0.6
"""Spread of a synthetic point around its centre, relative to the centre's (unit) length."""


@dataclass(frozen=True)
class BenchRow:
    method: str
    """``numpy``, ``flat`` or ``ivf``."""
    size: int
    nprobe: int | None
    build_s: float
    """Seconds to build the index (IVF: train + add; NumPy: none, 0)."""
    p50_ms: float
    """Median latency of a single-query search, in milliseconds."""
    mean_ms: float
    recall: float
    """recall@k against the NumPy exact result."""
    nlist: int | None = None


@dataclass
class BenchReport:
    dim: int
    queries: int
    k: int
    source: str
    """``synthetic`` or ``library`` (the user's vectors)."""
    sizes: list[int]
    rows: list[BenchRow] = field(default_factory=list)
    threads: int = 1
    """Threads each library (OpenMP, BLAS) was held to."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "queries": self.queries,
            "k": self.k,
            "threads": self.threads,
            "source": self.source,
            "sizes": self.sizes,
            "rows": [asdict(row) for row in self.rows],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> list[tuple[str, ...]]:
        """Rows of strings for printing; the first is the header (:data:`TABLE_HEADER`)."""
        lines: list[tuple[str, ...]] = [TABLE_HEADER]
        for row in self.rows:
            lines.append(
                (
                    row.method,
                    str(row.size),
                    "-" if row.nlist is None else str(row.nlist),
                    "-" if row.nprobe is None else str(row.nprobe),
                    f"{row.build_s:.3f}",
                    f"{row.p50_ms:.3f}",
                    f"{row.mean_ms:.3f}",
                    f"{row.recall:.3f}",
                )
            )
        return lines


def synthetic_vectors(
    n: int, dim: int, rng: np.random.Generator, centres: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(n L2-normalised vectors around random centres, the centres)."""
    if centres is None:
        n_centres = max(8, int(np.sqrt(max(n, 1))))
        centres = _normalise(rng.standard_normal((n_centres, dim), dtype=np.float32))
    assignment = rng.integers(0, len(centres), size=n)
    noise = rng.standard_normal((n, dim), dtype=np.float32) * (CLUSTER_NOISE / np.sqrt(dim))
    return _normalise(centres[assignment] + noise), centres


def run_bench(
    sizes: Sequence[int],
    dim: int = DEFAULT_DIM,
    queries: int = 100,
    k: int = 10,
    nprobes: tuple[int, ...] = DEFAULT_NPROBES,
    vectors: np.ndarray | None = None,
    seed: int = 0,
    threads: int = 1,
) -> BenchReport:
    """Benchmark every method at every size (see the module docstring), each thread pool
    (OpenMP, BLAS) held to ``threads``. Raises ImgvecError for sizes, queries, k, dim or
    threads below 1, or an empty ``vectors``."""
    if not sizes or any(size < 1 for size in sizes):
        raise ImgvecError("sizes must be positive numbers of vectors")
    if queries < 1 or k < 1 or dim < 1 or threads < 1:
        raise ImgvecError("queries, k, dim and threads must be at least 1")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads):
        report = _run(sizes, dim, queries, k, nprobes, vectors, seed)
    report.threads = threads
    return report


def _run(
    sizes: Sequence[int],
    dim: int,
    queries: int,
    k: int,
    nprobes: tuple[int, ...],
    vectors: np.ndarray | None,
    seed: int,
) -> BenchReport:
    rng = np.random.default_rng(seed)
    if vectors is not None:
        if vectors.ndim != 2 or len(vectors) == 0:
            raise ImgvecError("there are no vectors to benchmark; add images first")
        pool = np.ascontiguousarray(vectors, dtype=np.float32)
        dim = pool.shape[1]
        sizes = sorted({min(size, len(pool)) for size in sizes})
        pool = pool[rng.permutation(len(pool))]  # prefixes are random samples of the library
        query_vectors = pool[rng.choice(len(pool), min(queries, len(pool)), replace=False)]
        source = "library"
    else:
        sizes = sorted(set(sizes))
        pool, centres = synthetic_vectors(max(sizes), dim, rng)
        query_vectors, _ = synthetic_vectors(queries, dim, rng, centres)
        source = "synthetic"
    query_vectors = np.ascontiguousarray(query_vectors)
    report = BenchReport(dim, len(query_vectors), k, source, list(sizes))
    for size in sizes:
        base = np.ascontiguousarray(pool[:size])
        report.rows.extend(_bench_size(base, query_vectors, k, nprobes, seed))
    return report


def _bench_size(
    base: np.ndarray, queries: np.ndarray, k: int, nprobes: tuple[int, ...], seed: int
) -> list[BenchRow]:
    n = len(base)
    k = min(k, n)
    rows: list[BenchRow] = []

    truth, times = _time_queries(lambda q: recall.exact_top_k(base, q[None], k)[1][0], queries)
    rows.append(_row("numpy", n, None, 0.0, times, 1.0))

    row_ids = np.arange(n, dtype=np.int64)
    start = time.perf_counter()
    flat = faiss_ops.Segment(faiss_ops.flat(row_ids, base), "flat")
    build_s = time.perf_counter() - start
    found, times = _time_queries(lambda q: faiss_ops.search([flat], q[None], k)[1][0], queries)
    rows.append(_row("flat", n, None, build_s, times, recall.recall_at_k(truth, found, k)))

    start = time.perf_counter()
    built = faiss_ops.train(row_ids, base, "ivf", seed=seed)
    build_s = time.perf_counter() - start
    nlist = built.params["nlist"]
    for nprobe in sorted(set(nprobes)):
        if nprobe < 1 or nprobe > nlist:
            continue
        ivf = [faiss_ops.Segment(built.index, "ivf", {"nprobe": nprobe})]
        found, times = _time_queries(
            lambda q, ivf=ivf: faiss_ops.search(ivf, q[None], k)[1][0], queries
        )
        measured = recall.recall_at_k(truth, found, k)
        rows.append(_row("ivf", n, nprobe, build_s, times, measured, nlist=nlist))
    return rows


def _time_queries(
    search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(results, seconds per query), one query at a time after one untimed warm-up."""
    search(queries[0])
    results = []
    times = np.empty(len(queries))
    for i, query in enumerate(queries):
        start = time.perf_counter()
        results.append(search(query))
        times[i] = time.perf_counter() - start
    return np.stack(results), times


def _row(
    method: str,
    size: int,
    nprobe: int | None,
    build_s: float,
    times: np.ndarray,
    recall: float,
    nlist: int | None = None,
) -> BenchRow:
    return BenchRow(
        method,
        size,
        nprobe,
        build_s,
        float(np.median(times) * 1000),
        float(times.mean() * 1000),
        recall,
        nlist,
    )


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def plot_bench(report: BenchReport, out: Path) -> Path:
    """A log-log PNG of median query latency against library size, one line per method
    (IVF: one per nprobe)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from imgvec.atomic import atomic_write

    lines: dict[str, list[tuple[int, float]]] = {}
    for row in report.rows:
        label = METHOD_LABELS[row.method]
        if row.nprobe is not None:
            label += f", nprobe={row.nprobe}"
        lines.setdefault(label, []).append((row.size, max(row.p50_ms, 1e-6)))
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    try:
        for label, points in lines.items():
            points.sort()
            style = "o--" if "IVF" in label else "o-"
            ax.plot([p[0] for p in points], [p[1] for p in points], style, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("library size (vectors)")
        ax.set_ylabel("query latency, median (ms)")
        ax.set_title(
            f"Single-query search latency ({report.dim}-d, {report.source} vectors, k={report.k})"
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        out = Path(out)
        atomic_write(out, lambda temp: fig.savefig(temp, format="png"))
    finally:
        plt.close(fig)
    return out
