"""Benchmark of the FAISS index: build, size, open, single-query latency and recall per kind, and
the cost of incremental changes through the library's versioned index (issue 3).

    .venv/bin/python -m benchmarks.bench_index --sizes 10000,100000,1000000 --out BENCHMARKS.md

Data: synthetic L2-normalised vectors with cluster structure like real embeddings (64 group
directions, 4,096 cluster centres around them, a vector is a centre plus noise; fixed seed).
For each size N: per index kind, ``faiss_ops.build`` and ``save`` in a fresh interpreter, then in
another ``faiss_ops.load`` (memory-mapped and whole) and single queries through
``faiss_ops.search``; then a library of N vectors (``store.bulk_load``), ``build()``, 1,000
additions and 1,000 removals each followed by ``update()``, queries through
``IndexStore.search``, and ``compact()``. Recall is against ``recall.exact_top_k``. BENCHMARKS.md
says what each column means.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from benchmarks.common import GIB, MIB, millis, secs
from imgvec.index import faiss_ops, recall, rules

MODULE = "benchmarks.bench_index"
K = 10
CHANGES = 1_000
"""Images added, then removed, in the incremental measurements."""
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
SEED, GROUPS, CENTRES, CENTRE_SPREAD, NOISE, CHUNK = 0, 64, 4096, 1.0, 1.5, 65_536
LIBRARY_STREAM, QUERY_STREAM, ADDED_STREAM = 1, 2, 3
INSERT_BATCH = 10_000
ONE_THREAD_QUERIES = 200
"""Queries timed again with FAISS on one OpenMP thread (flat: half its queries)."""
FLAT_SCAN_BUDGET = 200_000_000
"""Flat search reads every vector: at most this many vectors scanned in all (at least 100
queries), e.g. 200 queries at 1M."""


# --- data ----------------------------------------------------------------------------------------


def _normalised(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def centres(dim: int) -> np.ndarray:
    rng = np.random.default_rng([SEED, 0])
    groups = _normalised(rng.standard_normal((GROUPS, dim), dtype=np.float32))
    offsets = rng.standard_normal((CENTRES, dim), dtype=np.float32) * (CENTRE_SPREAD / dim**0.5)
    return _normalised(groups[np.arange(CENTRES) % GROUPS] + offsets)


def around(middles: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal((len(rows), middles.shape[1]), dtype=np.float32)
    return _normalised(middles[rows] + noise * (NOISE / middles.shape[1] ** 0.5))


def write_sample(path: Path | None, n: int, dim: int, stream: int) -> np.ndarray:
    """N vectors of a stream, chunk by chunk (the first N rows never depend on N), into a
    ``.npy`` file when ``path`` is given (memory-mapped), else in memory."""
    middles = centres(dim)
    shape = (n, dim)
    out = np.lib.format.open_memmap(path, "w+", np.float32, shape) if path else np.zeros(shape)
    for number, start in enumerate(range(0, n, CHUNK)):
        rng = np.random.default_rng([SEED, stream, number])
        rows = min(CHUNK, n - start)
        out[start : start + rows] = around(middles, rng.integers(0, len(middles), rows), rng)
    return out.astype(np.float32, copy=False)


def generator_facts(dim: int, pairs: int = 256) -> dict[str, float]:
    """Mean cosine of two vectors of one cluster, of sibling clusters (one group) and of
    clusters of different groups."""
    middles, rng = centres(dim), np.random.default_rng([SEED, 9])
    first = rng.integers(0, CENTRES - GROUPS, pairs)
    x = around(middles, first, rng)
    pick = {"within": first, "sibling": first + GROUPS, "unrelated": first + 1}
    return {
        name: float(np.mean(np.einsum("ij,ij->i", x, around(middles, rows, rng))))
        for name, rows in pick.items()
    }


# --- workers (each in a fresh interpreter) -------------------------------------------------------


def worker_build(task: dict[str, Any]) -> dict[str, Any]:
    """Build one kind on the vectors, save it: time, peak memory, file size, tuning."""
    vectors = np.load(task["data"])
    baseline = common.rss()
    started = time.perf_counter()
    ids = np.arange(len(vectors), dtype=np.int64)
    built = faiss_ops.build(ids, vectors, task["index_kind"])
    build_s, peak = time.perf_counter() - started, common.peak_rss()
    started = time.perf_counter()
    faiss_ops.save(built.index, Path(task["index"]))
    result = {"build_s": build_s, "save_s": time.perf_counter() - started, "params": built.params}
    result.update(baseline_rss=baseline, peak_rss=peak, extra_rss=peak - baseline)
    result.update(train_size=built.train_size, build_recall=built.recall)
    return {**result, "file_bytes": Path(task["index"]).stat().st_size}


def worker_search(task: dict[str, Any]) -> dict[str, Any]:
    """Open an index file both ways, then time single queries on the memory-mapped one."""
    kind, path = task["index_kind"], Path(task["index"])
    queries = np.load(task["queries"])[: task["n_queries"]]
    truth = np.load(task["truth"])[: task["n_queries"]]
    lookup = None
    if kind == "ivfpq":  # re-ranking reads vectors by id: here, row numbers of an array
        lookup = np.load(task["data"]).__getitem__
    started = time.perf_counter()
    segments = [faiss_ops.Segment(faiss_ops.load(path, kind), kind, task["params"])]
    open_mmap_s = time.perf_counter() - started

    def search_one(query: np.ndarray) -> np.ndarray:
        return faiss_ops.search(segments, query, K, lookup)[1]

    started = time.perf_counter()
    search_one(queries[:1])
    first_query_s = time.perf_counter() - started
    started = time.perf_counter()
    faiss_ops.load(path)
    open_full_s = time.perf_counter() - started
    few = ONE_THREAD_QUERIES if kind != "flat" else len(queries) // 2
    timed, found = common.thread_latencies(search_one, queries, min(len(queries), few))
    timed.update(open_mmap_s=open_mmap_s, open_full_s=open_full_s, first_query_s=first_query_s)
    return {**timed, "recall": recall.recall_at_k(truth, found, K), "n_queries": len(queries)}


def worker_library(task: dict[str, Any]) -> dict[str, Any]:
    """Bulk-load a library, build its index, then time 1,000 additions and 1,000 removals."""
    from imgvec.api import Library
    from imgvec.reporting import SilentReporter
    from imgvec.storage import store

    data = np.load(task["data"], mmap_mode="r")
    n, added = len(data), np.load(task["added"])
    queries = np.load(task["queries"])[: task["n_queries"]]
    root = Path(task["root"])
    notices: list[str] = []
    reporter = SilentReporter()
    reporter.notice = notices.append  # type: ignore[method-assign]  (compactions, retraining)
    lib = Library.open(root, reporter=reporter)
    with lib.session() as session, session.begin():
        model, _ = store.model_row(
            session, "bench", "x", "none:seed=0", preprocessing="-", dim=task["dim"]
        )
        store.set_active_model(session, model)
    result: dict[str, Any] = {"n": n, "n_queries": len(queries)}

    # Setup: N images and vectors in one transaction, no change-log rows (the build covers them).
    started = time.perf_counter()
    with lib.session() as session, session.begin():
        for start in range(0, n, INSERT_BATCH):
            store.bulk_load(
                session, model.id, start + 1, np.asarray(data[start : start + INSERT_BATCH])
            )
    result["insert_s"] = time.perf_counter() - started
    result["db_bytes"] = sum(p.stat().st_size for p in root.glob("imgvec.db*"))
    index = lib.index()
    with lib.writing():
        before, sampler = common.rss("RssAnon"), common.RssSampler(0.05, "RssAnon")
        sampler.start()
        started = time.perf_counter()
        index.build()
        result["build_s"] = time.perf_counter() - started
        sampler.stop()
        peak = max(value for _, value in sampler.samples)
        result["build_anon"] = {"before": before, "peak": peak}
    base = common.active_version(index)
    result["base"] = {"kind": base.kind, "params": base.params, "recall": base.recall}
    result["base"]["file_bytes"] = base.segments[0]["size_bytes"]
    lookup = lib.vector_lookup(model)

    def searching(version: Any) -> Callable[[np.ndarray], np.ndarray]:
        return lambda query: index.search(version, query, K, lookup)[1]

    timed, found = common.thread_latencies(
        searching(index.active()[0]), queries, ONE_THREAD_QUERIES
    )
    truth = recall.exact_top_k(data, queries, K)[1] + 1  # image ids are rows + 1
    result["query_base"] = {"recall": recall.recall_at_k(truth, found, K), **timed}

    def change(write: Callable[[Any], None]) -> dict[str, Any]:
        """``write`` in one transaction, then ``update()``; each timed, and what happened."""
        before = base_file(root, index)
        with lib.writing():
            started = time.perf_counter()
            with lib.session() as session, session.begin():
                write(session)
            written = time.perf_counter()
            rule = rule_inputs(lib, index, model)
            version = index.update()
            done = time.perf_counter()
        timed = {"db_s": written - started, "update_s": done - written, "total_s": done - started}
        return {
            **timed,
            "operation": version.operation,
            "rule": rule,
            "base_same": before == base_file(root, index),
        }

    # (a) 1,000 new images: bulk-loaded, then store.put_vector (which logs each change).
    added_ids = np.arange(n + 1, n + 1 + CHANGES)

    def add(session: Any) -> None:
        store.bulk_load(session, model.id, n + 1, added)
        for image_id, vector in zip(added_ids, added, strict=True):
            store.put_vector(session, int(image_id), model.id, store.vector_to_bytes(vector))

    result["add"] = change(add)
    # (b) 1,000 removals of images that were in the base.
    removed = np.sort(np.random.default_rng([SEED, 5]).choice(n, CHANGES, replace=False) + 1)
    result["remove"] = change(lambda session: store.delete_images(session, removed.tolist()))

    # Queries on the version after both changes (base + delta + tombstones, unless compacted);
    # the truth over the live vectors: the base's best K + CHANGES rows without the removed ones.
    info = common.active_version(index)
    base_scores, base_rows = recall.exact_top_k(data, queries, K + CHANGES)
    live = ~np.isin(base_rows + 1, removed)
    base_scores = np.stack([s[keep][:K] for s, keep in zip(base_scores, live, strict=True)])
    base_ids = np.stack([r[keep][:K] + 1 for r, keep in zip(base_rows, live, strict=True)])
    new_scores, new_rows = recall.exact_top_k(added, queries, K)
    scores = np.hstack([base_scores, new_scores])
    ids = np.hstack([base_ids, added_ids[new_rows]])
    truth = np.take_along_axis(ids, np.argsort(-scores, axis=1, kind="stable")[:, :K], axis=1)
    timed, found = common.thread_latencies(
        searching(index.active()[0]), queries, ONE_THREAD_QUERIES
    )
    with lib.session() as session:
        floor = min(s["created_seq"] for s in info.segments)
        filtered = len(store.changed_since(session, model.id, floor))
    timed.update(segments=len(info.segments), roles=[s["role"] for s in info.segments])
    timed.update(changed_ids=filtered, removed_returned=int(np.isin(found, removed).sum()))
    result["query_changed"] = {**timed, "recall": recall.recall_at_k(truth, found, K)}

    before = base_file(root, index)
    with lib.writing():
        started = time.perf_counter()
        version = index.compact()
        compact = {"s": time.perf_counter() - started, "operation": version.operation}
        compact["base_rewritten"] = base_file(root, index) != before
        compact["file_bytes"] = common.active_version(index).segments[0]["size_bytes"]
        result["compact"] = compact
    result.update(notices=notices, peak_rss=common.peak_rss())
    lib.close()
    return result


def base_file(root: Path, index: Any) -> tuple[str, int]:
    path = common.active_version(index).segments[0]["path"]
    return path, (root / path).stat().st_mtime_ns


def rule_inputs(lib: Any, index: Any, model: Any) -> dict[str, Any]:
    """What the compaction rule (``rules.should_compact``) weighs after this update."""
    from imgvec.storage import store

    info = common.active_version(index)
    base, deltas = info.segments[0], info.segments[1:]
    with lib.session() as session:
        pending = store.changed_since(session, model.id, info.change_seq)
        new_vectors = len(store.vectors_of(session, model.id, model.dim, pending)[0])
        dead = len(store.changed_since(session, model.id, base["created_seq"]))
    segments = len(deltas) + (1 if new_vectors else 0)
    threshold = max(rules.COMPACT_MIN_CHANGES, rules.COMPACT_FRACTION * base["n_vectors"])
    result = {"dead": dead, "threshold": threshold, "delta_segments": segments}
    result["delta_vectors"] = sum(s["n_vectors"] for s in deltas) + new_vectors
    return {**result, "compact": rules.should_compact(base["n_vectors"], dead, segments)}


WORKERS = {"build": worker_build, "search": worker_search, "library": worker_library}


# --- the run -------------------------------------------------------------------------------------


def measure_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-index-{n}-", dir=args.tmp) as temporary:
        tmp = Path(temporary)
        files = {name: str(tmp / f"{name}.npy") for name in ("data", "queries", "added", "truth")}
        started = time.perf_counter()
        data = write_sample(Path(files["data"]), n, args.dim, LIBRARY_STREAM)
        n_queries = args.queries or (1000 if n <= 20_000 else 500 if n <= 200_000 else 300)
        queries = write_sample(None, n_queries, args.dim, QUERY_STREAM)
        np.save(files["queries"], queries)
        np.save(files["added"], write_sample(None, CHANGES, args.dim, ADDED_STREAM))
        generate_s = time.perf_counter() - started
        started = time.perf_counter()
        np.save(files["truth"], recall.exact_top_k(data, queries, K)[1])
        truth_s = time.perf_counter() - started
        del data
        common.log(f"N={n}: data {generate_s:.1f} s, exact neighbours {truth_s:.1f} s")
        kinds = []
        for kind in args.kinds:
            meter, index = common.CpuMeter(), str(tmp / f"{kind}.faiss")
            task = {**files, "kind": "build", "index": index, "index_kind": kind}
            built = common.run_child(MODULE, task)
            few = min(n_queries, max(100, FLAT_SCAN_BUDGET // n)) if kind == "flat" else n_queries
            task.update(kind="search", params=built["params"], n_queries=few)
            searched = common.run_child(MODULE, task)
            Path(index).unlink()
            kinds.append({"kind": kind, **built, **searched, "other_cores": meter.other_cores()})
            common.log(
                f"N={n} {kind}: p50 {searched['p50_ms']:.2f} ms, recall {searched['recall']:.3f}"
            )
        library = None
        if n <= args.library_max:
            meter = common.CpuMeter()
            task = {**files, "kind": "library", "dim": args.dim, "root": str(tmp / "library")}
            library = common.run_child(MODULE, {**task, "n_queries": min(n_queries, 500)})
            library["other_cores"] = meter.other_cores()
            common.log(f"N={n} library: add update {library['add']['update_s']:.2f} s")
    result = {"n": n, "n_queries": n_queries, "generate_s": generate_s, "truth_s": truth_s}
    return {**result, "kinds": kinds, "library": library}


# --- the tables ----------------------------------------------------------------------------------


def _n(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def _build_memory(lib: dict[str, Any]) -> str:
    """Peak allocated memory (RssAnon, sampled every 50 ms) during ``build()``, and its growth
    over the memory before it; '-' for runs recorded before it was measured."""
    if "build_anon" not in lib:
        return "-"
    anon = lib["build_anon"]
    return f"{anon['peak'] / GIB:.2f} (+{(anon['peak'] - anon['before']) / GIB:.2f})"


def _recall(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def tables(sizes: Sequence[dict[str, Any]]) -> dict[str, str]:
    kinds = [(_n(size["n"]), row) for size in sizes for row in size["kinds"]]
    libs = [size["library"] for size in sizes if size["library"] is not None]
    result = {
        "build": common.table(
            "N | kind | nlist / nprobe | trained on | build s | save s | peak RSS GB (over loaded "
            "vectors) | file MB | recall@10 at build | other cores busy",
            (
                f"{n} | {row['kind']} | {common.index_params(row['params'])} "
                f"| {common.num(row['train_size'] or None, ',', none='-')} "
                f"| {secs(row['build_s'])} | {secs(row['save_s'])} "
                f"| {row['peak_rss'] / GIB:.2f} (+{row['extra_rss'] / GIB:.2f}) "
                f"| {row['file_bytes'] / MIB:.1f} | {_recall(row['build_recall'])} "
                f"| {common.num(row['other_cores'], 2)}"
                for n, row in kinds
            ),
            "lllr",
        ),
        "search": common.table(
            "N | kind | open mmap ms | open whole ms | 1st query ms | p50 ms | p99 ms | recall@10 "
            "| queries | p50 ms, 1 thread | p99 ms, 1 thread | queries, 1 thread",
            (
                f"{n} | {row['kind']} | {millis(row['open_mmap_s'])} "
                f"| {millis(row['open_full_s'])} | {millis(row['first_query_s'])} "
                f"| {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['recall']:.3f} "
                f"| {row['n_queries']} | {row['p50_1t_ms']:.2f} | {row['p99_1t_ms']:.2f} "
                f"| {row['queries_1t']}"
                for n, row in kinds
            ),
            "llr",
        ),
    }
    if not libs:
        return result
    result["setup"] = common.table(
        "N | bulk insert s | database GB | `build()` s | base kind | nlist / nprobe | base MB "
        "| recall@10 at build | `build()` peak memory GB (over before) "
        "| worker peak RSS GB (with its mapped input)",
        (
            f"{_n(lib['n'])} | {secs(lib['insert_s'])} | {lib['db_bytes'] / GIB:.2f} "
            f"| {secs(lib['build_s'])} | {lib['base']['kind']} "
            f"| {common.index_params(lib['base']['params'])} "
            f"| {lib['base']['file_bytes'] / MIB:.1f} | {_recall(lib['base']['recall'])} "
            f"| {_build_memory(lib)} | {lib['peak_rss'] / GIB:.2f}"
            for lib in libs
        ),
        "lrrrllrrr",
    )
    rows = []
    for lib in libs:
        for key in ("add", "remove"):
            change, rule = lib[key], lib[key]["rule"]
            rows.append(
                f"{_n(lib['n'])} | {key} {CHANGES:,} | {secs(change['db_s'])} "
                f"| {secs(change['update_s'])} | {secs(change['total_s'])} "
                f"| {change['operation']} ({rule['dead']:,} changed ids vs > "
                f"{rule['threshold']:,.0f}) | {'yes' if change['base_same'] else '**no**'}"
            )
        compact = lib["compact"]
        rows.append(
            f"{_n(lib['n'])} | `compact()` | - | {secs(compact['s'])} | {secs(compact['s'])} "
            f"| {compact['operation']} ({compact['file_bytes'] / MIB:.1f} MB base) "
            f"| {'no (rewritten, as compaction must)' if compact['base_rewritten'] else 'yes'}"
        )
    result["changes"] = common.table(
        "N | change | DB writes s | `update()` s | total s | version made (compaction rule: "
        "changes vs threshold) | base file untouched",
        rows,
        "llrrrll",
    )
    rows = []
    for lib in libs:
        base, changed = lib["query_base"], lib["query_changed"]
        for label, query in (("base only (after `build()`)", base), ("", changed)):
            label = label or f"after +{CHANGES:,} / -{CHANGES:,}: " + " + ".join(changed["roles"])
            rows.append(
                f"{_n(lib['n'])} | {label} | {query.get('segments', 1)} "
                f"| {query.get('changed_ids', 0):,} | {query['p50_ms']:.2f} "
                f"| {query['p99_ms']:.2f} | {query['recall']:.3f} "
                f"| {query.get('removed_returned', '-')} | {lib['n_queries']} "
                f"| {query['p50_1t_ms']:.2f} | {query['p99_1t_ms']:.2f}"
            )
    result["queries"] = common.table(
        "N | version searched | segments | ids filtered as changed | p50 ms | p99 ms | recall@10 "
        "| removed ids returned | queries | p50 ms, 1 thread | p99 ms, 1 thread",
        rows,
        "llr",
    )
    if len(libs) >= 2:
        small, large = libs[0], libs[-1]
        ratios = {
            "add 1,000: `update()` s": ("add", "update_s"),
            "add 1,000: DB writes + `update()` s": ("add", "total_s"),
            "remove 1,000: `update()` s": ("remove", "update_s"),
            "remove 1,000: DB writes + `update()` s": ("remove", "total_s"),
            "query p50 ms, base only": ("query_base", "p50_ms"),
            "query p50 ms, base + delta + tombstones": ("query_changed", "p50_ms"),
            "query p50 ms on 1 thread, base only": ("query_base", "p50_1t_ms"),
            "query p50 ms on 1 thread, base + delta + tombstones": ("query_changed", "p50_1t_ms"),
        }
        a, b = _n(small["n"]), _n(large["n"])
        result["ratios"] = common.table(
            f"measured in this run | N={a} | N={b} | ratio {b} / {a}",
            (
                f"{label} | {small[p][k]:.3f} | {large[p][k]:.3f} | {large[p][k] / small[p][k]:.2f}"
                for label, (p, k) in ratios.items()
            ),
            "lr",
        )
    return result


# --- main ----------------------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    sizes = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    if not sizes or sizes[0] < rules.MIN_POINTS_PER_LIST * 16:
        raise argparse.ArgumentTypeError("sizes must be at least 624 (IVF needs training points)")
    return sizes


def _kinds(text: str) -> list[str]:
    if text.strip() == "none":  # the library part only
        return []
    kinds = [part.strip() for part in text.split(",") if part.strip()]
    if not kinds or set(kinds) - set(faiss_ops.KINDS):
        raise argparse.ArgumentTypeError(f"kinds are among {', '.join(faiss_ops.KINDS)}")
    return kinds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--sizes", type=_sizes, default=list(DEFAULT_SIZES), help="library sizes")
    parser.add_argument("--dim", type=int, default=768, help="vector dimension")
    parser.add_argument("--queries", type=int, help="per measurement (default: 1000/500/300)")
    parser.add_argument(
        "--kinds",
        type=_kinds,
        default=list(faiss_ops.KINDS),
        help="index kinds built alone (comma-separated), or none",
    )
    parser.add_argument("--library-max", type=int, help="library part only up to this size")
    parser.add_argument("--tmp", type=Path, help="folder for temporary data (default: system)")
    parser.add_argument("--from-raw", type=Path, help="tables from saved measurements (no run)")
    common.report_args(parser)
    parser.add_argument("--raw", type=Path, dest="json", help="the same as --json")
    args = parser.parse_args(argv)
    if args.child:
        return common.child_main(WORKERS, args.child)
    if args.from_raw:
        raw = json.loads(args.from_raw.read_text())
    else:
        started, meter = time.perf_counter(), common.CpuMeter()
        args.library_max = max(args.sizes) if args.library_max is None else args.library_max
        sizes = [measure_size(n, args) for n in args.sizes]
        import faiss

        command, threads = common.command_line(MODULE, argv), faiss.omp_get_max_threads()
        run = common.run_line(command, started, meter, faiss_threads=threads)
        raw = {"run": run, "dim": args.dim, "generator": generator_facts(args.dim), "sizes": sizes}
    common.publish("bench_index", {"run": raw["run"], **tables(raw["sizes"])}, raw, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
