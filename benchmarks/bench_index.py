"""Benchmark of the FAISS index: build, size, open, single-query latency and recall per kind, and
the cost of incremental changes through the library's versioned index.

Run from the repository root (about half an hour on two cores for the default sizes):

    .venv/bin/python -m benchmarks.bench_index --out benchmarks/index_results.md

Data: synthetic L2-normalised vectors with cluster structure like real embeddings (uniformly
random 768-d vectors have no near neighbours, so IVF would need to scan almost every list). A
fixed seed draws 64 group directions; 4,096 cluster centres each lie around one group
(centre = group + offset of norm 1.0, normalised); a vector is a random centre plus Gaussian noise
of norm 1.5, normalised. Members of one cluster then have cosine ~0.31, of sibling clusters (one
group) ~0.15, of unrelated clusters ~0. Query vectors are fresh draws (not library members).

For each size N:

1. per index kind (flat, ivf, ivfpq): ``faiss_index.build`` on the N vectors in a fresh
   subprocess (time, peak RSS over the RSS with the vectors loaded), ``faiss_index.save`` (file
   size), then in another subprocess: ``faiss_index.load(path, kind)`` (memory-mapped) and
   ``faiss_index.load(path)`` (read whole), both right after the file was written (the OS cache
   cannot be dropped here, so these are warm opens), then single queries (k=10) through
   ``faiss_index.search`` with the memory-mapped segment, their latency and recall@10 against
   exact search;
2. through the library: ``Library.open`` of a fresh directory, a 768-d model row, N images and
   vectors bulk-inserted with SQLAlchemy Core, ``lib.index().build()``; then (a) 1,000 new images
   (``store.put_vector``) and (b) 1,000 removals (``store.delete_images``), each followed by
   ``lib.index().update()`` (timed alone and with the database writes), checking whether the base
   segment file was rewritten; then single queries through ``IndexStore.search`` on the resulting
   version (base + delta + tombstones), and finally ``lib.index().compact()``.

With ``--out FILE`` the results replace the section between ``<!-- index:start -->`` and
``<!-- index:end -->`` in FILE (the file is created if missing; other sections are untouched).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from benchmarks import report
from benchmarks.machine import CpuMeter
from imgvec import faiss_index, index_rules, recall

REPO = Path(__file__).resolve().parent.parent
COMMAND = ".venv/bin/python -m benchmarks.bench_index"
START_MARKER = "<!-- index:start -->"
END_MARKER = "<!-- index:end -->"
HEADER = """# Index benchmarks

