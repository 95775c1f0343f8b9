"""Benchmark for issue 17: a library's indexes in FAISS files against a Milvus collection.

    .venv/bin/python -m benchmarks.bench_vectors --sizes 10000,100000 --out BENCHMARKS.md

For each N and each store, in a fresh process: a library of N synthetic clustered vectors
(``bench_index.write_sample``, ``--dim``-d, bulk-loaded with ``store.bulk_load``), its index built
(``IndexStore.build`` or ``MilvusIndex.build``, through ``lib.index()``), single queries (k=10)
through ``lib.index().search`` on the active version (p50/p99 after warm-up; recall@10 against
``recall.exact_top_k``), then 1,000 additions and 1,000 removals, each a database transaction
(with change-log rows) followed by ``update()``, and the queries again on the changed library.
*first query*: in another fresh process, opening the library and its index and answering one
query, imports included. Stores: ``faiss`` (versioned files, the default), ``milvus-lite``
(Milvus Lite inside the process), ``milvus-server`` (``milvus-lite server`` on localhost, which
this script starts for the run: the gRPC path a Milvus cluster takes). Milvus's index is its own
choice (``AUTOINDEX``, HNSW in Milvus Lite with FAISS installed); FAISS's the library's rules.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from benchmarks.bench_index import (
    ADDED_STREAM,
    CHANGES,
    INSERT_BATCH,
    LIBRARY_STREAM,
    QUERY_STREAM,
    SEED,
    write_sample,
)
from imgvec.index import recall

MODULE = "benchmarks.bench_vectors"
K = 10
STORES = ("faiss", "milvus-lite", "milvus-server")


@contextmanager
def milvus_server(data: Path) -> Iterator[str]:
    """``milvus-lite server`` on a free localhost port: its ``milvus://`` URL once it answers."""
    from pymilvus import MilvusClient

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data)]
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                MilvusClient(uri=f"http://127.0.0.1:{port}", timeout=2).close()
                break
            except Exception:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("milvus-lite server did not start") from None
        yield f"milvus://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=60)


def _open(task: dict[str, Any]) -> Any:
    from imgvec.api import Library
    from imgvec.reporting import SilentReporter

    return Library.open(Path(task["root"]), reporter=SilentReporter())


def worker_library(task: dict[str, Any]) -> dict[str, Any]:
    """Make the library, build, query, change, query again."""
    from imgvec.storage import store

    data = np.load(task["data"], mmap_mode="r")
    queries, added = np.load(task["queries"]), np.load(task["added"])
    n = len(data)
    lib = _open(task)
    if task["url"]:
        lib.use_vectors(task["url"])
    with lib.session() as session, session.begin():
        model, _ = store.model_row(
            session, "bench", "x", "none:seed=0", preprocessing="-", dim=task["dim"]
        )
        store.set_active_model(session, model)
    with lib.session() as session, session.begin():
        for start in range(0, n, INSERT_BATCH):
            chunk = np.asarray(data[start : start + INSERT_BATCH])
            store.bulk_load(session, model.id, start + 1, chunk)
    index = lib.index()
    with lib.writing():
        started = time.perf_counter()
        version = index.build()
        build_s = time.perf_counter() - started
    result: dict[str, Any] = {"n": n, "build_s": build_s, "kind": version.kind}
    result["built_recall"] = version.recall
    lookup = lib.vector_lookup(model)

    def searching() -> Any:
        version = index.active()[0]
        return lambda query: index.search(version, query, K, lookup)[1]

    timed, found = common.latencies(searching(), queries)
    truth = recall.exact_top_k(np.asarray(data), queries, K)[1] + 1  # image ids are rows + 1
    result["base"] = {"recall": recall.recall_at_k(truth, found, K), **timed}

    added_ids = np.arange(n + 1, n + 1 + CHANGES)
    removed = np.sort(np.random.default_rng([SEED, 5]).choice(n, CHANGES, replace=False) + 1)

    def change(write: Any) -> dict[str, float]:
        with lib.writing():
            started = time.perf_counter()
            with lib.session() as session, session.begin():
                write(session)
            written = time.perf_counter()
            index.update()
            return {"db_s": written - started, "update_s": time.perf_counter() - written}

    def add(session: Any) -> None:
        store.bulk_load(session, model.id, n + 1, added)
        for image_id, vector in zip(added_ids, added, strict=True):
            store.put_vector(session, int(image_id), model.id, store.vector_to_bytes(vector))

    result["add"] = change(add)
    result["remove"] = change(lambda session: store.delete_images(session, removed.tolist()))
    live = np.ones(n + CHANGES, bool)
    live[removed - 1] = False
    everything = np.vstack([np.asarray(data), added])
    rows = np.flatnonzero(live)
    truth = rows[recall.exact_top_k(everything[rows], queries, K)[1]] + 1
    timed, found = common.latencies(searching(), queries)
    result["changed"] = {"recall": recall.recall_at_k(truth, found, K), **timed}
    lib.close()
    return result


