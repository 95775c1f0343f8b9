"""Benchmark of imgvec at scale: "Ingest at the speed of the model, query at the speed of the
index" (the issue's title); each part against one of its targets.

Run from the repository root (a quarter of an hour or more on two cores at the default sizes,
and up to half the machine's memory, see ``--rss-limit-mb``):

    .venv/bin/python -m benchmarks.bench_scale --out BENCHMARKS.md

Three parts (``--parts noop,query,memory``), each checked against a target of the issue:

1. noop: ``imgvec add`` of an unchanged library of ``--noop-files`` generated images, each run a
   fresh subprocess timed from the outside (interpreter start and imports included); then, in a
   fresh child process, ``Library.open(lib).add([folder])`` in-process, and whether torch or
   FAISS got imported (target: at most 2 s for 10,000 files, and no model loaded);
2. query: ``imgvec query IMAGE --timings`` from a cold start, per model (random weights: as fast
   as real ones, nothing downloads), split into model load, forward, index open and search, and
   all the photos in one call (batched);
3. memory: in a fresh child, ``Library.add`` of ``--memory-files`` tiny generated images with a
   cheap deterministic 768-d model (``tests.fake_model``'s colour grid, as wide as vit_b_16's
   vectors), its RSS as the ingest advances and during the index build that follows; then single
   query latency and recall@10 of the resulting index against exact search, before and after
   ``--extra-files`` more images add a delta segment. Should RSS pass ``--rss-limit-mb`` (half the
   RAM by default), the ingest is stopped there (target not met) and the rest added in portions,
   so that search is still measured on the whole library.

With ``--out FILE`` the results replace the section between ``<!-- scale:start -->`` and
``<!-- scale:end -->`` in FILE (the file is created if missing; other sections are untouched).

Only the standard library is imported at the top: the noop child checks which heavy modules
imgvec itself imports, and times ``import imgvec.library`` from a clean start.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import report
from benchmarks.machine import CpuMeter

if TYPE_CHECKING:
    import numpy as np

    from imgvec.library import Library
    from imgvec.schema import EmbeddingModel

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PHOTOS = REPO.parent / "shared" / "eval" / "ukbench140" / "images"
IMGVEC = Path(sys.executable).with_name("imgvec")
"""The console script of the interpreter running this benchmark (the venv's)."""

COMMAND = ".venv/bin/python -m benchmarks.bench_scale"
START_MARKER = "<!-- scale:start -->"
END_MARKER = "<!-- scale:end -->"
RESULT_PREFIX = "BENCH-RESULT "
PARTS = ("noop", "query", "memory")

K = 10
NOOP_TARGET_S = 2.0
NOOP_TARGET_FILES = 10_000
MEMORY_TARGET_FILES = 100_000
SEARCH_TARGET_MS = 10.0
WELL_UNDER = 0.5
""""Well under" the search target is read as at most half of it."""
TARGET_RECALL = 0.95
BOUNDED_SHARE = 0.5
"""Ingest memory counts as bounded when RSS grows by less than half of what the added vectors
themselves weigh: per-file bookkeeping (paths, hashes) grows a little, a list of all vectors
(or of anything bigger per image) at least that much."""
HEAVY_MODULES = ("torch", "torchvision", "faiss")
IMPORT_STEPS = ("imgvec.cli", "imgvec.embed", "imgvec.index_store")
"""What a cold ``imgvec query`` imports outside its ``--timings`` parts, in its order: the CLI
(Typer, Rich, SQLAlchemy, NumPy, Pillow), the model code (torch, torchvision), the index (FAISS)."""
TIMED_PARTS = ("import_torch", "model_load", "embed", "index_load", "search")
"""The ``imgvec query --timings`` stages with a column; others, if any, get a note."""
STARTUP_RUNS = 3
NOISY_CORES = 0.2
"""Other processes' CPU use (cores) above which a part's timings are flagged as noisy."""
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}

GRID_MODEL = "grid768"
GRID_CELLS = 16
"""16 x 16 cells x 3 colours = 768 dimensions, like vit_b_16."""
NOOP_MODEL = "mobilenet_v2"
NOOP_SIZE, NOOP_PER_FOLDER = 32, 100
MEMORY_SIZE, MEMORY_PER_FOLDER = 24, 1000
SAMPLE_EVERY_S = 0.2
WARMUP_QUERIES = 3
CHECKPOINTS = (0.10, 0.25, 0.50, 0.75, 1.00)
FALLBACK_SHARE = 0.8
"""After the safety stop, the rest is added in calls of at most this share of what fitted."""

# The image generator: each picture is one of CLUSTERS seeded colour layouts (a GRID x GRID
# grid of blocks) with its own block jitter and pixel noise, so that pictures form clusters like
# photos do (uniformly random ones would have no near neighbours) and no two files are alike.
SEED = 20240611
CLUSTERS = 2048
GRID = 6
BLOCK_JITTER = 12.0
PIXEL_NOISE = 6.0
NOOP_STREAM, LIBRARY_STREAM, EXTRA_STREAM, QUERY_STREAM = 1, 2, 3, 4

MIB = 1 << 20
CLI_TIMEOUT_S = 600.0
SECONDS_PER_FILE_LIMIT = 0.1
"""Subprocess time limits grow with the number of files by this much (a generous bound)."""


# --- generated images ----------------------------------------------------------------------------


@functools.cache
def _layouts() -> np.ndarray:
    import numpy as np

    return np.random.default_rng(SEED).uniform(0, 255, (CLUSTERS, GRID, GRID, 3))