Every figure in this file comes from `benchmarks/bench_index.py`; the section gives the exact
command that produced it (run from the repository root), so it can be re-run and checked.
Absolute times on this shared 2-core machine are noisy (other work may run beside a benchmark);
ratios measured within one run are what to compare.
"""
RESULT_PREFIX = "BENCH-RESULT "

K = 10
TARGET_RECALL = recall.DEFAULT_TARGET
CHANGES = 1_000
"""Images added, then removed, in the incremental measurements."""
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
DEFAULT_DIM = 768

# The generator (see the module docstring).
SEED = 0
GROUPS = 64
CENTRES = 4096
CENTRE_SPREAD = 1.0
NOISE = 1.5
CHUNK = 65_536
LIBRARY_STREAM, QUERY_STREAM, ADDED_STREAM = 1, 2, 3

INSERT_BATCH = 10_000
WARMUP_QUERIES = 3
ONE_THREAD_QUERIES = 200
"""Queries timed again with FAISS on one OpenMP thread (flat: half its queries)."""
FLAT_SCAN_BUDGET = 200_000_000
"""Flat search reads every vector: it gets at most this many vectors scanned in all (at least
100 queries), e.g. 200 queries at 1M."""
MB = 1 << 20
GB = 1 << 30


# --- data ----------------------------------------------------------------------------------------


def centres(dim: int) -> np.ndarray:
    rng = np.random.default_rng([SEED, 0])
    groups = _normalised(rng.standard_normal((GROUPS, dim), dtype=np.float32))
    offsets = rng.standard_normal((CENTRES, dim), dtype=np.float32) * (CENTRE_SPREAD / dim**0.5)
    return _normalised(groups[np.arange(CENTRES) % GROUPS] + offsets)


def _normalised(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _chunk(middles: np.ndarray, stream: int, number: int, rows: int) -> np.ndarray:
    """Rows ``number * CHUNK ...`` of a stream: the first N rows never depend on N."""
    rng = np.random.default_rng([SEED, stream, number])
    dim = middles.shape[1]
    noise = rng.standard_normal((rows, dim), dtype=np.float32) * (NOISE / dim**0.5)
    return _normalised(middles[rng.integers(0, len(middles), rows)] + noise)


def sample(n: int, dim: int, stream: int) -> np.ndarray:
    middles = centres(dim)
    parts = [
        _chunk(middles, stream, number, min(CHUNK, n - start))
        for number, start in enumerate(range(0, n, CHUNK))
    ]
    return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)


def write_sample(path: Path, n: int, dim: int, stream: int) -> None:
    """The same vectors as :func:`sample`, written chunk by chunk to a ``.npy`` file."""
    middles = centres(dim)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for number, start in enumerate(range(0, n, CHUNK)):
        rows = min(CHUNK, n - start)
        out[start : start + rows] = _chunk(middles, stream, number, rows)
    out.flush()
    del out


def exact_top_k(
    vectors: np.ndarray, queries: np.ndarray, k: int, skip: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, row numbers) of each query's k nearest rows by inner product, rows whose ``skip``
    is True left out; reads ``vectors`` (possibly memory-mapped) a chunk at a time."""
    n_queries = len(queries)
    best_scores = np.full((n_queries, 0), -np.inf, np.float32)
    best_rows = np.zeros((n_queries, 0), np.int64)
    for start in range(0, len(vectors), CHUNK):
        block = np.asarray(vectors[start : start + CHUNK], dtype=np.float32)
        scores = queries @ block.T
        if skip is not None:
            scores[:, skip[start : start + len(block)]] = -np.inf
        take = min(k, scores.shape[1])
        top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        best_scores = np.hstack([best_scores, np.take_along_axis(scores, top, axis=1)])
        best_rows = np.hstack([best_rows, top + start])
        keep = np.argsort(-best_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(best_scores, keep, axis=1)
        best_rows = np.take_along_axis(best_rows, keep, axis=1)
    return best_scores, best_rows


def recall_at_k(truth: np.ndarray, found: np.ndarray) -> float:
    hits = sum(
        len(set(t.tolist()) & set(f.tolist()) - {-1}) for t, f in zip(truth, found, strict=True)
    )
    return hits / truth.size


def generator_facts(dim: int, pairs: int = 256) -> dict[str, float]:
    """Mean cosine of two vectors of one cluster, of sibling clusters (one group) and of
    clusters of different groups, measured on ``pairs`` pairs each."""
    middles = centres(dim)
    rng = np.random.default_rng([SEED, 9])

    def around(rows: np.ndarray) -> np.ndarray:
        noise = rng.standard_normal((len(rows), dim), dtype=np.float32) * (NOISE / dim**0.5)
        return _normalised(middles[rows] + noise)

    first = rng.integers(0, CENTRES - GROUPS, pairs)
    x = around(first)

    def mean_cosine(other: np.ndarray) -> float:
        return float(np.mean(np.einsum("ij,ij->i", x, around(other))))

    return {
        "within": mean_cosine(first),
        "sibling": mean_cosine(first + GROUPS),
        "unrelated": mean_cosine(first + 1),
    }


# --- measuring helpers ---------------------------------------------------------------------------


def rss_now() -> int:
    """Resident set size of this process in bytes (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def latencies(
    search_one: Callable[[np.ndarray], np.ndarray], queries: np.ndarray
) -> dict[str, Any]:
    """Per-query seconds and found ids, after a few unrecorded warm-up queries."""
    for query in queries[:WARMUP_QUERIES]:
        search_one(query[None, :])
    times: list[float] = []
    found: list[np.ndarray] = []
    for query in queries:
        started = time.perf_counter()
        ids = search_one(query[None, :])
        times.append(time.perf_counter() - started)
        found.append(ids[0])
    return {
        "p50_ms": float(np.percentile(times, 50)) * 1e3,
        "p99_ms": float(np.percentile(times, 99)) * 1e3,
        "mean_ms": float(np.mean(times)) * 1e3,
        "found": np.stack(found),
    }


def machine_facts() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB,
        "faiss": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "os": platform.platform(terse=True),
    }


# --- workers (each in a fresh subprocess) --------------------------------------------------------


def worker_build(task: dict[str, Any]) -> dict[str, Any]:
    """Build one kind on the vectors, save it; time, peak memory, file size, tuning."""
    vectors = np.load(task["data"])
    ids = np.arange(len(vectors), dtype=np.int64)
    baseline = rss_now()
    started = time.perf_counter()
    built = faiss_index.build(ids, vectors, task["kind"])
    build_s = time.perf_counter() - started
    peak = peak_rss()
    path = Path(task["index"])
    started = time.perf_counter()
    faiss_index.save(built.index, path)
    save_s = time.perf_counter() - started
    return {
        "build_s": build_s,
        "save_s": save_s,
        "baseline_rss": baseline,
        "peak_rss": peak,
        "extra_rss": peak - baseline,
        "file_bytes": path.stat().st_size,
        "params": built.params,
        "train_size": built.train_size,
        "build_recall": built.recall,
    }


def worker_search(task: dict[str, Any]) -> dict[str, Any]:
    """Open an index file both ways, then time single queries on the memory-mapped one."""
    kind, path = task["kind"], Path(task["index"])
    queries = np.load(task["queries"])[: task["n_queries"]]
    truth = np.load(task["truth"])[: task["n_queries"]]
    lookup = None
    if kind == "ivfpq":
        vectors = np.load(task["data"])  # in memory: ids are row numbers

        def lookup(ids: np.ndarray) -> np.ndarray:
            return vectors[ids]

    started = time.perf_counter()
    index = faiss_index.load(path, kind)
    open_mmap_s = time.perf_counter() - started
    segments = [faiss_index.Segment(index, kind, task["params"])]

    def search_one(query: np.ndarray) -> np.ndarray:
        return faiss_index.search(segments, query, K, lookup)[1]

    started = time.perf_counter()
    search_one(queries[:1])
    first_query_s = time.perf_counter() - started
    started = time.perf_counter()
    whole = faiss_index.load(path)
    open_full_s = time.perf_counter() - started
    del whole
    timed = latencies(search_one, queries)
    found = timed.pop("found")
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    few = min(len(queries), ONE_THREAD_QUERIES if kind != "flat" else len(queries) // 2)
    single = latencies(search_one, queries[:few])
    faiss.omp_set_num_threads(threads)
    return {
        "p50_1t_ms": single["p50_ms"],
        "p99_1t_ms": single["p99_ms"],
        "n_queries_1t": few,
        "open_mmap_s": open_mmap_s,
        "open_full_s": open_full_s,
        "first_query_s": first_query_s,
        "recall": recall_at_k(truth, found),
        "n_queries": len(queries),
        **timed,
    }


class _Notices:
    """A reporter that keeps the library's notices (compactions, retraining)."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def notice(self, message: str) -> None:
        self.messages.append(message)

    def file_error(self, path: str, reason: str) -> None:
        self.messages.append(f"{path}: {reason}")

    def progress(self, description: str, total: int) -> Callable[[int], None]:
        return lambda _n: None

    def done(self) -> None:
        pass


def worker_library(task: dict[str, Any]) -> dict[str, Any]:
    """Bulk-load a library, build its index, then time 1,000 additions and 1,000 removals."""
    from sqlalchemy import insert

    from imgvec import store
    from imgvec.library import Library
    from imgvec.schema import Embedding, EmbeddingModel, Image

    dim = task["dim"]
    data = np.load(task["data"], mmap_mode="r")
    n = len(data)
    added = np.load(task["added"])
    queries = np.load(task["queries"])[: task["n_queries"]]
    root = Path(task["root"])
    notices = _Notices()
    lib = Library.open(root, reporter=notices)
    with lib.session() as session, session.begin():
        row = EmbeddingModel(
            name="bench", layer="x", weights="none:seed=0", preprocessing="-", dim=dim
        )
        session.add(row)
        session.flush()
        store.set_active_model(session, row)
        model_id = row.id
    result: dict[str, Any] = {"n": n, "n_queries": len(queries)}

    # Setup: N images and vectors in one transaction (no change-log rows: the build covers them).
    started = time.perf_counter()
    now = datetime.now(timezone.utc)
    with lib.engine.begin() as connection:
        for start in range(0, n, INSERT_BATCH):
            block = np.asarray(data[start : start + INSERT_BATCH], dtype="<f4")
            image_ids = range(start + 1, start + 1 + len(block))
            connection.execute(
                insert(Image),
                [
                    {
                        "id": i,
                        "path": f"/bench/{i:08d}.jpg",
                        "size": 1,
                        "mtime_ns": 0,
                        "added_at": now,
                        "updated_at": now,
                    }
                    for i in image_ids
                ],
            )
            connection.execute(
                insert(Embedding),
                [
                    {"image_id": i, "model_id": model_id, "vector": v.tobytes(), "created_at": now}
                    for i, v in zip(image_ids, block, strict=True)
                ],
            )
    result["insert_s"] = time.perf_counter() - started
    result["db_bytes"] = sum(p.stat().st_size for p in root.glob("imgvec.db*"))

    index = lib.index()
    with lib.writing():
        started = time.perf_counter()
        index.build()
        result["build_s"] = time.perf_counter() - started
    base = _active_info(index)
    result["base"] = {
        "kind": base.kind,
        "params": base.params,
        "recall": base.recall,
        "file_bytes": base.segments[0]["size_bytes"],
    }
    lookup = lib._vector_lookup(lib.active_model_row())

    def library_search(version: Any) -> Callable[[np.ndarray], np.ndarray]:
        return lambda query: index.search(version, query, K, lookup)[1]

    version, _ = index.active()
    timed = _both_thread_counts(library_search(version), queries)
    truth_ids = exact_top_k(data, queries, K)[1] + 1
    result["query_base"] = {"recall": recall_at_k(truth_ids, timed.pop("found")), **timed}

    # (a) 1,000 new images with vectors, through store.put_vector (which logs the changes).
    before = _base_file(root, index)
    with lib.writing():
        started = time.perf_counter()
        with lib.session() as session, session.begin():
            images = [
                Image(path=f"/bench/new/{j:05d}.jpg", size=1, mtime_ns=0) for j in range(CHANGES)
            ]
            session.add_all(images)
            session.flush()
            added_ids = np.array([image.id for image in images], np.int64)
            for image_id, vector in zip(added_ids, added, strict=True):
                store.put_vector(session, int(image_id), model_id, store.vector_to_bytes(vector))
        written = time.perf_counter()
        rule = _rule_inputs(lib, index, model_id)
        started_update = time.perf_counter()
        version = index.update()
        done = time.perf_counter()
    result["add"] = _change_result(
        started, written, started_update, done, version, rule, before, _base_file(root, index)
    )

    # (b) 1,000 removals of images that were in the base.
    rng = np.random.default_rng([SEED, 5])
    removed_ids = np.sort(rng.choice(n, CHANGES, replace=False) + 1)
    before = _base_file(root, index)
    with lib.writing():
        started = time.perf_counter()
        with lib.session() as session, session.begin():
            store.delete_images(session, [int(i) for i in removed_ids])
        written = time.perf_counter()
        rule = _rule_inputs(lib, index, model_id)
        started_update = time.perf_counter()
        version = index.update()
        done = time.perf_counter()
    result["remove"] = _change_result(
        started, written, started_update, done, version, rule, before, _base_file(root, index)
    )

    # Queries on the version after both changes (base + delta + tombstones, unless compacted).
    version, _ = index.active()
    info = _active_info(index)
    skip = np.zeros(n, bool)
    skip[removed_ids - 1] = True
    base_scores, base_rows = exact_top_k(data, queries, K, skip)
    new_scores, new_rows = exact_top_k(added, queries, K)
    scores = np.hstack([base_scores, new_scores])
    ids = np.hstack([base_rows + 1, added_ids[new_rows]])
    truth_ids = np.take_along_axis(ids, np.argsort(-scores, axis=1, kind="stable")[:, :K], axis=1)
    timed = _both_thread_counts(library_search(version), queries)
    found = timed.pop("found")
    with lib.session() as session:
        floor = min(s["created_seq"] for s in info.segments)
        tombstones = len(store.changed_since(session, model_id, floor))
    result["query_changed"] = {
        "recall": recall_at_k(truth_ids, found),
        "removed_returned": int(np.isin(found, removed_ids).sum()),
        "segments": len(info.segments),
        "roles": [s["role"] for s in info.segments],
        "changed_ids": tombstones,
        **timed,
    }

    # Compaction, timed on its own.
    before = _base_file(root, index)
    with lib.writing():
        started = time.perf_counter()
        version = index.compact()
        result["compact"] = {
            "s": time.perf_counter() - started,
            "operation": version.operation,
            "base_rewritten": _base_file(root, index) != before,
            "file_bytes": _active_info(index).segments[0]["size_bytes"],
        }
    result["notices"] = notices.messages
    result["peak_rss"] = peak_rss()
    lib.close()
    return result


def _both_thread_counts(
    search_one: Callable[[np.ndarray], np.ndarray], queries: np.ndarray
) -> dict[str, Any]:
    """Latencies with FAISS's default threads, then on one thread (fewer queries)."""
    timed = latencies(search_one, queries)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    single = latencies(search_one, queries[:ONE_THREAD_QUERIES])
    faiss.omp_set_num_threads(threads)
    timed["p50_1t_ms"], timed["p99_1t_ms"] = single["p50_ms"], single["p99_ms"]
    return timed


def _active_info(index: Any) -> Any:
    return next(v for v in index.list_versions() if v.status == "active")


def _base_file(root: Path, index: Any) -> tuple[str, int]:
    path = _active_info(index).segments[0]["path"]
    return path, (root / path).stat().st_mtime_ns


def _rule_inputs(lib: Any, index: Any, model_id: int) -> dict[str, Any]:
    """What ``IndexStore._maybe_compact`` will weigh after this update (computed as it does)."""
    from imgvec import store

    info = _active_info(index)
    base, deltas = info.segments[0], info.segments[1:]
    with lib.session() as session:
        pending = store.changed_since(session, model_id, info.change_seq)
        new_vectors = len(
            store.vectors_of(session, model_id, lib.active_model_row().dim, pending)[0]
        )
        dead = len(store.changed_since(session, model_id, base["created_seq"]))
    delta_vectors = sum(s["n_vectors"] for s in deltas) + new_vectors
    segments = len(deltas) + (1 if new_vectors else 0)
    return {
        "base_vectors": base["n_vectors"],
        "delta_vectors": delta_vectors,
        "dead": dead,
        "delta_segments": segments,
        "threshold": max(
            index_rules.COMPACT_MIN_CHANGES, index_rules.COMPACT_FRACTION * base["n_vectors"]
        ),
        # Each id changed since the base counts once (added, re-embedded or removed).
        "compact": index_rules.should_compact(base["n_vectors"], dead, segments),
    }


def _change_result(
    started: float,
    written: float,
    started_update: float,
    done: float,
    version: Any,
    rule: dict[str, Any],
    before: tuple[str, int],
    after: tuple[str, int],
) -> dict[str, Any]:
    return {
        "db_s": written - started,
        "update_s": done - started_update,
        "total_s": (written - started) + (done - started_update),
        "operation": version.operation,
        "base_same": before == after,
        "rule": rule,
    }


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "build": worker_build,
    "search": worker_search,
    "library": worker_library,
}