def worker_first_query(task: dict[str, Any]) -> dict[str, Any]:
    """Open the library and its index, answer one query: seconds, imports included."""
    started = time.perf_counter()
    lib = _open(task)
    query = np.load(task["queries"])[:1]
    row = lib.active_model_row()
    index = lib.index(row)
    version = index.active()[0]
    index.load(version)
    index.search(version, query, K, lib.vector_lookup(row))
    return {"first_query_s": time.perf_counter() - started}


def measure(n: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-vectors-{n}-", dir=args.tmp) as temporary:
        tmp = Path(temporary)
        files = {name: str(tmp / f"{name}.npy") for name in ("data", "queries", "added")}
        write_sample(Path(files["data"]), n, args.dim, LIBRARY_STREAM)
        np.save(files["queries"], write_sample(None, args.queries, args.dim, QUERY_STREAM))
        np.save(files["added"], write_sample(None, CHANGES, args.dim, ADDED_STREAM))
        stores = []
        for name in args.stores:
            with _store_url(name, tmp) as url:
                task = {**files, "dim": args.dim, "root": str(tmp / name), "url": url}
                meter = common.CpuMeter()
                made = common.run_child(MODULE, {**task, "kind": "library"})
                first = common.run_child(MODULE, {**task, "kind": "first_query"})
                stores.append({"store": name, **made, **first, "other_cores": meter.other_cores()})
                common.log(
                    f"N={n} {name}: build {made['build_s']:.1f} s, p50 "
                    f"{made['base']['p50_ms']:.2f} ms, recall {made['base']['recall']:.3f}"
                )
    return {"n": n, "dim": args.dim, "stores": stores}


@contextmanager
def _store_url(name: str, tmp: Path) -> Iterator[str | None]:
    if name == "faiss":
        yield None
    elif name == "milvus-lite":
        yield f"milvus-lite://{tmp / 'lite.db'}"
    else:
        with milvus_server(tmp / "server") as url:
            yield url


def tables(sizes: list[dict[str, Any]], run_line: str) -> dict[str, str]:
    rows = []
    for size in sizes:
        for s in size["stores"]:
            rows.append(
                f"{size['n']:,} x {size['dim']} | `{s['store']}` | {s['kind']} "
                f"| {common.secs(s['build_s'])} | {common.secs(s['first_query_s'])} "
                f"| {s['base']['p50_ms']:.2f} / {s['base']['p99_ms']:.2f} "
                f"| {s['base']['recall']:.3f} | {common.secs(s['add']['update_s'])} "
                f"| {common.secs(s['remove']['update_s'])} "
                f"| {s['changed']['p50_ms']:.2f} | {s['changed']['recall']:.3f} "
                f"| {common.num(s['other_cores'], 2)}"
            )
    header = (
        "N | store | index | build s | first query s (fresh process) | query p50 / p99 ms "
        "| recall@10 | `update()` after 1,000 added, s | after 1,000 removed, s "
        "| p50 ms after the changes | recall@10 after | other cores busy"
    )
    return {"run": run_line, "stores": common.table(header, rows, "lllr")}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--sizes", default="10000,100000", help="library sizes, comma-separated")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200, help="single queries timed")
    parser.add_argument("--stores", default=",".join(STORES), help=f"of {', '.join(STORES)}")
    parser.add_argument("--tmp", type=Path, help="folder for temporary data (default: system)")
    common.report_args(parser)
    args = parser.parse_args(argv)
    if args.child:
        children = {"library": worker_library, "first_query": worker_first_query}
        return common.child_main(children, args.child)
    args.stores = args.stores.split(",")
    started, meter = time.perf_counter(), common.CpuMeter()
    sizes = [measure(int(n), args) for n in args.sizes.split(",")]
    line = common.run_line(common.command_line(MODULE, argv), started, meter)
    common.publish("bench_vectors", tables(sizes, line), sizes, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