def picture_batch(stream: int, start: int, count: int, size: int) -> np.ndarray:
    """``count`` distinct RGB pictures (uint8, size x size), deterministic per stream and start."""
    import numpy as np

    rng = np.random.default_rng([SEED, stream, start])
    clusters = rng.integers(0, CLUSTERS, count)
    blocks = _layouts()[clusters] + rng.normal(0, BLOCK_JITTER, (count, GRID, GRID, 3))
    scale = -(-size // GRID)
    pixels = blocks.repeat(scale, axis=1).repeat(scale, axis=2)[:, :size, :size]
    pixels += rng.normal(0, PIXEL_NOISE, pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_images(folder: Path, count: int, size: int, per_folder: int, stream: int) -> float:
    """Write ``count`` PNGs into subfolders of ``per_folder`` files; returns the seconds taken."""
    from PIL import Image

    started = time.perf_counter()
    chunk = 1000
    next_log = 0.25
    for start in range(0, count, chunk):
        pixels = picture_batch(stream, start, min(chunk, count - start), size)
        for offset, picture in enumerate(pixels):
            number = start + offset
            subfolder = folder / f"{number // per_folder:04d}"
            if number % per_folder == 0:
                subfolder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(picture).save(subfolder / f"{number:06d}.png", compress_level=1)
        if count >= 20_000 and (start + chunk) / count >= next_log:
            _log(f"  {min(start + chunk, count)} of {count} images written")
            next_log += 0.25
    return time.perf_counter() - started


def photos_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise SystemExit(f"no photo folder {folder} (see --photos)")
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    if not photos:
        raise SystemExit(f"no photos in {folder}")
    return photos


# --- subprocesses --------------------------------------------------------------------------------


def run_cli(arguments: Sequence[str | Path], timeout: float) -> tuple[float, str, str]:
    """Run ``imgvec ARGUMENTS`` in a fresh process: wall seconds (start to exit), stdout, stderr."""
    command = [str(IMGVEC), *map(str, arguments)]
    started = time.perf_counter()
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(
            f"{shlex.join(command)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        )
    return wall, done.stdout, done.stderr


def run_cli_peak(arguments: Sequence[str | Path], timeout: float) -> tuple[float, str, int]:
    """Like :func:`run_cli`, through a child (``--child run``) whose only child is imgvec: wall
    seconds, stdout, and imgvec's peak RSS in bytes."""
    command = [str(IMGVEC), *map(str, arguments)]
    result = run_child(["run", json.dumps({"command": command, "timeout": timeout})], timeout + 60)
    if result["returncode"] != 0:
        raise SystemExit(
            f"{shlex.join(command)} failed (exit {result['returncode']}):\n{result['stderr']}"
        )
    return result["wall"], result["stdout"], result["max_rss"]


def child_run(task: str) -> dict[str, Any]:
    spec = json.loads(task)
    started = time.perf_counter()
    done = subprocess.run(
        spec["command"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=spec["timeout"],
        check=False,
    )
    return {
        "wall": time.perf_counter() - started,
        "returncode": done.returncode,
        "stdout": done.stdout,
        "stderr": done.stderr[-3000:],
        "max_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,  # KiB
    }


def run_child(
    arguments: Sequence[str | Path], timeout: float, quiet: bool = False
) -> dict[str, Any]:
    """This module in a fresh process (``--child ...``); its result line as a dict. Its stderr
    (progress) passes through, unless ``quiet``: then it is shown only if the child fails."""
    command = [sys.executable, "-m", "benchmarks.bench_scale", "--child", *map(str, arguments)]
    done = subprocess.run(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if quiet else None,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise SystemExit(
            f"child {arguments[0]} failed (exit {done.returncode}):\n{done.stdout}"
            + (done.stderr[-3000:] if quiet else "")
        )
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def files_limit(files: int) -> float:
    return CLI_TIMEOUT_S + SECONDS_PER_FILE_LIMIT * files


def parse_timings(stderr: str) -> dict[str, float]:
    """``timings (s): model_load=0.61 embed=0.04 ...`` (from ``imgvec query --timings``)."""
    for line in stderr.splitlines():
        if line.startswith("timings (s):"):
            pairs = re.findall(r"(\w+)=([0-9.eE+-]+)", line.split(":", 1)[1])
            return {key: float(value) for key, value in pairs}
    raise SystemExit(f"no timings line in imgvec query's stderr:\n{stderr[-2000:]}")


# --- part 1: nothing to do -----------------------------------------------------------------------


def run_noop(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    n = args.noop_files
    folder, library = tmp / "noop-images", tmp / "noop-library"
    meter = CpuMeter()
    _log(f"noop: writing {n} images")
    generate_s = write_images(folder, n, NOOP_SIZE, NOOP_PER_FOLDER, NOOP_STREAM)
    _log(f"noop: populating a library ({NOOP_MODEL}, random weights)")
    options = ["--model", NOOP_MODEL, "--weights", "none", "--library", library, "-q", "--json"]
    populate_s, stdout, populate_rss = run_cli_peak(["add", folder, *options], files_limit(n))
    populated = json.loads(stdout)
    if populated["added"] != n or populated["failed"]:
        raise SystemExit(f"populating added {populated['added']} of {n} files: {populated}")
    runs = []
    for repeat in range(args.repeats):
        wall, stdout, _ = run_cli(["add", folder, "--library", library, "--json"], files_limit(n))
        again = json.loads(stdout)
        if again["unchanged"] != n or again["added"] or again["updated"] or again["failed"]:
            raise SystemExit(f"re-running add changed something: {again}")
        runs.append(wall)
        _log(f"noop: re-run {repeat + 1}: {wall:.2f} s")
    child = run_child(["noop", library, folder], files_limit(n))
    if child["unchanged"] != n or child["added"]:
        raise SystemExit(f"the in-process add changed something: {child}")
    _log(f"noop: in-process add {child['add_s']:.2f} s, imports {child['modules']}")
    return {
        "files": n,
        "generate_s": generate_s,
        "populate_s": populate_s,
        "populate_rss": populate_rss,
        "runs": runs,
        "child": child,
        "other_cores": meter.other_cores(),
    }


def child_noop(library: str, folder: str) -> dict[str, Any]:
    """``Library.add`` of an unchanged folder, in-process: time, and what it imported."""
    started = time.perf_counter()
    from imgvec.library import Library

    import_s = time.perf_counter() - started
    started = time.perf_counter()
    with Library.open(library, create=False) as lib:
        added = lib.add([folder])
        stages = dict(lib.stopwatch.seconds)
    return {
        "import_s": import_s,
        "add_s": time.perf_counter() - started,
        "added": added.added,
        "unchanged": added.unchanged,
        "modules": {name: name in sys.modules for name in HEAVY_MODULES},
        "stages": stages,
    }


# --- part 2: query latency -----------------------------------------------------------------------


def run_query(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    photos = photos_in(args.photos)
    copies = tmp / "query-copies"  # outside every library: queries are embedded, not looked up
    copies.mkdir()
    queries = [Path(shutil.copyfile(photo, copies / photo.name)) for photo in photos]
    meter = CpuMeter()
    models = [
        measure_query_model(model, photos, queries, args, tmp)
        for model in (name.strip() for name in args.models.split(","))
        if model
    ]
    startup = measure_startup(min(args.repeats, STARTUP_RUNS))
    return {
        "photos": len(photos),
        "models": models,
        "startup": startup,
        "other_cores": meter.other_cores(),
    }


def measure_startup(runs: int) -> dict[str, float]:
    """Medians, each in fresh processes: the interpreter's start (``python -c pass``), and the
    imports of :data:`IMPORT_STEPS`, one after the other (what the "rest" of a cold query holds)."""
    starts, imports = [], []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=CLI_TIMEOUT_S)
        starts.append(time.perf_counter() - started)
        imports.append(run_child(["imports"], CLI_TIMEOUT_S))
    medians = {name: statistics.median(run[name] for run in imports) for name in IMPORT_STEPS}
    return {"interpreter": statistics.median(starts), **medians}


def child_imports() -> dict[str, float]:
    seconds = {}
    for name in IMPORT_STEPS:
        started = time.perf_counter()
        importlib.import_module(name)
        seconds[name] = time.perf_counter() - started
    return seconds


def measure_query_model(
    model: str, photos: Sequence[Path], queries: Sequence[Path], args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    library = tmp / f"query-library-{model}"
    _log(f"query {model}: adding {len(photos)} photos")
    build_s, _, _ = run_cli(
        ["add", args.photos, "--model", model, "--weights", "none", "--library", library, "-q"],
        files_limit(len(photos)),
    )
    expected = min(K, len(photos))
    options = ["--library", library, "-k", str(K), "--json", "--timings"]
    cold = []
    for repeat in range(args.repeats):
        wall, stdout, stderr = run_cli(
            ["query", queries[repeat % len(queries)], *options], CLI_TIMEOUT_S
        )
        check_answers(json.loads(stdout), 1, expected)
        cold.append({"wall": wall, "parts": parse_timings(stderr)})
        _log(f"query {model}: cold run {repeat + 1}: {wall:.2f} s {cold[-1]['parts']}")
    wall, stdout, stderr = run_cli(["query", *queries, *options], files_limit(len(queries)))
    check_answers(json.loads(stdout), len(queries), expected)
    batch = {"n": len(queries), "wall": wall, "parts": parse_timings(stderr)}
    _log(f"query {model}: {len(queries)} queries in one call: {wall:.2f} s")
    exits = [
        measure_exit(["query", queries[run % len(queries)], *options])
        for run in range(min(args.repeats, STARTUP_RUNS))
    ]
    _log(f"query {model}: interpreter exit after the answer: {statistics.median(exits):.2f} s")
    exit_s = statistics.median(exits)
    return {"model": model, "build_s": build_s, "cold": cold, "batch": batch, "exit_s": exit_s}


def measure_exit(arguments: Sequence[str | Path]) -> float:
    """Seconds from the moment ``imgvec.cli.main`` returns (in a child running it in-process) to
    the end of that process: the interpreter's shutdown, which ``--timings`` cannot see.
    ``time.perf_counter`` is CLOCK_MONOTONIC on Linux, the same clock in both processes."""
    result = run_child(["cli", json.dumps([str(a) for a in arguments])], CLI_TIMEOUT_S, quiet=True)
    return time.perf_counter() - result["returned_at"]


def child_cli(arguments: str) -> dict[str, Any]:
    from imgvec.cli import main  # the console script's entry point, as `imgvec` runs it

    sys.argv = ["imgvec", *json.loads(arguments)]
    try:
        main()
    except SystemExit as done:
        if done.code:
            raise
    return {"returned_at": time.perf_counter()}


def check_answers(answers: list[dict[str, Any]], queries: int, results: int) -> None:
    """Every query embedded (not found in the library), answered, with ``results`` hits."""
    bad = [
        a
        for a in answers
        if a["error"] is not None or a["vector"] != "embedded" or len(a["results"]) != results
    ]
    if len(answers) != queries or bad:
        raise SystemExit(f"unexpected query answers ({len(answers)} of {queries}): {bad[:3]}")


# --- part 3: memory while adding, then search ----------------------------------------------------


def run_memory(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    n, extra_n = args.memory_files, args.extra_files
    images, extra, library = tmp / "memory-images", tmp / "memory-extra", tmp / "memory-library"
    _log(f"memory: writing {n} + {extra_n} images")
    generate_s = write_images(images, n, MEMORY_SIZE, MEMORY_PER_FOLDER, LIBRARY_STREAM)
    generate_s += write_images(extra, extra_n, MEMORY_SIZE, MEMORY_PER_FOLDER, EXTRA_STREAM)
    _log(f"memory: images written in {generate_s:.0f} s; adding them in a child process")
    meter = CpuMeter()
    options = ["--queries", str(args.queries), "--rss-limit-mb", str(args.rss_limit_mb)]
    child = run_child(["memory", library, images, extra, *options], files_limit(n + extra_n))
    return {
        "files": n,
        "extra_files": extra_n,
        "generate_s": generate_s,
        **child,
        "other_cores": meter.other_cores(),
    }


class MemoryLimitReached(Exception):
    """Raised from the progress callback: the ingest passed the safety limit on RSS."""


def proc_status_bytes(field: str) -> int:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in bytes; 0 where there is none."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class MemoryTrace:
    """A Reporter that records RSS at each ingest batch, with a sampler thread (every
    :data:`SAMPLE_EVERY_S`) that also sees the index build after the last batch."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.recording = True
        self.total = 0
        self.done_images = 0
        self.steps: list[tuple[int, int, float]] = []
        """(images done, RSS bytes, seconds since start) after each committed batch."""
        self.samples: list[tuple[float, int]] = []
        self.notices: list[tuple[float, str]] = []
        self.errors = 0
        self._started = time.perf_counter()
        self._next_log = 0.1
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self._started

    def start(self) -> None:
        self._started = time.perf_counter()
        self.notices.clear()  # opening the library is not part of the measured add
        self._sampler.start()

    def stop(self) -> None:
        self._stop.set()
        self._sampler.join()
        self.recording = False

    def _sample(self) -> None:
        while True:
            self.samples.append((self.elapsed(), proc_status_bytes("VmRSS")))
            if self._stop.wait(SAMPLE_EVERY_S):
                return

    # Reporter protocol (imgvec.reporting)

    def notice(self, message: str) -> None:
        self.notices.append((self.elapsed(), message))

    def file_error(self, path: str, reason: str) -> None:
        self.errors += 1

    def progress(self, description: str, total: int) -> Callable[[int], None]:
        if not self.recording:
            return lambda _n: None
        self.total = total
        return self._advance

    def done(self) -> None:
        pass

    def _advance(self, n: int) -> None:
        self.done_images += n
        rss = proc_status_bytes("VmRSS")
        self.steps.append((self.done_images, rss, self.elapsed()))
        if self.done_images >= self._next_log * self.total:
            _log(f"  {self.done_images} of {self.total} added, RSS {rss / MIB:.0f} MiB")
            self._next_log += 0.1
        if rss > self.limit:
            raise MemoryLimitReached(f"RSS {rss / MIB:.0f} MiB after {self.done_images} images")

    def summary(self) -> dict[str, Any]:
        """RSS at the checkpoints, peaks during the loop and after it (the index build)."""
        if not self.steps:
            return {"checkpoints": [], "end": None, "loop_peak": None, "build_peak": None}
        loop_end = self.steps[-1][2]
        checkpoints = []
        for share in CHECKPOINTS:
            step = next((s for s in self.steps if s[0] >= share * self.total), None)
            if step is not None:
                checkpoints.append({"share": share, "images": step[0], "rss": step[1]})
        in_loop = [rss for at, rss in self.samples if at <= loop_end]
        after = [rss for at, rss in self.samples if at > loop_end]
        return {
            "checkpoints": checkpoints,
            "end": {"images": self.steps[-1][0], "rss": self.steps[-1][1]},
            "loop_peak": max([s[1] for s in self.steps] + in_loop),
            "loop_end_rss": self.steps[-1][1],
            "loop_s": loop_end,
            "build_peak": max(after) if after else None,
        }


def child_memory(
    library: str, images: str, extra: str, queries: int, limit_mb: int
) -> dict[str, Any]:
    """Ingest with RSS traced; then search latency and recall, before and after a delta."""
    import tests.fake_model
    from imgvec.library import Library

    dim = tests.fake_model.register_grid_model(
        GRID_MODEL, GRID_CELLS, "benchmark: 16x16 grid of mean colours"
    )
    trace = MemoryTrace(limit_mb * MIB)
    result: dict[str, Any] = {"dim": dim, "rss_limit": limit_mb * MIB}
    with Library.open(library, reporter=trace) as lib:
        result["baseline_rss"] = proc_status_bytes("VmRSS")
        trace.start()
        try:
            lib.add([images], model=GRID_MODEL, weights="none")
            result["stopped_at"] = None
        except MemoryLimitReached as reason:
            _log(f"memory: safety stop, {reason}")
            result["stopped_at"] = trace.done_images
        finally:
            trace.stop()
        result["add_s"] = trace.elapsed()
        result["hwm"] = proc_status_bytes("VmHWM")
        result["keeps_freed_memory"] = malloc_keeps_freed_memory()
        result["ingest"] = {"total": trace.total, **trace.summary(), "errors": trace.errors}
        result["notices"] = list(trace.notices)  # the later adds report to the same object
        if result["stopped_at"] is not None:
            result["fallback"] = add_in_portions(lib, Path(images), result["stopped_at"])
        # Only now, with the ingest measured, may this process hold every vector (ground truth).
        vectors = embed_fresh(lib, queries)
        result["search"] = measure_search(lib, vectors)
        lib.add([extra], model=GRID_MODEL, weights="none")
        result["search_delta"] = measure_search(lib, vectors)
    return result


def malloc_keeps_freed_memory() -> bool | None:
    """Whether imgvec told glibc malloc to keep freed memory in this process (None: unknown).
    Reads the cache of ``imgvec.embed.keep_freed_memory`` rather than calling it, which would
    apply the setting."""
    from imgvec import embed

    function = getattr(embed, "keep_freed_memory", None)
    if function is None or not hasattr(function, "cache_info"):
        return None
    return function.cache_info().currsize > 0 and bool(function())


def add_in_portions(lib: Library, images: Path, fitted: int) -> dict[str, Any]:
    """After the safety stop: the remaining folders in several ``add`` calls (each keeps its own
    batch of work in memory), then one fresh index build, so search is still measured on the
    whole library as one ``add`` would have indexed it."""
    started = time.perf_counter()
    portion = max(MEMORY_PER_FOLDER, int(FALLBACK_SHARE * fitted))
    groups: list[list[Path]] = [[]]
    size = 0
    for folder in sorted(p for p in images.iterdir() if p.is_dir()):
        files = len(os.listdir(folder))
        if groups[-1] and size + files > portion:
            groups.append([])
            size = 0
        groups[-1].append(folder)
        size += files
    for number, group in enumerate(groups, 1):
        _log(f"memory: adding the rest, portion {number} of {len(groups)}")
        lib.add(group, model=GRID_MODEL, weights="none")
    lib.build_index()
    return {"calls": len(groups), "seconds": time.perf_counter() - started}


def embed_fresh(lib: Library, count: int) -> np.ndarray:
    """Vectors of ``count`` new pictures (another stream: none is in the library)."""
    import numpy as np
    from PIL import Image

    pixels = picture_batch(QUERY_STREAM, 0, count, MEMORY_SIZE)
    embedder = lib.embedder()
    chunks = [
        embedder.embed([Image.fromarray(p) for p in pixels[start : start + 256]])
        for start in range(0, count, 256)
    ]
    return np.concatenate(chunks)


def measure_search(lib: Library, queries: np.ndarray) -> dict[str, Any]:
    """Single-query latency through ``IndexStore.search`` (as ``Library.query`` calls it) on
    FAISS's default threads and on one, and of the FAISS segments alone on one thread; recall@10
    against exact search over the live vectors."""
    import faiss

    from imgvec import faiss_index

    model = lib.active_model_row()
    version = lib._current_version(model)
    index = lib.index(model)
    lookup = lib._vector_lookup(model)
    segments = index.load(version)

    def through_store(query: np.ndarray) -> np.ndarray:
        return index.search(version, query, K, lookup)[1]

    def bare(query: np.ndarray) -> np.ndarray:
        return faiss_index.search(segments, query, K, lookup)[1]

    meter = CpuMeter()
    threads = faiss.omp_get_max_threads()
    default, found = time_queries(through_store, queries)
    faiss.omp_set_num_threads(1)  # steadier while other processes hold a core
    try:
        one_thread, _ = time_queries(through_store, queries)
        bare_one, _ = time_queries(bare, queries)
    finally:
        faiss.omp_set_num_threads(threads)
    other_cores = meter.other_cores()
    _log(
        f"memory: search on {index.model.name}: p50 {default['p50_ms']:.2f} ms, on one thread "
        f"{one_thread['p50_ms']:.2f} ms"
    )
    info = lib.status().index
    assert info is not None
    return {
        "vectors": info.n_vectors,
        "kind": info.kind,
        "params": info.params,
        "segments": info.segments,
        "build_recall": info.recall,
        "threads": threads,
        "store": default,
        "store_one": one_thread,
        "faiss_one": bare_one,
        "recall": recall_at_k(exact_top_k(lib, model, queries), found),
        "queries": len(queries),
        "other_cores": other_cores,
    }


def time_queries(
    search_one: Callable[[np.ndarray], np.ndarray], queries: np.ndarray
) -> tuple[dict[str, float], np.ndarray]:
    """p50/p99 ms of single queries (after a few unrecorded warm-up ones) and the ids found."""
    import numpy as np

    for query in queries[:WARMUP_QUERIES]:
        search_one(query[None, :])
    times, found = [], []
    for query in queries:
        started = time.perf_counter()
        ids = search_one(query[None, :])
        times.append(time.perf_counter() - started)
        found.append(ids[0])
    latency = {
        "p50_ms": float(np.percentile(times, 50)) * 1e3,
        "p99_ms": float(np.percentile(times, 99)) * 1e3,
    }
    return latency, np.stack(found)


def exact_top_k(lib: Library, model: EmbeddingModel, queries: np.ndarray) -> np.ndarray:
    """Ids of each query's K best stored vectors by inner product (vectors are L2-normalised)."""
    import numpy as np

    from imgvec import store

    with lib.session() as session:
        ids, vectors = store.all_vectors(session, model.id, model.dim)
    k = min(K, len(ids))
    rows = []
    for start in range(0, len(queries), 64):
        scores = queries[start : start + 64] @ vectors.T
        rows.append(ids[np.argpartition(-scores, k - 1, axis=1)[:, :k]])
    return np.vstack(rows)


def recall_at_k(truth: np.ndarray, found: np.ndarray) -> float:
    hits = sum(len(set(t.tolist()) & set(f.tolist())) for t, f in zip(truth, found, strict=True))
    return hits / truth.size


# --- the report ----------------------------------------------------------------------------------


def _s(seconds: float) -> str:
    return (
        f"{seconds:.3f}" if seconds < 1 else f"{seconds:.2f}" if seconds < 10 else f"{seconds:.0f}"
    )


def _ms(seconds: float) -> str:
    value = seconds * 1e3
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


def _mib(size: float | None) -> str:
    return "—" if size is None else f"{size / MIB:,.0f}"


def _n(n: int) -> str:
    return f"{n:,}"


def _times(ratio: float) -> str:
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:,.0f}x"


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else "yes" if value else "no"


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _gauge(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _below(n: int, target: int) -> str:
    return "" if n >= target else f" (measured at {_n(n)} files; the target speaks of {_n(target)})"


def noop_section(noop: dict[str, Any]) -> list[str]:
    child = noop["child"]
    runs = noop["runs"]
    imported = [name for name, loaded in child["modules"].items() if loaded]
    return [
        "### Nothing to do costs nothing",
        "",
        f"- {_n(noop['files'])} generated {NOOP_SIZE}x{NOOP_SIZE} PNGs (seeded colour blocks, "
        f"every file different) in folders of {NOOP_PER_FOLDER}, written in "
        f"{_s(noop['generate_s'])} s, added to a fresh library with `imgvec add DIR --model "
        f"{NOOP_MODEL} --weights none -q --json` (random weights, nothing downloads); its peak "
        "RSS is `getrusage(RUSAGE_CHILDREN)` of a wrapper process whose only child it is.",
        f"- **re-run**: `imgvec add DIR --library LIB --json`, {len(runs)} times, each a fresh "
        "process timed from start to exit (interpreter start and imports included); every run "
        f"reported all {_n(noop['files'])} files unchanged and nothing added.",
        "- **in-process**: in a fresh child process, `import imgvec.library`, then "
        "`Library.open(LIB).add([DIR])` timed alone, then which of "
        + ", ".join(f"`{m}`" for m in HEAVY_MODULES)
        + " are in `sys.modules`.",
        f"- Other processes kept {_gauge(noop['other_cores'])} cores busy during this part.",
        "",
        "| files | first add (embeds) | first add img/s | first add peak RSS MiB "
        "| re-run median | re-run min "
        "| in-process `import imgvec.library` | in-process `add` | imported afterwards |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        f"| {_n(noop['files'])} | {_s(noop['populate_s'])} s "
        f"| {noop['files'] / noop['populate_s']:.0f} | {_mib(noop['populate_rss'])} "
        f"| {_s(statistics.median(runs))} s "
        f"| {_s(min(runs))} s | {_s(child['import_s'])} s | {_s(child['add_s'])} s "
        f"| {', '.join(f'`{m}`' for m in imported) or 'none of them'} |",
        "",
    ]


def _median_parts(runs: Sequence[dict[str, Any]]) -> dict[str, float]:
    keys = {key for run in runs for key in run["parts"]}
    return {
        key: statistics.median(run["parts"][key] for run in runs if key in run["parts"])
        for key in sorted(keys, key=lambda k: (k not in TIMED_PARTS, k))
    }


def _part_cell(parts: dict[str, float], key: str) -> str:
    return f"{_s(parts[key])} s" if key in parts else "—"


def query_section(query: dict[str, Any]) -> list[str]:
    lines = [
        "### Query latency from a cold start",
        "",
        f"- Per model, a library of the {query['photos']} photos in `--photos` "
        "(`imgvec add PHOTOS --model M --weights none`: random weights, as fast as real ones; "
        "building a randomly initialised network may take a different time than reading a "
        "state dict). The queries are copies of the photos in another folder, so they are "
        "embedded (a file in the library would be answered from its stored vector).",
        "- **cold**: `imgvec query COPY -k 10 --json --timings`, one photo, a fresh process each "
        "time, timed from start to exit; the parts come from `--timings` (`import_torch`: the "
        "first import of torch and torchvision; `model_load`: building the model; `embed`: "
        "preprocessing done, the forward pass; `index_load`: opening the index files; "
        "`search`). *rest* = wall minus the parts: interpreter start, the other imports, "
        "opening the database, reading and decoding the photo, and the interpreter's exit "
        "after the answer is printed. *of which exit*: that exit, measured apart: the same "
        "query in a child process running `imgvec.cli.main` (the console script's entry "
        "point) in-process, from the moment it returns to the end of the process. Medians.",
        "- **batched**: all the copies in one `imgvec query` call (the library embeds them in "
        "batches): wall per query, and its `embed` part per query.",
        f"- Every answer had min(10, library size) results. Other processes kept "
        f"{_gauge(query['other_cores'])} cores busy during this part.",
        "",
        "| model | cold runs | wall | import_torch | model_load | embed (1 image) | index_load "
        "| search | rest "
        "| of which exit | batched queries | batched wall per query | batched embed per query "
        "| cold wall / batched wall per query |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: |",
    ]
    for row in query["models"]:
        batch = row["batch"]
        parts, wall, rest = cold_medians(row["cold"])
        per_query = batch["wall"] / batch["n"]
        embed = batch["parts"].get("embed")
        cells = [
            f"`{row['model']}`",
            str(len(row["cold"])),
            f"{_s(wall)} s",
            _part_cell(parts, "import_torch"),
            _part_cell(parts, "model_load"),
            _part_cell(parts, "embed"),
            f"{_ms(parts['index_load'])} ms" if "index_load" in parts else "—",
            f"{_ms(parts['search'])} ms" if "search" in parts else "—",
            f"{_s(rest)} s",
            f"{_s(row['exit_s'])} s",
            str(batch["n"]),
            f"{_s(per_query)} s",
            "—" if embed is None else f"{_s(embed / batch['n'])} s",
            f"{wall / per_query:.1f}x",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _other_stages(query["models"])
    startup = query["startup"]
    lines += [
        "",
        "What *rest* holds, measured apart (medians of fresh processes): the interpreter's start "
        "(`python -c pass`), then in one process the imports a cold query makes, one after the "
        "other (each figure excludes what the previous ones imported).",
        "",
        "| interpreter start | "
        + " | ".join(f"then `import {name}`" for name in IMPORT_STEPS)
        + " | sum |",
        "| ---: " * (len(IMPORT_STEPS) + 2) + "|",
        "| "
        + " | ".join(f"{_s(startup[key])} s" for key in ("interpreter", *IMPORT_STEPS))
        + f" | {_s(sum(startup.values()))} s |",
    ]
    return [*lines, ""]


def _other_stages(rows: Sequence[dict[str, Any]]) -> list[str]:
    """A note on ``--timings`` stages without a column (subtracted from *rest* all the same)."""
    notes = []
    for row in rows:
        parts = _median_parts(row["cold"])
        others = {key: value for key, value in parts.items() if key not in TIMED_PARTS}
        if others:
            listed = ", ".join(f"`{key}` {_s(value)} s" for key, value in others.items())
            notes.append(f"`{row['model']}`: {listed}")
    if not notes:
        return []
    return ["", "Other `--timings` stages (medians, not in *rest*): " + "; ".join(notes) + "."]


def _growth(ingest: dict[str, Any]) -> tuple[int, int, int] | None:
    """(images, RSS growth in bytes, images at 10%) from the 10% checkpoint to the last batch."""
    if not ingest["checkpoints"] or ingest["end"]["images"] <= ingest["checkpoints"][0]["images"]:
        return None
    first, last = ingest["checkpoints"][0], ingest["end"]
    return last["images"] - first["images"], last["rss"] - first["rss"], first["images"]


def memory_section(memory: dict[str, Any]) -> list[str]:
    ingest, dim = memory["ingest"], memory["dim"]
    per_image = dim * 4
    points = [(f"{round(100 * p['share'])}%", p) for p in ingest["checkpoints"]]
    if ingest["checkpoints"] and ingest["end"]["images"] > ingest["checkpoints"][-1]["images"]:
        points.append(("stop", ingest["end"]))  # the safety stop, between two checkpoints
    rows = [
        f"| {label} | {_n(p['images'])} | {_mib(p['rss'])} "
        f"| {_mib(p['rss'] - memory['baseline_rss'])} | {_mib(p['images'] * per_image)} |"
        for label, p in points
    ]
    growth = _growth(ingest)
    per_10k = "—" if growth is None else f"{growth[1] / growth[0] * 10_000 / MIB:,.1f}"
    loop_s = ingest.get("loop_s") or 0.0
    done = ingest["end"]["images"] if ingest["checkpoints"] else 0
    stopped = memory["stopped_at"]
    after_loop = _s(memory["add_s"] - loop_s)
    if stopped is not None:
        build_cell = "not measured (safety stop)"
    elif ingest["build_peak"] is None:
        build_cell = f"not sampled (it took {after_loop} s; VmHWM covers it)"
    else:
        build_cell = f"{_mib(ingest['build_peak'])} MiB (it took {after_loop} s)"
    fallback = memory.get("fallback")
    lines = [
        "### Memory while adding, and search at scale",
        "",
        f"- {_n(memory['files'])} generated {MEMORY_SIZE}x{MEMORY_SIZE} PNGs in folders of "
        f"{_n(MEMORY_PER_FOLDER)}, written in {_s(memory['generate_s'])} s before the measurement: "
        f"each is one of {CLUSTERS} seeded colour layouts ({GRID}x{GRID} blocks) with its own "
        "block jitter and pixel noise, so the pictures form clusters as photos do and no two "
        "files are alike.",
        f"- In a fresh child process, `Library.open(LIB, reporter=R).add([DIR], model="
        f"'{GRID_MODEL}', weights='none')`: `{GRID_MODEL}` is `tests.fake_model`'s colour-grid "
        f"model at {GRID_CELLS}x{GRID_CELLS} cells, {dim}-d like `vit_b_16` (so the vectors weigh "
        "as much as real ones) but cheap, so the run measures the ingest, not a network. `R` "
        "reads VmRSS (`/proc/self/status`) after each committed batch; a thread also samples it "
        f"every {SAMPLE_EVERY_S} s, which also covers the index build after the last batch; "
        "VmHWM at the end. *baseline*: RSS after opening the library, before `add` (the model "
        "code imports torch).",
        "- glibc malloc told by imgvec to keep freed memory (`imgvec.embed.keep_freed_memory`) "
        f"during the add: {_yes_no(memory['keeps_freed_memory'])} (with it RSS does not shrink "
        "after a peak: it shows the largest heap so far).",
        f"- Safety stop: the ingest is stopped if RSS passes {_mib(memory['rss_limit'])} MiB "
        "(`--rss-limit-mb`), "
        + (
            f"which happened after {_n(stopped)} images; the rest was then added in "
            f"{fallback['calls']} calls of at most {FALLBACK_SHARE:.0%} of that, followed by "
            f"`lib.build_index()` ({_s(fallback['seconds'])} s), so that search is still measured "
            "on the whole library."
            if stopped is not None and fallback
            else "which did not happen."
        ),
        "- The library's notices during the measured `add` (seconds since it began): "
        + ("; ".join(f"{at:.1f} s: {text}" for at, text in memory["notices"]) or "none")
        + ".",
        f"- Other processes kept {_gauge(memory['other_cores'])} cores busy during this part.",
        "",
        f"| ingested | images | RSS MiB | over baseline ({_mib(memory['baseline_rss'])} MiB) "
        f"| their vectors ({dim} x 4 B each) MiB |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        "| ingest img/s | RSS growth per 10,000 images (10% to last batch) MiB "
        "| vectors per 10,000 images MiB | peak RSS in the ingest loop MiB "
        "| peak RSS in the index build after it | VmHWM MiB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {done / loop_s if loop_s else 0:.0f} | {per_10k} | {10_000 * per_image / MIB:.1f} "
        f"| {_mib(ingest['loop_peak'])} | {build_cell} | {_mib(memory['hwm'])} |",
        "",
        f"- **search**: {memory['search']['queries']} query vectors of fresh pictures (another "
        f"seed: not in the library), embedded with `lib.embedder().embed`; single queries (k={K}) "
        f"after {WARMUP_QUERIES} warm-up ones, through `lib.index(model).search(version, q, {K}, "
        "lookup)` as `Library.query` calls it (*IndexStore*: includes its per-call check of the "
        "change log in the database), on FAISS's default OpenMP threads and on one (FAISS's "
        "threads wait for each other while another process holds a core: the one-thread "
        "figures are the steadier ones here), and through `faiss_index.search` on the loaded "
        "segments alone (*FAISS*, one thread). recall@10 against exact inner-product search "
        "over every stored vector. "
        f"Then {_n(memory['extra_files'])} new images (another folder) through `lib.add`, which "
        "updates the index with a delta segment, and the same again. *other procs*: cores "
        "other processes kept busy while the queries ran (latency on a busy machine says little).",
        "",
        "| library | vectors | index | nlist / nprobe | segments | recall@10 at build "
        f"| IndexStore p50 / p99 ms, {memory['search']['threads']} FAISS threads "
        "| IndexStore p50 / p99 ms, 1 thread | FAISS p50 / p99 ms, 1 thread | recall@10 "
        "| other procs, cores |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        _search_row("after the ingest", memory["search"]),
        _search_row(f"+{_n(memory['extra_files'])} (delta)", memory["search_delta"]),
        "",
    ]
    return lines


def _search_row(label: str, search: dict[str, Any]) -> str:
    params = search["params"]
    probes = f"{params['nlist']} / {params['nprobe']}" if "nlist" in params else "—"
    if "m" in params:
        probes += f", m={params['m']}"
    latencies = " | ".join(
        f"{search[key]['p50_ms']:.2f} / {search[key]['p99_ms']:.2f}"
        for key in ("store", "store_one", "faiss_one")
    )
    return (
        f"| {label} | {_n(search['vectors'])} | {search['kind']} | {probes} "
        f"| {search['segments']} | {_gauge(search['build_recall'])} | {latencies} "
        f"| {search['recall']:.3f} | {_gauge(search['other_cores'])} |"
    )


def noop_verdict(noop: dict[str, Any]) -> str:
    median = statistics.median(noop["runs"])
    imported = [name for name, loaded in noop["child"]["modules"].items() if loaded]
    fast = median <= NOOP_TARGET_S
    no_model = not imported and "model load" not in noop["child"]["stages"]
    return (
        f"Nothing to do: re-running `imgvec add` on {_n(noop['files'])} unchanged files took a "
        f"median {_s(median)} s from process start to exit (target at most {NOOP_TARGET_S:g} s: "
        f"{_met(fast)}); in a process of its own, `import imgvec.library` took "
        f"{_s(noop['child']['import_s'])} s and the add itself {_s(noop['child']['add_s'])} s, "
        "and "
        + (
            "it imported neither torch nor FAISS (no model loaded: " + _met(True) + ")"
            if no_model
            else f"it imported {', '.join(imported)} (no model loaded: {_met(False)})"
        )
        + _below(noop["files"], NOOP_TARGET_FILES)
        + f". The first add, which embedded them, ran at "
        f"{noop['files'] / noop['populate_s']:.0f} images/s and peaked at "
        f"{_mib(noop['populate_rss'])} MiB of RSS."
    )


def query_verdict(query: dict[str, Any]) -> str:
    notes = []
    for row in query["models"]:
        batch = row["batch"]
        parts, wall, rest = cold_medians(row["cold"])
        biggest, spent = max([*parts.items(), ("rest", rest)], key=lambda item: item[1])
        per_query = batch["wall"] / batch["n"]
        index_ms = _ms(parts.get("index_load", 0.0) + parts.get("search", 0.0))
        rest_note = _rest_note(rest, query["startup"], row["exit_s"])
        notes.append(
            f"`{row['model']}`: a cold query takes {_s(wall)} s, most of it {biggest} "
            f"({_s(spent)} s){rest_note}; the index part "
            f"(open + search) is {index_ms} ms; a batched query costs {_s(per_query)} s, "
            f"{wall / per_query:.1f}x less than a cold one{_batch_note(parts, batch)}"
        )
    return "Query latency: " + "; ".join(notes) + "."


def cold_medians(runs: Sequence[dict[str, Any]]) -> tuple[dict[str, float], float, float]:
    """Median of each ``--timings`` part, of the wall time, and of the rest (wall - parts)."""
    wall = statistics.median(run["wall"] for run in runs)
    rest = statistics.median(run["wall"] - sum(run["parts"].values()) for run in runs)
    return _median_parts(runs), wall, rest


def _batch_note(parts: dict[str, float], batch: dict[str, Any]) -> str:
    single, together = parts.get("embed"), batch["parts"].get("embed")
    if not single or not together:
        return ""
    gain = single / (together / batch["n"])
    return (
        f"; in one call of {batch['n']} queries the forward pass costs "
        f"{_s(together / batch['n'])} s per query, {gain:.1f}x less than alone "
        f"({'batched' if gain > 1 else 'no gain from batching'})"
    )


def _rest_note(rest: float, startup: dict[str, float], exit_s: float) -> str:
    """What the rest of a cold query (outside ``--timings``) is made of, measured apart."""
    known = sum(value for name, value in startup.items() if name != "imgvec.embed")
    return (
        f"; the rest ({_s(rest)} s) is the interpreter's start with the imports other than "
        f"torch's ({_s(known)} s), its exit after the answer ({_s(exit_s)} s), opening the "
        "database and reading the photo (separate measurements: they add up only roughly)"
    )


def memory_verdict(memory: dict[str, Any]) -> str:
    dim, files = memory["dim"], memory["files"]
    vector_per_10k = 10_000 * dim * 4
    growth = _growth(memory["ingest"])
    stop = (
        f"; the ingest passed the {_mib(memory['rss_limit'])} MiB safety limit after "
        f"{_n(memory['stopped_at'])} of {_n(files)} images"
        if memory["stopped_at"] is not None
        else ""
    )
    notes = []
    if growth is None:
        notes.append(
            f"Memory while adding {_n(files)} images: too few batches to measure a growth{stop} "
            f"(bounded: {_met(False) if stop else 'not measured'})"
        )
    else:
        images, grown, start = growth
        per_10k = grown / images * 10_000
        bounded = not stop and per_10k < BOUNDED_SHARE * vector_per_10k
        notes.append(
            f"Memory while adding {_n(files)} images: from {_n(start)} images on, RSS grew "
            f"{per_10k / MIB:,.1f} MiB per 10,000 images ({grown / images / 1024:,.1f} KiB per "
            f"image), {_times(per_10k / vector_per_10k)} what their {dim}-d vectors weigh "
            f"({vector_per_10k / MIB:.1f} MiB){stop} (bounded, i.e. under "
            f"{BOUNDED_SHARE:.0%} of the vectors' size: {_met(bounded)})"
            + _below(files, MEMORY_TARGET_FILES)
        )
        ingest = memory["ingest"]
        if memory["stopped_at"] is None and ingest["build_peak"] is not None:
            notes.append(build_note(ingest, memory["search"]["vectors"] * dim * 4))
    for label, search in (("", memory["search"]), (" after a delta", memory["search_delta"])):
        p50, p50_one = search["store"]["p50_ms"], search["store_one"]["p50_ms"]
        fast = min(p50, p50_one) <= WELL_UNDER * SEARCH_TARGET_MS
        accurate = search["recall"] >= TARGET_RECALL
        notes.append(
            f"search{label} on {_n(search['vectors'])} vectors ({search['kind']}, "
            f"{search['segments']} segment{'s' if search['segments'] != 1 else ''}): p50 "
            f"{p50:.2f} ms on {search['threads']} FAISS threads, {p50_one:.2f} ms on one "
            f"({search['faiss_one']['p50_ms']:.2f} ms of it in FAISS) "
            f"at recall@10 {search['recall']:.3f} (target p50 well under "
            f"{SEARCH_TARGET_MS:g} ms, here at most {WELL_UNDER * SEARCH_TARGET_MS:g} ms at the "
            f"faster thread setting, at recall@10 at least {TARGET_RECALL}: "
            f"{_met(fast and accurate)})" + _below(search["vectors"], MEMORY_TARGET_FILES)
        )
    return "; ".join(notes) + "."


def build_note(ingest: dict[str, Any], vector_bytes: int) -> str:
    extra = ingest["build_peak"] - ingest["loop_end_rss"]
    if extra <= 0:
        return (
            f"the index build after the loop did not take RSS above the loop's end "
            f"({_mib(ingest['loop_end_rss'])} MiB; sampled peak after it "
            f"{_mib(ingest['build_peak'])} MiB)"
        )
    return (
        f"the index build after the loop took RSS {_mib(extra)} MiB above the loop's end, "
        f"{extra / vector_bytes:.1f}x the library's vectors ({_mib(vector_bytes)} MiB)"
    )


def noise_note(results: dict[str, Any]) -> str:
    busy = [
        f"{part} ({results[part]['other_cores']:.2f} cores)"
        for part in PARTS
        if part in results and (results[part]["other_cores"] or 0.0) > NOISY_CORES
    ]
    if not busy:
        return ""
    return (
        f"Other processes used more than {NOISY_CORES:g} cores during some parts, whose "
        f"timings are therefore pessimistic: {', '.join(busy)}."
    )


def machine_line(runtime_s: float, other_cores: float | None) -> str:
    cpus = os.cpu_count() or 1
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    others = (
        ""
        if other_cores is None
        else f" Other processes kept {other_cores:.2f} of the {cpus} cores busy on average "
        "during the run (`/proc/stat` minus this process and its children)."
    )
    return (
        f"- Run {when}, {runtime_s / 60:.1f} minutes in all. Machine: {cpus} CPUs "
        f"(`os.cpu_count()`), torch {_version('torch')}, faiss {_version('faiss-cpu')}, "
        f"Python {sys.version.split()[0]}.{others}"
    )


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def section(command: str, results: dict[str, Any], runtime_s: float, other: float | None) -> str:
    lines = [
        START_MARKER,
        "## Scale: ingest at the speed of the model, query at the speed of the index",
        "",
        "```sh",
        command,
        "```",
        "",
        machine_line(runtime_s, other),
        "",
    ]
    verdicts = []
    if "noop" in results:
        lines += noop_section(results["noop"])
        verdicts.append(noop_verdict(results["noop"]))
    if "query" in results:
        lines += query_section(results["query"])
        verdicts.append(query_verdict(results["query"]))
    if "memory" in results:
        lines += memory_section(results["memory"])
        verdicts.append(memory_verdict(results["memory"]))
    verdicts.append(noise_note(results))
    lines += ["**Interpretation.** " + " ".join(v for v in verdicts if v), END_MARKER]
    return "\n".join(lines)


def write_section(out: Path, text: str) -> None:
    # bench_models imports torch: only here, after every measurement.
    from benchmarks.bench_models import HEADER

    report.write_section(out, text, START_MARKER, END_MARKER, HEADER)


# --- main ----------------------------------------------------------------------------------------


def _default_rss_limit_mb() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2 // MIB


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_scale", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--parts", default=",".join(PARTS), help="comma-separated (default: %(default)s)"
    )
    parser.add_argument("--noop-files", type=int, default=NOOP_TARGET_FILES)
    parser.add_argument("--memory-files", type=int, default=MEMORY_TARGET_FILES)
    parser.add_argument(
        "--extra-files", type=int, default=1000, help="added after the memory part's ingest"
    )
    parser.add_argument("--queries", type=int, default=500, help="search queries (memory part)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of noop add and query")
    parser.add_argument(
        "--models", default="vit_b_16,mobilenet_v2", help="query part (default: %(default)s)"
    )
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="query part's photos")
    parser.add_argument(
        "--tmp",
        type=Path,
        help="where the temporary folder of generated files and libraries goes (it is removed "
        "at the end; default: the system's)",
    )
    parser.add_argument(
        "--rss-limit-mb",
        type=int,
        default=_default_rss_limit_mb(),
        help="stop the memory part's ingest if RSS passes this (default: half the RAM, "
        "%(default)s)",
    )
    parser.add_argument("--out", type=Path, help="write the section into this markdown file")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)  # internal: MODE ARGS...
    args = parser.parse_args(argv)
    args.parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    if unknown := set(args.parts) - set(PARTS):
        parser.error(f"unknown parts: {', '.join(sorted(unknown))} (choose from {PARTS})")
    if min(args.noop_files, args.memory_files, args.queries, args.repeats) < 1:
        parser.error("sizes, --queries and --repeats must be at least 1")
    args.photos = args.photos if args.photos.is_absolute() else REPO / args.photos
    return args


def run_as_child(args: argparse.Namespace) -> int:
    mode, *paths = args.child
    if mode == "noop":
        result = child_noop(*paths)
    elif mode == "imports":
        result = child_imports()
    elif mode == "cli":
        result = child_cli(*paths)
    elif mode == "run":
        result = child_run(*paths)
    elif mode == "memory":
        result = child_memory(*paths, queries=args.queries, limit_mb=args.rss_limit_mb)
    else:
        raise SystemExit(f"unknown child mode {mode!r}")
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return run_as_child(args)
    if not IMGVEC.is_file():
        raise SystemExit(f"no imgvec console script at {IMGVEC}; pip install -e . first")
    started = time.perf_counter()
    run_cpu = CpuMeter()
    command = shlex.join([*COMMAND.split(), *(sys.argv[1:] if argv is None else argv)])
    runners = {"noop": run_noop, "query": run_query, "memory": run_memory}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=args.tmp) as temporary:
        for part in PARTS:
            if part in args.parts:
                results[part] = runners[part](args, Path(temporary))
    runtime = time.perf_counter() - started
    text = section(command, results, runtime, run_cpu.other_cores())
    print(text)
    if args.out is not None:
        write_section(args.out, text)
        _log(f"wrote {args.out}")
    _log(f"done in {runtime:.0f} s")
    return 0


def _log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