def run_worker(task: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_index", "--worker", json.dumps(task)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"worker {task['mode']} failed (exit {done.returncode}):\n{done.stdout}")
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


# --- the run -------------------------------------------------------------------------------------


def default_queries(n: int) -> int:
    return 1000 if n <= 20_000 else 500 if n <= 200_000 else 300


def kind_queries(kind: str, n: int, wanted: int) -> int:
    return min(wanted, max(100, FLAT_SCAN_BUDGET // n)) if kind == "flat" else wanted


def measure_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    dim = args.dim
    with tempfile.TemporaryDirectory(prefix=f"bench-index-{n}-", dir=args.tmp) as temporary:
        tmp = Path(temporary)
        data = tmp / "vectors.npy"
        started = time.perf_counter()
        write_sample(data, n, dim, LIBRARY_STREAM)
        n_queries = args.queries or default_queries(n)
        queries = sample(n_queries, dim, QUERY_STREAM)
        np.save(tmp / "queries.npy", queries)
        np.save(tmp / "added.npy", sample(CHANGES, dim, ADDED_STREAM))
        generate_s = time.perf_counter() - started
        started = time.perf_counter()
        np.save(tmp / "truth.npy", exact_top_k(np.load(data, mmap_mode="r"), queries, K)[1])
        truth_s = time.perf_counter() - started
        _log(f"N={n}: data {generate_s:.1f} s, exact neighbours {truth_s:.1f} s")
        common = {"data": str(data), "queries": str(tmp / "queries.npy")}
        kinds = []
        for kind in args.kinds:
            meter = CpuMeter()
            index = tmp / f"{kind}.faiss"
            built = run_worker({"mode": "build", "kind": kind, "index": str(index), **common})
            searched = run_worker(
                {
                    "mode": "search",
                    "kind": kind,
                    "index": str(index),
                    "params": built["params"],
                    "truth": str(tmp / "truth.npy"),
                    "n_queries": kind_queries(kind, n, n_queries),
                    **common,
                }
            )
            index.unlink()
            kinds.append({"kind": kind, **built, **searched, "other_cores": meter.other_cores()})
            _log(
                f"N={n} {kind}: build {built['build_s']:.1f} s, p50 {searched['p50_ms']:.2f} ms, "
                f"recall@10 {searched['recall']:.3f}"
            )
        library = None
        if n <= args.library_max:
            meter = CpuMeter()
            library = run_worker(
                {
                    "mode": "library",
                    "dim": dim,
                    "added": str(tmp / "added.npy"),
                    "root": str(tmp / "library"),
                    "n_queries": min(n_queries, 500),
                    **common,
                }
            )
            library["other_cores"] = meter.other_cores()
            _log(
                f"N={n} library: insert {library['insert_s']:.1f} s, build "
                f"{library['build_s']:.1f} s, add update {library['add']['update_s']:.2f} s, "
                f"remove update {library['remove']['update_s']:.2f} s, compact "
                f"{library['compact']['s']:.1f} s"
            )
    return {
        "n": n,
        "n_queries": n_queries,
        "generate_s": generate_s,
        "truth_s": truth_s,
        "kinds": kinds,
        "library": library,
    }


def _log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the report ----------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    value = seconds * 1e3
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


def _s(seconds: float) -> str:
    return (
        f"{seconds:.3f}" if seconds < 1 else f"{seconds:.2f}" if seconds < 10 else f"{seconds:.0f}"
    )


def _n(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def _params(row: dict[str, Any]) -> str:
    params = row["params"]
    if "nlist" not in params:
        return "-"
    text = f"{params['nlist']} / {params['nprobe']}"
    return text + (f", m={params['m']}" if "m" in params else "")


def _size_text(size_bytes: float) -> str:
    return f"{size_bytes / GB:.2f} GB" if size_bytes >= GB else f"{size_bytes / MB:.1f} MB"


def _gauge(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def build_table(sizes: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| N | kind | nlist / nprobe | trained on | build s | save s | peak RSS GB "
        "(over loaded vectors) | file MB | recall@10 at build | other cores busy |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
        for row in size["kinds"]:
            build_recall = row["build_recall"]
            cells = [
                _n(size["n"]),
                row["kind"],
                _params(row),
                f"{row['train_size']:,}" if row["train_size"] else "-",
                _s(row["build_s"]),
                _s(row["save_s"]),
                f"{row['peak_rss'] / GB:.2f} (+{row['extra_rss'] / GB:.2f})",
                f"{row['file_bytes'] / MB:.1f}",
                "-" if build_recall is None else f"{build_recall:.3f}",
                _gauge(row["other_cores"]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def search_table(sizes: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| N | kind | open mmap ms | open whole ms | 1st query ms | p50 ms | p99 ms "
        "| recall@10 | queries | p50 ms, 1 thread | p99 ms, 1 thread | queries, 1 thread |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
        for row in size["kinds"]:
            cells = [
                _n(size["n"]),
                row["kind"],
                _ms(row["open_mmap_s"]),
                _ms(row["open_full_s"]),
                _ms(row["first_query_s"]),
                f"{row['p50_ms']:.2f}",
                f"{row['p99_ms']:.2f}",
                f"{row['recall']:.3f}",
                str(row["n_queries"]),
                f"{row['p50_1t_ms']:.2f}",
                f"{row['p99_1t_ms']:.2f}",
                str(row["n_queries_1t"]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _libraries(sizes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [size["library"] for size in sizes if size["library"] is not None]


def setup_table(sizes: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| N | bulk insert s | database GB | `build()` s | base kind | nlist / nprobe "
        "| base MB | recall@10 at build | worker peak RSS GB (with its mapped input) |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for lib in _libraries(sizes):
        base = lib["base"]
        lines.append(
            f"| {_n(lib['n'])} | {_s(lib['insert_s'])} | {lib['db_bytes'] / GB:.2f} "
            f"| {_s(lib['build_s'])} | {base['kind']} | {_params(base)} "
            f"| {base['file_bytes'] / MB:.1f} "
            f"| {'-' if base['recall'] is None else format(base['recall'], '.3f')} "
            f"| {lib['peak_rss'] / GB:.2f} |"
        )
    return "\n".join(lines)


def _made(change: dict[str, Any]) -> str:
    rule = change["rule"]
    verdict = (
        f"{rule['delta_vectors']:,} delta + {rule['dead']:,} changed = "
        f"{rule['delta_vectors'] + rule['dead']:,} vs > {rule['threshold']:,.0f}"
    )
    return f"{change['operation']} ({verdict})"


def changes_table(sizes: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| N | change | DB writes s | `update()` s | total s | version made "
        "(compaction rule: changes vs threshold) | base file untouched |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for lib in _libraries(sizes):
        for label, key in ((f"add {CHANGES:,}", "add"), (f"remove {CHANGES:,}", "remove")):
            change = lib[key]
            lines.append(
                f"| {_n(lib['n'])} | {label} | {_s(change['db_s'])} | {_s(change['update_s'])} "
                f"| {_s(change['total_s'])} | {_made(change)} "
                f"| {'yes' if change['base_same'] else '**no**'} |"
            )
        compact = lib["compact"]
        lines.append(
            f"| {_n(lib['n'])} | `compact()` | - | {_s(compact['s'])} | {_s(compact['s'])} "
            f"| {compact['operation']} ({compact['file_bytes'] / MB:.1f} MB base) "
            f"| {'no (rewritten, as compaction must)' if compact['base_rewritten'] else 'yes'} |"
        )
    return "\n".join(lines)


def library_query_table(sizes: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| N | version searched | segments | ids filtered as changed | p50 ms | p99 ms "
        "| recall@10 | removed ids returned | queries | p50 ms, 1 thread | p99 ms, 1 thread |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for lib in _libraries(sizes):
        base, changed = lib["query_base"], lib["query_changed"]
        n_queries = lib["n_queries"]
        lines.append(
            f"| {_n(lib['n'])} | base only (after `build()`) | 1 | 0 | {base['p50_ms']:.2f} "
            f"| {base['p99_ms']:.2f} | {base['recall']:.3f} | - | {n_queries} "
            f"| {base['p50_1t_ms']:.2f} | {base['p99_1t_ms']:.2f} |"
        )
        lines.append(
            f"| {_n(lib['n'])} | after +{CHANGES:,} / -{CHANGES:,}: "
            f"{' + '.join(changed['roles'])} | {changed['segments']} "
            f"| {changed['changed_ids']:,} | {changed['p50_ms']:.2f} | {changed['p99_ms']:.2f} "
            f"| {changed['recall']:.3f} | {changed['removed_returned']} | {n_queries} "
            f"| {changed['p50_1t_ms']:.2f} | {changed['p99_1t_ms']:.2f} |"
        )
    return "\n".join(lines)


RATIO_ROWS = (
    ("add 1,000: `update()` s", ("add", "update_s")),
    ("add 1,000: DB writes + `update()` s", ("add", "total_s")),
    ("remove 1,000: `update()` s", ("remove", "update_s")),
    ("remove 1,000: DB writes + `update()` s", ("remove", "total_s")),
    ("query p50 ms, base only", ("query_base", "p50_ms")),
    ("query p50 ms, base + delta + tombstones", ("query_changed", "p50_ms")),
    ("query p50 ms on 1 thread, base only", ("query_base", "p50_1t_ms")),
    ("query p50 ms on 1 thread, base + delta + tombstones", ("query_changed", "p50_1t_ms")),
)


def ratio_table(sizes: Sequence[dict[str, Any]]) -> str:
    libs = _libraries(sizes)
    if len(libs) < 2:
        return ""
    small, large = libs[0], libs[-1]
    lines = [
        f"| measured in this run | N={_n(small['n'])} | N={_n(large['n'])} "
        f"| ratio {_n(large['n'])} / {_n(small['n'])} |",
        "|---|---:|---:|---:|",
    ]
    for label, (part, key) in RATIO_ROWS:
        a, b = small[part][key], large[part][key]
        lines.append(f"| {label} | {a:.3f} | {b:.3f} | {b / a:.2f} |")
    return "\n".join(lines)


def _kind(size: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((row for row in size["kinds"] if row["kind"] == kind), None)


def interpretation(sizes: Sequence[dict[str, Any]], threads: int) -> str:
    sentences: list[str] = []
    large = sizes[-1]
    flat, ivf, pq = (_kind(large, kind) for kind in ("flat", "ivf", "ivfpq"))
    n = _n(large["n"])
    if flat and ivf:
        text = (
            f"At N={n} one k=10 query took p50 {ivf['p50_ms']:.2f} ms on IVF-Flat (nprobe "
            f"{ivf['params']['nprobe']} of {ivf['params']['nlist']} lists) at recall@10 "
            f"{ivf['recall']:.3f} on fresh queries, against {flat['p50_1t_ms']:.0f} ms for "
            f"exact flat search on one FAISS thread ({flat['p50_ms']:.0f} ms on the default "
            f"{threads} threads"
        )
        if flat["p50_ms"] > 1.5 * flat["p50_1t_ms"]:
            text += (
                ", where FAISS's threads wait for each other while other processes hold a core; "
                "the one-thread columns are the steadier figures on this machine"
            )
        sentences.append(text + ").")
    if pq and flat:
        text = (
            f"IVF-PQ, re-ranking {K * faiss_index.RERANK_FACTOR} candidates exactly, took "
            f"{pq['p50_ms']:.2f} ms from a file {flat['file_bytes'] / pq['file_bytes']:.0f}x "
            f"smaller than flat's, at recall@10 {pq['recall']:.3f}"
        )
        if pq["build_recall"] is not None and pq["build_recall"] < TARGET_RECALL:
            text += (
                f", below the {TARGET_RECALL} target even at the best nprobe the build found "
                f"({pq['build_recall']:.3f} on its own sample): at this size the "
                f"{K * faiss_index.RERANK_FACTOR} PQ candidates, not nprobe, limit recall"
            )
        sentences.append(text + ".")
    if ivf and flat:
        vectors = flat["baseline_rss"]
        text = (
            f"Building took {_s(ivf['build_s'])} s for IVF-Flat"
            + (f" and {_s(pq['build_s'])} s for IVF-PQ" if pq else "")
            + f" against {_s(flat['build_s'])} s for flat, and IVF-Flat's build peaked at "
            f"{ivf['peak_rss'] / GB:.1f} GB of RSS with {vectors / GB:.1f} GB of vectors loaded "
            "(the index, the training sample and the exact copy `_tune` searches for recall); "
            f"opening the {_size_text(flat['file_bytes'])} flat file memory-mapped took "
            f"{_ms(flat['open_mmap_s'])} ms against {_ms(flat['open_full_s'])} ms to read it "
            "whole (right after writing it, from the OS cache), the first query then paying "
            f"{_ms(flat['first_query_s'])} ms to touch the mapped pages."
        )
        sentences.append(text)
    libs = _libraries(sizes)
    if len(libs) >= 2:
        small, big = libs[0], libs[-1]
        compacted = [
            f"N={_n(lib['n'])} ({key}: {lib[key]['operation']}, "
            f"{lib[key]['rule']['delta_vectors'] + lib[key]['rule']['dead']:,} counted changes "
            f"vs {lib[key]['rule']['threshold']:,.0f})"
            for lib in libs
            for key in ("add", "remove")
            if lib[key]["operation"] != "update"
        ]
        add_ratio = big["add"]["update_s"] / small["add"]["update_s"]
        remove_ratio = big["remove"]["update_s"] / small["remove"]["update_s"]
        text = (
            f"Through the library, `update()` after 1,000 additions took "
            f"{small['add']['update_s']:.3f} s at N={_n(small['n'])} and "
            f"{big['add']['update_s']:.3f} s at N={_n(big['n'])} (ratio {add_ratio:.2f}), and "
            f"after 1,000 removals {small['remove']['update_s']:.3f} s vs "
            f"{big['remove']['update_s']:.3f} s (ratio {remove_ratio:.2f})"
        )
        if compacted:
            text += (
                "; a compaction ran inside `update()` at "
                + ", ".join(compacted)
                + ", because the rule counts each added id twice (as a delta vector and as a "
                "changed id), so that row includes rewriting that base"
            )
        untouched = all(
            lib[key]["base_same"]
            for lib in libs
            for key in ("add", "remove")
            if lib[key]["operation"] == "update"
        )
        if untouched:
            text += "; every update that did not compact left the base file untouched"
        if max(add_ratio, remove_ratio) > 3:
            text += (
                ", yet `update()` is not constant in N: besides the delta it counts every stored "
                "vector (`store.count_vectors`, a scan of the model's rows)"
            )
        sentences.append(text + ".")
        changed = big["query_changed"]
        sentences.append(
            f"Searching the resulting version ({' + '.join(changed['roles'])}, "
            f"{changed['changed_ids']:,} ids filtered) through `IndexStore.search` took p50 "
            f"{changed['p50_1t_ms']:.2f} ms on one thread at N={_n(big['n'])} against "
            f"{big['query_base']['p50_1t_ms']:.2f} ms for the fresh base ("
            f"{changed['p50_ms']:.2f} vs {big['query_base']['p50_ms']:.2f} ms on {threads} "
            "threads): each query reads the change log since the oldest segment and builds its "
            "tombstone lists anew, so this overhead grows with the changes pending compaction; "
            f"recall@10 was {changed['recall']:.3f} against exact search over the live vectors, "
            f"with {changed['removed_returned']} removed ids returned."
        )
    return " ".join(sentences)


def section(raw: dict[str, Any]) -> str:
    machine, facts, sizes = raw["machine"], raw["generator"], raw["sizes"]
    others = raw.get("other_cores")
    busy = (
        ""
        if others is None
        else f" Other processes kept {others:.2f} of the {machine['cpus']} cores busy on average "
        "during the run (from `/proc/stat`)."
    )
    library_sizes = [_n(lib["n"]) for lib in _libraries(sizes)]
    skipped = [_n(size["n"]) for size in sizes if size["library"] is None]
    parts = [
        START_MARKER,
        "## FAISS index: build, search and incremental updates",
        "",
        "```sh",
        raw["command"],
        "```",
        "",
        f"- Run {raw['date']}, {raw['runtime_s'] / 60:.1f} minutes in all. Machine: "
        f"{machine['cpus']} CPUs (`os.cpu_count()`, {machine['cpu']}), "
        f"{machine['ram_gb']:.1f} GB RAM, {machine['os']}; faiss {machine['faiss']} "
        f"({machine['faiss_threads']} OpenMP threads), numpy {machine['numpy']}, Python "
        f"{machine['python']}, SQLite {machine['sqlite']}.{busy}",
        f"- Data: {raw['dim']}-d float32 vectors, L2-normalised, with cluster structure: "
        f"{GROUPS} random group directions; {CENTRES:,} cluster centres, each its group's "
        f"direction plus a Gaussian offset of norm {CENTRE_SPREAD} (normalised); a vector is a "
        f"uniformly chosen centre plus Gaussian noise of norm {NOISE}, normalised (seed {SEED}). "
        f"Mean cosine of two vectors of one cluster {facts['within']:.2f}, of sibling clusters "
        f"{facts['sibling']:.2f}, of unrelated clusters {facts['unrelated']:.2f}. Queries are "
        "fresh draws from the same distribution, not library members; the 1,000 added vectors "
        "another fresh stream.",
        "- **Index kinds**: `faiss_index.build(ids, vectors, kind)` in a fresh subprocess per "
        "kind (nlist and training size from `index_rules`, nprobe tuned by the build to "
        "recall@10 0.95 on 256 of the library's own vectors: *recall@10 at build*). *peak RSS*: "
        "`ru_maxrss` of that subprocess, in brackets over its RSS with the vectors already "
        "loaded. *file*: `faiss_index.save`. In a second subprocess: *open mmap* = "
        "`faiss_index.load(path, kind)`, *open whole* = `faiss_index.load(path)`, both right "
        "after the file was written (warm OS cache: dropping caches is not possible here); "
        "*1st query* = the first search on the memory-mapped index; then single queries "
        "(k=10) through `faiss_index.search` on the memory-mapped segment, after "
        f"{WARMUP_QUERIES} warm-up queries; ivfpq re-ranks with a lookup into an in-memory "
        "array. *recall@10*: against exact search (numpy) for those queries. Flat at large N "
        f"gets fewer queries (at most {FLAT_SCAN_BUDGET:,} vectors scanned, at least 100).",
        "- **Library path** (N = "
        + ", ".join(library_sizes or ["none"])
        + (f"; not run at {', '.join(skipped)}" if skipped else "")
        + "): `Library.open(tmp)`, a model row `bench`/`x` (768-d) made active, N images "
        f"and vectors bulk-inserted with SQLAlchemy Core in batches of {INSERT_BATCH:,} in one "
        "transaction (no change-log rows: the build covers them), `lib.index().build()` (kind "
        "chosen by `index_rules.choose_kind`). Then, under `lib.writing()`: add 1,000 images "
        "(ORM rows, `store.put_vector`, one transaction) + `update()`; remove 1,000 base images "
        "(`store.delete_images`) + `update()`; *DB writes* is the transaction, *update()* the "
        "call alone. *Compaction rule*: what `_maybe_compact` weighs, delta vectors + changed "
        "ids since the base against max(1,000, 10% of the base); *base file untouched*: same "
        "path and mtime before and after. Queries: `IndexStore.search(version, q, 10, "
        "lib._vector_lookup(model))` one at a time on the active version (its SQL reads "
        "included), recall against exact search over the live vectors.",
        "",
        "### Index kinds: build",
        "",
        build_table(sizes),
        "",
        "### Index kinds: open and single queries",
        "",
        search_table(sizes),
    ]
    if library_sizes:
        parts += [
            "",
            "### Library: setup (not part of the incremental cost)",
            "",
            setup_table(sizes),
            "",
            "### Library: incremental changes",
            "",
            changes_table(sizes),
            "",
            "### Library: queries through `IndexStore.search`",
            "",
            library_query_table(sizes),
        ]
        ratios = ratio_table(sizes)
        if ratios:
            parts += ["", "### Ratios within this run", "", ratios]
    parts += ["", interpretation(sizes, machine["faiss_threads"]), END_MARKER]
    return "\n".join(parts)


def write_section(out: Path, text: str) -> None:
    report.write_section(out, text, START_MARKER, END_MARKER, HEADER)


# --- main ----------------------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    sizes = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    if not sizes or sizes[0] < index_rules.MIN_POINTS_PER_LIST * 16:
        raise argparse.ArgumentTypeError("sizes must be at least 624 (IVF needs training points)")
    return sizes


def _kinds(text: str) -> list[str]:
    kinds = [part.strip() for part in text.split(",") if part.strip()]
    unknown = set(kinds) - set(faiss_index.KINDS)
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"kinds are among {', '.join(faiss_index.KINDS)}")
    return kinds


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_index", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=list(DEFAULT_SIZES),
        help="comma-separated library sizes (default: 10000,100000,1000000)",
    )
    parser.add_argument("--dim", type=int, default=DEFAULT_DIM, help="vector dimension")
    parser.add_argument(
        "--queries",
        type=int,
        help="queries per measurement (default: 1000 up to 20k vectors, 500 up to 200k, else "
        "300; flat at large sizes gets fewer)",
    )
    parser.add_argument(
        "--kinds", type=_kinds, default=list(faiss_index.KINDS), help="index kinds to measure"
    )
    parser.add_argument(
        "--library-max",
        type=int,
        help="run the library-path measurements only up to this size (default: every size)",
    )
    parser.add_argument("--out", type=Path, help="write the section into this markdown file")
    parser.add_argument("--raw", type=Path, help="also save the measurements as JSON here")
    parser.add_argument(
        "--from-raw", type=Path, help="render the report from saved measurements (no run)"
    )
    parser.add_argument("--tmp", type=Path, help="folder for temporary data (default: system)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.library_max is None:
        args.library_max = max(args.sizes)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        task = json.loads(args.worker)
        result = WORKERS[task["mode"]](task)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0
    if args.from_raw:
        raw = json.loads(args.from_raw.read_text())
    else:
        started = time.perf_counter()
        meter = CpuMeter()
        command = shlex.join([*COMMAND.split(), *(sys.argv[1:] if argv is None else argv)])
        date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        sizes = [measure_size(n, args) for n in args.sizes]
        raw = {
            "command": command,
            "date": date,
            "dim": args.dim,
            "machine": machine_facts(),
            "generator": generator_facts(args.dim),
            "sizes": sizes,
            "runtime_s": time.perf_counter() - started,
            "other_cores": meter.other_cores(),
        }
        if args.raw:
            args.raw.write_text(json.dumps(raw, indent=1))
    text = section(raw)
    print(text)
    if args.out:
        write_section(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
