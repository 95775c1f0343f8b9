"""Benchmark of imgvec at scale: "ingest at the speed of the model, query at the speed of the
index", in three parts (``--parts noop,query,memory``), each against a target of the issue.

    .venv/bin/python -m benchmarks.bench_scale --tmp /work/bench-tmp --out BENCHMARKS.md

1. noop: ``imgvec add`` of an unchanged library of ``--noop-files`` generated images, each run a
   fresh process; then ``Library.add`` in a fresh child, and whether torch or FAISS got imported;
2. query: ``imgvec query IMAGE --timings`` from a cold start per model (random weights), and all
   the photos in one call;
3. memory: in a fresh child, ``Library.add`` of ``--memory-files`` tiny generated images with a
   cheap 768-d model (``tests.fake_model``'s colour grid), RSS as the ingest advances and during
   the index build; then single-query latency and recall@10 against ``recall.exact_top_k``, before
   and after ``--extra-files`` more images add a delta segment. Past ``--rss-limit-mb`` the ingest
   stops (target not met) and the rest is added in portions, so search is still measured.

Only the standard library is imported at the top: the noop child checks which heavy modules
imgvec itself imports, and times ``import imgvec.api`` from a clean start.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from statistics import median
from typing import Any

from benchmarks import common
from benchmarks.common import MIB, millis, secs

MODULE = "benchmarks.bench_scale"
IMGVEC = Path(sys.executable).with_name("imgvec")
"""The console script of the interpreter running this benchmark (the venv's)."""
PARTS = ("noop", "query", "memory")
K = 10
HEAVY_MODULES = ("torch", "torchvision", "faiss")
IMPORT_STEPS = ("imgvec.cli.app", "imgvec.embed.runtime", "imgvec.index.segments")
"""What a cold ``imgvec query`` imports outside its ``--timings`` parts, in its order: the CLI
(Typer, Rich, SQLAlchemy, NumPy, Pillow), the model code (torch, torchvision), the index (FAISS)."""
TIMED_PARTS = ("imports", "open", "import_torch", "model_load", "embed", "index_load", "search")
"""``query --timings``'s parts: seconds for the first four, milliseconds for the rest."""
STARTUP_RUNS = 3
GRID_MODEL, GRID_CELLS = "grid768", 16
"""16 x 16 cells x 3 colours = 768 dimensions, like vit_b_16."""
NOOP_MODEL = "mobilenet_v2"
NOOP_SIZE, NOOP_PER_FOLDER = 32, 100
MEMORY_SIZE, MEMORY_PER_FOLDER = 24, 1000
SAMPLE_EVERY_S = 0.2
CHECKPOINTS = (0.10, 0.25, 0.50, 0.75, 1.00)
FALLBACK_SHARE = 0.8
"""After the safety stop, the rest is added in calls of at most this share of what fitted."""
# Each generated picture is one of CLUSTERS seeded colour layouts (GRID x GRID blocks) with its
# own block jitter and pixel noise: pictures form clusters like photos do, no two files alike.
SEED, CLUSTERS, GRID, BLOCK_JITTER, PIXEL_NOISE = 20240611, 2048, 6, 12.0, 6.0
NOOP_STREAM, LIBRARY_STREAM, EXTRA_STREAM, QUERY_STREAM = 1, 2, 3, 4


def files_limit(files: int) -> float:
    """A generous time limit for a subprocess handling ``files`` files."""
    return 600.0 + 0.1 * files


# --- generated images ----------------------------------------------------------------------------


@functools.cache
def _layouts() -> Any:
    import numpy as np

    return np.random.default_rng(SEED).uniform(0, 255, (CLUSTERS, GRID, GRID, 3))


def picture_batch(stream: int, start: int, count: int, size: int) -> Any:
    """``count`` distinct RGB pictures (uint8, size x size), deterministic per stream and start."""
    import numpy as np

    rng = np.random.default_rng([SEED, stream, start])
    blocks = _layouts()[rng.integers(0, CLUSTERS, count)]
    blocks = blocks + rng.normal(0, BLOCK_JITTER, (count, GRID, GRID, 3))
    scale = -(-size // GRID)
    pixels = blocks.repeat(scale, axis=1).repeat(scale, axis=2)[:, :size, :size]
    pixels += rng.normal(0, PIXEL_NOISE, pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_images(folder: Path, count: int, size: int, per_folder: int, stream: int) -> float:
    """``count`` PNGs in subfolders of ``per_folder`` files; the seconds it took."""
    from PIL import Image

    started = time.perf_counter()
    for start in range(0, count, 1000):
        for offset, picture in enumerate(
            picture_batch(stream, start, min(1000, count - start), size)
        ):
            number = start + offset
            subfolder = folder / f"{number // per_folder:04d}"
            subfolder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(picture).save(subfolder / f"{number:06d}.png", compress_level=1)
    return time.perf_counter() - started


# --- processes -----------------------------------------------------------------------------------


def run_cli(arguments: Sequence[Any], timeout: float = 600.0) -> tuple[float, str, str]:
    """``imgvec ARGUMENTS`` in a fresh process: wall seconds (start to exit), stdout, stderr."""
    wall, done = common.timed_run([str(IMGVEC), *map(str, arguments)], timeout)
    return wall, done.stdout, done.stderr


def child_run(task: dict[str, Any]) -> dict[str, Any]:
    """Run ``imgvec`` as this process's only child: wall, stdout, and its peak RSS."""
    wall, stdout, _ = run_cli(task["arguments"], task["timeout"])
    return {"wall": wall, "stdout": stdout, "max_rss": common.peak_rss(children=True)}


def child_noop(task: dict[str, Any]) -> dict[str, Any]:
    """``Library.add`` of an unchanged folder, in-process: time, and what it imported."""
    started = time.perf_counter()
    from imgvec.api import Library

    import_s = time.perf_counter() - started
    started = time.perf_counter()
    with Library.open(task["library"], create=False) as lib:
        added = lib.add([task["folder"]])
        stages = dict(lib.stopwatch.seconds)
    result = {"import_s": import_s, "add_s": time.perf_counter() - started, "stages": stages}
    result.update(added=added.added, unchanged=added.unchanged)
    return {**result, "modules": {name: name in sys.modules for name in HEAVY_MODULES}}


def child_imports(task: dict[str, Any]) -> dict[str, float]:
    seconds = {}
    for name in IMPORT_STEPS:
        started = time.perf_counter()
        importlib.import_module(name)
        seconds[name] = time.perf_counter() - started
    return seconds


def child_cli(task: dict[str, Any]) -> dict[str, Any]:
    """``imgvec.cli.app.main`` in-process (as the console script runs it); when it returned."""
    from imgvec.cli.app import main

    sys.argv = ["imgvec", *task["arguments"]]
    try:
        main()
    except SystemExit as done:
        if done.code:
            raise
    return {"returned_at": time.perf_counter()}


# --- part 1: nothing to do -----------------------------------------------------------------------


def run_noop(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    n, folder, library = args.noop_files, tmp / "noop-images", tmp / "noop-library"
    meter = common.CpuMeter()
    generate_s = write_images(folder, n, NOOP_SIZE, NOOP_PER_FOLDER, NOOP_STREAM)
    common.log(f"noop: {n} images written; populating a library ({NOOP_MODEL}, random weights)")
    options = ["--model", NOOP_MODEL, "--weights", "none", "--library", library, "-q", "--json"]
    task = {"kind": "run", "arguments": ["add", str(folder), *map(str, options)]}
    populated = common.run_child(MODULE, {**task, "timeout": files_limit(n)})
    first = json.loads(populated["stdout"])
    if first["added"] != n or first["failed"]:
        raise SystemExit(f"populating added {first['added']} of {n} files: {first}")
    runs = []
    for _ in range(args.repeats):
        wall, stdout, _ = run_cli(["add", folder, "--library", library, "--json"], files_limit(n))
        again = json.loads(stdout)
        if again["unchanged"] != n or again["added"] or again["updated"] or again["failed"]:
            raise SystemExit(f"re-running add changed something: {again}")
        runs.append(wall)
    task = {"kind": "noop", "library": str(library), "folder": str(folder)}
    child = common.run_child(MODULE, task, timeout=files_limit(n))
    if child["unchanged"] != n or child["added"]:
        raise SystemExit(f"the in-process add changed something: {child}")
    common.log(f"noop: re-runs {runs}, in-process add {child['add_s']:.2f} s")
    result = {"files": n, "generate_s": generate_s, "runs": runs, "child": child}
    result.update(populate_s=populated["wall"], populate_rss=populated["max_rss"])
    return {**result, "other_cores": meter.other_cores()}


# --- part 2: query latency -----------------------------------------------------------------------


def run_query(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    photos = common.photos_in(args.photos)
    copies = tmp / "query-copies"  # outside every library: queries are embedded, not looked up
    copies.mkdir()
    queries = [Path(shutil.copyfile(photo, copies / photo.name)) for photo in photos]
    meter = common.CpuMeter()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    rows = [query_model(model, photos, queries, args, tmp) for model in models]
    starts, imports = [], []
    for _ in range(min(args.repeats, STARTUP_RUNS)):
        starts.append(common.timed_run([sys.executable, "-c", "pass"], 600)[0])
        imports.append(common.run_child(MODULE, {"kind": "imports"}))
    startup = {name: median(run[name] for run in imports) for name in IMPORT_STEPS}
    startup = {"interpreter": median(starts), **startup}
    result = {"photos": len(photos), "models": rows, "startup": startup}
    return {**result, "other_cores": meter.other_cores()}


def parse_timings(stderr: str) -> dict[str, float]:
    """``timings (s): model_load=0.61 embed=0.04 ...`` (from ``imgvec query --timings``)."""
    for line in stderr.splitlines():
        if line.startswith("timings (s):"):
            pairs = re.findall(r"(\w+)=([0-9.eE+-]+)", line.split(":", 1)[1])
            return {key: float(value) for key, value in pairs}
    raise SystemExit(f"no timings line in imgvec query's stderr:\n{stderr[-2000:]}")


def check_answers(stdout: str, queries: int, results: int) -> None:
    """Every query embedded (not found in the library), answered, with ``results`` hits."""
    answers = json.loads(stdout)
    bad = [
        a
        for a in answers
        if a["error"] is not None or a["vector"] != "embedded" or len(a["results"]) != results
    ]
    if len(answers) != queries or bad:
        raise SystemExit(f"unexpected query answers ({len(answers)} of {queries}): {bad[:3]}")


def query_model(
    model: str, photos: Sequence[Path], queries: Sequence[Path], args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    library = tmp / f"query-library-{model}"
    adding = ["add", args.photos, "--model", model, "--weights", "none", "--library", library]
    build_s, _, _ = run_cli([*adding, "-q"], files_limit(len(photos)))
    expected = min(K, len(photos))
    options = ["--library", library, "-k", str(K), "--json", "--timings"]
    cold = []
    for repeat in range(args.repeats):
        wall, stdout, stderr = run_cli(["query", queries[repeat % len(queries)], *options])
        check_answers(stdout, 1, expected)
        cold.append({"wall": wall, "parts": parse_timings(stderr)})
    wall, stdout, stderr = run_cli(["query", *queries, *options], files_limit(len(queries)))
    check_answers(stdout, len(queries), expected)
    batch = {"n": len(queries), "wall": wall, "parts": parse_timings(stderr)}
    exits = []  # from the moment imgvec's main returns to the end of its process
    for run in range(min(args.repeats, STARTUP_RUNS)):
        arguments = [str(a) for a in ["query", queries[run % len(queries)], *options]]
        done = common.run_child(MODULE, {"kind": "cli", "arguments": arguments}, quiet=True)
        exits.append(time.perf_counter() - done["returned_at"])  # CLOCK_MONOTONIC in both
    common.log(f"query {model}: cold {[c['wall'] for c in cold]}, batched {wall:.2f} s")
    result = {"model": model, "build_s": build_s, "cold": cold, "batch": batch}
    return {**result, "exit_s": median(exits)}


# --- part 3: memory while adding, then search ----------------------------------------------------


def run_memory(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    n, extra_n = args.memory_files, args.extra_files
    images, extra = tmp / "memory-images", tmp / "memory-extra"
    generate_s = write_images(images, n, MEMORY_SIZE, MEMORY_PER_FOLDER, LIBRARY_STREAM)
    generate_s += write_images(extra, extra_n, MEMORY_SIZE, MEMORY_PER_FOLDER, EXTRA_STREAM)
    common.log(f"memory: {n} + {extra_n} images written in {generate_s:.0f} s; adding them")
    meter = common.CpuMeter()
    task = {"kind": "memory", "library": str(tmp / "memory-library"), "images": str(images)}
    task.update(extra=str(extra), queries=args.queries, limit_mb=args.rss_limit_mb)
    child = common.run_child(MODULE, task, timeout=files_limit(n + extra_n))
    child.update(files=n, extra_files=extra_n, generate_s=generate_s)
    return {**child, "other_cores": meter.other_cores()}


class MemoryLimitReached(Exception):
    """Raised from the progress callback: the ingest passed the safety limit on RSS."""


def memory_trace(limit: int) -> Any:
    """A Reporter that records RSS after each committed batch, and a sampler thread that also
    sees the index build after the last batch."""
    from imgvec.reporting import SilentReporter

    class MemoryTrace(SilentReporter):
        def __init__(self) -> None:
            self.sampler = common.RssSampler(SAMPLE_EVERY_S)
            self.total = self.done_images = 0
            self.steps: list[tuple[int, int, float]] = []  # (images, RSS, seconds) per batch
            self.notices: list[tuple[float, str]] = []
            self.recording = True

        def notice(self, message: str) -> None:
            self.notices.append((self.sampler.elapsed(), message))

        def progress(self, description: str, total: int) -> Any:
            self.total = total if self.recording else self.total
            return self.advance if self.recording else lambda _n: None

        def advance(self, n: int) -> None:
            self.done_images += n
            self.steps.append((self.done_images, common.rss(), self.sampler.elapsed()))
            if self.steps[-1][1] > limit:
                raise MemoryLimitReached(f"RSS over the limit after {self.done_images} images")

    return MemoryTrace()


def child_memory(task: dict[str, Any]) -> dict[str, Any]:
    """Ingest with RSS traced; then search latency and recall, before and after a delta."""
    import tests.fake_model
    from imgvec.api import Library
    from imgvec.embed import runtime

    dim = tests.fake_model.register_grid_model(GRID_MODEL, GRID_CELLS, "benchmark: 16x16 grid")
    trace = memory_trace(task["limit_mb"] * MIB)
    result: dict[str, Any] = {"dim": dim, "rss_limit": task["limit_mb"] * MIB, "stopped_at": None}
    with Library.open(task["library"], reporter=trace) as lib:
        result["baseline_rss"] = common.rss()
        trace.notices.clear()  # opening the library is not part of the measured add
        trace.sampler.start()
        try:
            lib.add([task["images"]], model=GRID_MODEL, weights="none")
        except MemoryLimitReached as reason:
            common.log(f"memory: safety stop, {reason}")
            result["stopped_at"] = trace.done_images
        trace.sampler.stop()
        trace.recording = False
        loop_s = trace.steps[-1][2] if trace.steps else 0.0
        samples = trace.sampler.samples
        after = [rss for at, rss in samples if at > loop_s]
        result.update(
            add_s=trace.sampler.elapsed(),
            hwm=common.rss("VmHWM"),
            keeps_freed_memory=runtime.keep_freed_memory.cache_info().currsize > 0
            and runtime.keep_freed_memory(),
            notices=list(trace.notices),
            ingest={
                "total": trace.total,
                "steps": trace.steps,
                "loop_s": loop_s,
                "loop_peak": max(
                    [s[1] for s in trace.steps] + [r for a, r in samples if a <= loop_s]
                ),
                "build_peak": max(after) if after else None,
            },
        )
        if result["stopped_at"] is not None:
            result["fallback"] = add_in_portions(lib, Path(task["images"]), result["stopped_at"])
        # Only now, with the ingest measured, may this process hold every vector (ground truth).
        queries = embed_fresh(lib, task["queries"])
        result["search"] = measure_search(lib, queries)
        lib.add([task["extra"]], model=GRID_MODEL, weights="none")
        result["search_delta"] = measure_search(lib, queries)
    return result


def add_in_portions(lib: Any, images: Path, fitted: int) -> dict[str, Any]:
    """After the safety stop: the remaining folders in several ``add`` calls, then one fresh
    index build, so that search is measured on the whole library."""
    started = time.perf_counter()
    portion = max(MEMORY_PER_FOLDER, int(FALLBACK_SHARE * fitted))
    groups: list[list[Path]] = [[]]
    size = 0
    for folder in sorted(p for p in images.iterdir() if p.is_dir()):
        if groups[-1] and size + len(os.listdir(folder)) > portion:
            groups.append([])
            size = 0
        groups[-1].append(folder)
        size += len(os.listdir(folder))
    for group in groups:
        lib.add(group, model=GRID_MODEL, weights="none")
    lib.build_index()
    return {"calls": len(groups), "seconds": time.perf_counter() - started}


def embed_fresh(lib: Any, count: int) -> Any:
    """Vectors of ``count`` new pictures (another stream: none is in the library)."""
    import numpy as np
    from PIL import Image

    pixels = picture_batch(QUERY_STREAM, 0, count, MEMORY_SIZE)
    chunks = [pixels[start : start + 256] for start in range(0, count, 256)]
    return np.concatenate([lib.embedder().embed([Image.fromarray(p) for p in c]) for c in chunks])


def measure_search(lib: Any, queries: Any) -> dict[str, Any]:
    """Single queries through ``IndexStore.search`` (as ``Library.query`` calls it) and through
    ``faiss_ops.search`` on the loaded segments alone; recall@10 against exact search."""
    from imgvec.index import faiss_ops, recall

    model = lib.active_model_row()
    version = lib.current_index_version(model)
    index, lookup = lib.index(model), lib.vector_lookup(model)
    segments = index.load(version)
    meter = common.CpuMeter()
    store, found = common.thread_latencies(
        lambda q: index.search(version, q, K, lookup)[1], queries
    )
    with common.faiss_threads(1):
        bare, _ = common.latencies(lambda q: faiss_ops.search(segments, q, K, lookup)[1], queries)
    ids, vectors = lib.vectors()
    truth = ids[recall.exact_top_k(vectors, queries, K)[1]]
    info = common.active_version(index)
    common.log(f"memory: search p50 {store['p50_ms']:.2f} ms, one thread {store['p50_1t_ms']:.2f}")
    import faiss

    result = {"vectors": info.n_vectors, "kind": info.kind, "params": info.params}
    result.update(segments=len(info.segments), build_recall=info.recall, queries=len(queries))
    result.update(threads=faiss.omp_get_max_threads(), store=store, faiss_one=bare)
    return {
        **result,
        "recall": recall.recall_at_k(truth, found, K),
        "other_cores": meter.other_cores(),
    }


# --- the tables ----------------------------------------------------------------------------------


def _mib(size: float | None) -> str:
    return "—" if size is None else f"{size / MIB:,.0f}"


def noop_tables(noop: dict[str, Any]) -> dict[str, str]:
    child, runs = noop["child"], noop["runs"]
    imported = ", ".join(f"`{name}`" for name, loaded in child["modules"].items() if loaded)
    return {
        "noop": common.table(
            "files | first add (embeds) | first add img/s | first add peak RSS MiB "
            "| re-run median | re-run min | in-process `import imgvec.api` | in-process `add` "
            "| imported afterwards",
            [
                f"{noop['files']:,} | {secs(noop['populate_s'])} s "
                f"| {noop['files'] / noop['populate_s']:.0f} | {_mib(noop['populate_rss'])} "
                f"| {secs(median(runs))} s | {secs(min(runs))} s | {secs(child['import_s'])} s "
                f"| {secs(child['add_s'])} s | {imported or 'none of them'}"
            ],
            "rrrrrrrrl",
        )
    }


def query_tables(query: dict[str, Any]) -> dict[str, str]:
    rows = []
    for row in query["models"]:
        cold, batch = row["cold"], row["batch"]
        parts = {
            key: median(run["parts"][key] for run in cold)
            for key in TIMED_PARTS
            if all(key in run["parts"] for run in cold)
        }
        wall = median(run["wall"] for run in cold)
        rest = median(run["wall"] - sum(run["parts"].values()) for run in cold)
        per_query, embed = batch["wall"] / batch["n"], batch["parts"].get("embed")
        cells = [f"{secs(parts[key])} s" if key in parts else "—" for key in TIMED_PARTS[:5]]
        cells += [f"{millis(parts[key])} ms" if key in parts else "—" for key in TIMED_PARTS[5:]]
        rows.append(
            f"`{row['model']}` | {len(cold)} | {secs(wall)} s | {' | '.join(cells)} "
            f"| {secs(rest)} s | {secs(row['exit_s'])} s | {batch['n']} | {secs(per_query)} s "
            f"| {'—' if embed is None else secs(embed / batch['n']) + ' s'} "
            f"| {wall / per_query:.1f}x"
        )
    startup = query["startup"]
    return {
        "query": common.table(
            "model | cold runs | wall | imports | open | import_torch | model_load "
            "| embed (1 image) | index_load "
            "| search | rest | of which exit | batched queries | batched wall per query "
            "| batched embed per query | cold wall / batched wall per query",
            rows,
            "lr",
        ),
        "startup": common.table(
            "interpreter start | "
            + " | ".join(f"then `import {s}`" for s in IMPORT_STEPS)
            + " | sum",
            [" | ".join(f"{secs(v)} s" for v in [*startup.values(), sum(startup.values())])],
            "r",
        ),
    }


def memory_tables(memory: dict[str, Any]) -> dict[str, str]:
    ingest, per_image = memory["ingest"], memory["dim"] * 4
    steps, total = ingest["steps"], ingest["total"]
    points = []
    for share in CHECKPOINTS:
        step = next((s for s in steps if s[0] >= share * total), None)
        if step is not None:
            points.append((f"{round(100 * share)}%", step))
    if points and steps[-1][0] > points[-1][1][0]:
        points.append(("stop", steps[-1]))  # the safety stop, between two checkpoints
    rows = [
        f"{label} | {images:,} | {_mib(rss)} | {_mib(rss - memory['baseline_rss'])} "
        f"| {_mib(images * per_image)}"
        for label, (images, rss, _) in points
    ]
    growth = "—"
    if points and steps[-1][0] > points[0][1][0]:  # from the 10% checkpoint to the last batch
        first, last = points[0][1], steps[-1]
        growth = f"{(last[1] - first[1]) / (last[0] - first[0]) * 10_000 / MIB:,.1f}"
    loop_s, after = ingest["loop_s"], secs(memory["add_s"] - ingest["loop_s"])
    if memory["stopped_at"] is not None:
        build = "not measured (safety stop)"
    elif ingest["build_peak"] is None:
        build = f"not sampled (it took {after} s; VmHWM covers it)"
    else:
        build = f"{_mib(ingest['build_peak'])} MiB (it took {after} s)"
    search = [("after the ingest", memory["search"])]
    search.append((f"+{memory['extra_files']:,} (delta)", memory["search_delta"]))
    return {
        "memory": common.table(
            f"ingested | images | RSS MiB | over baseline ({_mib(memory['baseline_rss'])} MiB) "
            f"| their vectors ({memory['dim']} x 4 B each) MiB",
            rows,
            "r",
        ),
        "memory_peaks": common.table(
            "ingest img/s | RSS growth per 10,000 images (10% to last batch) MiB | vectors per "
            "10,000 images MiB | peak RSS in the ingest loop MiB | peak RSS in the index build "
            "after it | VmHWM MiB",
            [
                f"{steps[-1][0] / loop_s if loop_s else 0:.0f} | {growth} "
                f"| {10_000 * per_image / MIB:.1f} | {_mib(ingest['loop_peak'])} | {build} "
                f"| {_mib(memory['hwm'])}"
            ],
            "r",
        ),
        "search": common.table(
            "library | vectors | index | nlist / nprobe | segments | recall@10 at build "
            f"| IndexStore p50 / p99 ms, {memory['search']['threads']} FAISS threads "
            "| IndexStore p50 / p99 ms, 1 thread | FAISS p50 / p99 ms, 1 thread | recall@10 "
            "| other procs, cores",
            [
                f"{label} | {s['vectors']:,} | {s['kind']} "
                f"| {common.index_params(s['params'])} "
                f"| {s['segments']} | {common.num(s['build_recall'], 2)} "
                f"| {s['store']['p50_ms']:.2f} / {s['store']['p99_ms']:.2f} "
                f"| {s['store']['p50_1t_ms']:.2f} / {s['store']['p99_1t_ms']:.2f} "
                f"| {s['faiss_one']['p50_ms']:.2f} / {s['faiss_one']['p99_ms']:.2f} "
                f"| {s['recall']:.3f} | {common.num(s['other_cores'], 2)}"
                for label, s in search
            ],
            "lrllr",
        ),
    }


# --- main ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated: %(default)s")
    parser.add_argument("--noop-files", type=int, default=10_000)
    parser.add_argument("--memory-files", type=int, default=100_000)
    parser.add_argument("--extra-files", type=int, default=1000, help="added after the ingest")
    parser.add_argument("--queries", type=int, default=500, help="search queries (memory part)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of noop add and query")
    parser.add_argument("--models", default="vit_b_16,mobilenet_v2", help="query part's models")
    parser.add_argument("--photos", type=Path, default=common.UKBENCH, help="query part's photos")
    parser.add_argument("--tmp", type=Path, help="where the temporary folder goes")
    half_ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2 // MIB
    parser.add_argument(
        "--rss-limit-mb", type=int, default=half_ram, help="stop the ingest past this RSS"
    )
    common.report_args(parser)
    args = parser.parse_args(argv)
    if args.child:
        children = {"run": child_run, "noop": child_noop, "imports": child_imports}
        return common.child_main({**children, "cli": child_cli, "memory": child_memory}, args.child)
    parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    if set(parts) - set(PARTS):
        parser.error(f"parts are among {', '.join(PARTS)}")
    if min(args.noop_files, args.memory_files, args.queries, args.repeats) < 1:
        parser.error("sizes, --queries and --repeats must be at least 1")
    if not IMGVEC.is_file():
        raise SystemExit(f"no imgvec console script at {IMGVEC}; pip install -e . first")
    started, meter = time.perf_counter(), common.CpuMeter()
    runners = {"noop": run_noop, "query": run_query, "memory": run_memory}
    render = {"noop": noop_tables, "query": query_tables, "memory": memory_tables}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=args.tmp) as temporary:
        for part in (part for part in PARTS if part in parts):
            results[part] = runners[part](args, Path(temporary))
    tables = {"run": common.run_line(common.command_line(MODULE, argv), started, meter)}
    for part, result in results.items():
        tables.update(render[part](result))
    results["run"] = tables["run"]
    common.publish("bench_scale", tables, results, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
