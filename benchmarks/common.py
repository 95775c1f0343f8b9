"""What the benchmarks share: timing, memory, the machine, fresh interpreters, the report, and the
model measurements that bench_models and bench_ingest both make. Every helper exists once, here.

Report: a script prints its tables, each between ``<!-- SCRIPT:TABLE -->`` and
``<!-- /SCRIPT:TABLE -->``; with ``--out FILE`` it replaces those blocks in FILE (appending any that
are missing) and leaves everything else, the hand-written prose, as it is; with ``--json FILE`` it
saves its measurements.

Only the standard library is imported at the top: bench_scale's children time ``import imgvec.api``
from a clean start and check which heavy modules imgvec imports.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from imgvec.embed.runtime import Embedder
    from imgvec.embed.spec import Preprocess

REPO = Path(__file__).resolve().parent.parent
SHARED_EVAL = REPO.parent / "shared" / "eval"
UKBENCH = SHARED_EVAL / "ukbench140" / "images"
GROUNDTRUTH = SHARED_EVAL / "ukbench140" / "groundtruth.csv"
MOBILENET_WEIGHTS = SHARED_EVAL / "weights" / "mobilenet_v2-imagenet-dequantized.pth"
RESULT_PREFIX = "BENCH-RESULT "
MIB, GIB = 1 << 20, 1 << 30
WARMUP_QUERIES = 3
ADD_BATCH = 32
"""``Library.add``'s default ``batch_size`` (``imgvec add --batch-size``)."""


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# --- timing --------------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default method)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * p / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latencies(search_one: Callable[[Any], Any], queries: Any) -> tuple[dict[str, float], list[Any]]:
    """p50/p99 ms of single queries (``search_one(query[None, :])`` returns ids), after
    :data:`WARMUP_QUERIES` unrecorded ones; and each query's ids."""
    for query in queries[:WARMUP_QUERIES]:
        search_one(query[None, :])
    times, found = [], []
    for query in queries:
        started = time.perf_counter()
        ids = search_one(query[None, :])
        times.append(time.perf_counter() - started)
        found.append(ids[0])
    return {"p50_ms": percentile(times, 50) * 1e3, "p99_ms": percentile(times, 99) * 1e3}, found


@contextmanager
def faiss_threads(count: int) -> Any:
    """FAISS's OpenMP and every BLAS (NumPy's re-ranking, FAISS's) on ``count`` threads
    meanwhile, through threadpoolctl (one is steadier on a busy machine)."""
    import faiss  # loaded first, so that its OpenMP and BLAS are among the pools limited
    from threadpoolctl import threadpool_limits

    with threadpool_limits(count):
        faiss.omp_set_num_threads(count)
        yield


def thread_latencies(
    search_one: Callable[[Any], Any], queries: Any, one_thread: int | None = None
) -> tuple[dict[str, float], list[Any]]:
    """:func:`latencies` on FAISS's default threads, then on one (the first ``one_thread``
    queries): ``p50_1t_ms``, ``p99_1t_ms``, ``queries_1t``."""
    timed, found = latencies(search_one, queries)
    with faiss_threads(1):
        single, _ = latencies(search_one, queries[:one_thread])
    timed.update(p50_1t_ms=single["p50_ms"], p99_1t_ms=single["p99_ms"])
    return {**timed, "queries_1t": len(queries[:one_thread])}, found


def timed_run(command: Sequence[str], timeout: float) -> tuple[float, subprocess.CompletedProcess]:
    """A fresh process, timed from start to exit (interpreter start and imports included)."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(
            f"{shlex.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}"
        )
    return wall, done


# --- memory --------------------------------------------------------------------------------------


def rss(field: str = "VmRSS") -> int:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in bytes; 0 where there is none."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rss(children: bool = False) -> int:
    """``ru_maxrss`` in bytes: of this process, or of its largest finished child."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss * 1024  # KiB on Linux


class RssSampler:
    """A thread that records (seconds since start, ``field`` of /proc/self/status in bytes) every
    ``every`` seconds: VmRSS, or RssAnon for memory the process allocated (mapped files left
    out)."""

    def __init__(self, every: float, field: str = "VmRSS") -> None:
        self.every = every
        self.field = field
        self.samples: list[tuple[float, int]] = []
        self.started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def start(self) -> None:
        self.started = time.perf_counter()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.samples.append((self.elapsed(), rss(self.field)))
            if self._stop.wait(self.every):
                return


# --- the machine ---------------------------------------------------------------------------------


def _machine_busy_s() -> float | None:
    """CPU seconds all processes used since boot (user, nice, system, irq, softirq, steal)."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(value) for value in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(fields[:3]) + sum(fields[5:8])) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class CpuMeter:
    """The CPU other processes used since creation (``/proc/stat``, Linux): this process and its
    finished children count as ours."""

    def __init__(self) -> None:
        self.wall, self.busy, self.own = time.perf_counter(), _machine_busy_s(), _own_cpu_s()

    def other_cores(self) -> float | None:
        busy = _machine_busy_s()
        if busy is None or self.busy is None:
            return None
        others = (busy - self.busy) - (_own_cpu_s() - self.own)
        return max(0.0, others / (time.perf_counter() - self.wall))


def wait_for_quiet(threshold: float, max_wait: float) -> float | None:
    """Wait (up to ``max_wait`` s) for a second in which other processes use at most
    ``threshold`` cores; what the last second measured (None without /proc/stat)."""
    deadline = time.perf_counter() + max_wait
    while True:
        meter = CpuMeter()
        time.sleep(1.0)
        others = meter.other_cores()
        if others is None or others <= threshold or time.perf_counter() >= deadline:
            return others


def machine() -> dict[str, Any]:
    """What the machine is (no heavy imports: package versions from their metadata)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if "model name" in line)
    except (OSError, StopIteration):
        pass
    import sqlite3

    box = {"cpus": os.cpu_count(), "cpu": cpu, "python": sys.version.split()[0]}
    box.update(ram_gb=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB)
    for package in ("torch", "faiss-cpu", "numpy"):
        try:
            box[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            box[package] = "(not installed)"
    return {**box, "sqlite": sqlite3.sqlite_version, "os": platform.platform(terse=True)}


# --- fresh interpreters --------------------------------------------------------------------------


def run_child(
    module: str,
    task: dict[str, Any],
    *,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """``python -m MODULE --child TASK`` in a fresh interpreter (see :func:`child_main`); the
    dict it printed. Its stderr passes through unless ``quiet`` (then shown only on failure)."""
    done = subprocess.run(
        [sys.executable, "-m", module, "--child", json.dumps(task)],
        cwd=REPO,
        env=None if env is None else {**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if quiet else None,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise SystemExit(
            f"{module} child {task.get('kind')} failed (exit {done.returncode}):\n"
            f"{done.stdout[-3000:]}{(done.stderr or '')[-3000:]}"
        )
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def run_quietly(
    module: str,
    task: dict[str, Any],
    quiet: float,
    max_wait: float,
    attempts: int = 1,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """:func:`run_child` after waiting for a quiet machine, with ``other_cores`` (what other
    processes used meanwhile) and ``attempts``; measured again, up to ``attempts`` times, while
    others used more than ``quiet`` cores, keeping the quietest."""
    best: dict[str, Any] | None = None
    for attempt in range(1, attempts + 1):
        wait_for_quiet(quiet, max_wait)
        meter = CpuMeter()
        result = run_child(module, task, env=env)
        result.update(other_cores=meter.other_cores(), attempts=attempt)
        if best is None or (result["other_cores"] or 0.0) < (best["other_cores"] or 0.0):
            best = result
        if (result["other_cores"] or 0.0) <= quiet:
            break
        log(f"other processes used {result['other_cores']:.2f} cores meanwhile")
    assert best is not None
    return best


def child_main(children: dict[str, Callable[[dict[str, Any]], dict[str, Any]]], task: str) -> int:
    """In the child: run ``children[task["kind"]](task)`` and print its result line."""
    spec = json.loads(task)
    print(RESULT_PREFIX + json.dumps(children[spec["kind"]](spec)), flush=True)
    return 0


# --- the report ----------------------------------------------------------------------------------


def report_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, help="replace this script's tables in this markdown")
    parser.add_argument("--json", type=Path, help="save the measurements as JSON here")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: a task, as JSON


def command_line(module: str, argv: Sequence[str] | None) -> str:
    return shlex.join([".venv/bin/python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def table(header: str, rows: Iterable[str], align: str = "l") -> str:
    """A markdown table of ``" | "``-separated cells; ``align`` gives each column's alignment
    (``l``/``r``), its last letter standing for the remaining columns."""
    count = header.count(" | ") + 1
    marks = ("---:" if (align[i:] or align[-1])[0] == "r" else "---" for i in range(count))
    return "\n".join(f"| {line} |" for line in [header, " | ".join(marks), *rows])


def run_line(command: str, started: float, meter: CpuMeter, **facts: Any) -> str:
    """The run's command, date, duration, machine and noise, as one bullet."""
    box = machine()
    others = meter.other_cores()
    extra = "".join(f"; {key.replace('_', ' ')} {value}" for key, value in facts.items())
    return (
        f"- `{command}`: run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{(time.perf_counter() - started) / 60:.1f} minutes. Machine: {box['cpus']} CPUs "
        f"({box['cpu']}), {box['ram_gb']:.1f} GB RAM, torch {box['torch']}, faiss "
        f"{box['faiss-cpu']}, numpy {box['numpy']}, Python {box['python']}, SQLite "
        f"{box['sqlite']}{extra}. Other processes kept "
        f"{'unknown' if others is None else f'{others:.2f}'} cores busy on average."
    )


def publish(script: str, tables: dict[str, str], results: Any, args: argparse.Namespace) -> None:
    """Print the tables between their markers; ``--out``: put them in that file; ``--json``."""
    blocks = {
        name: f"<!-- {script}:{name} -->\n{text}\n<!-- /{script}:{name} -->"
        for name, text in tables.items()
    }
    print("\n\n".join(blocks.values()))
    if args.out is not None:
        text = args.out.read_text() if args.out.exists() else "# Benchmarks\n"
        for name, block in blocks.items():
            start, end = f"<!-- {script}:{name} -->", f"<!-- /{script}:{name} -->"
            pattern = re.compile(f"^{re.escape(start)}$.*?^{re.escape(end)}$", re.M | re.S)
            found = pattern.search(text)
            if found:
                text = text[: found.start()] + block + text[found.end() :]
            else:
                text = text.rstrip("\n") + "\n\n" + block + "\n"
        temporary = args.out.with_name(f".{args.out.name}.tmp")
        temporary.write_text(text)
        os.replace(temporary, args.out)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))


def num(value: float | None, digits: int | str = 1, suffix: str = "", none: str = "—") -> str:
    """``value`` with ``digits`` decimals (or a format spec such as ``","``)."""
    if value is None:
        return none
    return f"{value:{digits if isinstance(digits, str) else f'.{digits}f'}}{suffix}"


def active_version(index: Any) -> Any:
    """The active version's ``IndexVersionInfo`` of an ``IndexStore`` (kind, params, segments)."""
    return index.info(index.active()[0])


def index_params(params: dict[str, Any]) -> str:
    if "nlist" not in params:
        return "-"
    return f"{params['nlist']} / {params['nprobe']}" + (
        f", m={params['m']}" if "m" in params else ""
    )


def secs(seconds: float) -> str:
    """3 significant-ish digits: 0.123, 1.23, 123."""
    return (
        f"{seconds:.3f}" if seconds < 1 else f"{seconds:.2f}" if seconds < 10 else f"{seconds:.0f}"
    )


def millis(seconds: float) -> str:
    value = seconds * 1e3
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


# --- models (bench_models, bench_ingest) ---------------------------------------------------------


def photos_in(folder: Path) -> list[Path]:
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not photos:
        raise SystemExit(f"no photos in {folder}")
    return photos


def read_groundtruth(path: Path) -> dict[str, int] | None:
    """filename -> UKBench group (``groundtruth.csv``); None without the file."""
    import csv

    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        return {row["filename"]: int(row["group_id"]) for row in csv.DictReader(handle)}


def offline_weights(model: str, mobilenet_weights: Path) -> tuple[str, str] | None:
    """The ``weights=`` value and a label, for the models whose real weights need no download."""
    if model == "efficientnet_lite0":
        return "default", "ImageNet (installed package)"
    if model == "mobilenet_v2" and mobilenet_weights.is_file():
        return str(mobilenet_weights), "ImageNet (shared/eval file)"
    return None


def forward_throughput(
    embedder: Embedder, batch: int, warmup: int, min_batches: int, min_seconds: float
) -> tuple[float, float]:
    """Images/s of the bare model on a pre-made random batch (the median batch time after
    ``warmup`` batches, over at least ``min_batches`` batches and ``min_seconds``, at most 30
    batches), and the minor page faults per image over the timed batches."""
    import torch

    crop = embedder.spec.preprocess.crop
    inputs = torch.randn(batch, 3, crop, crop, generator=torch.Generator().manual_seed(0))
    for _ in range(warmup):
        embedder.embed_tensors(inputs)
    times: list[float] = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started = time.perf_counter()
    while len(times) < min_batches or (
        time.perf_counter() - started < min_seconds and len(times) < 30
    ):
        begin = time.perf_counter()
        embedder.embed_tensors(inputs)
        times.append(time.perf_counter() - begin)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return batch / statistics.median(times), faults / (batch * len(times))


def prepare_photo(path: Path, prep: Preprocess) -> None:
    """What ``add`` does per photo besides the model: read, hash, decode (JPEGs at reduced
    size), preprocess."""
    from imgvec.decode.images import read_file
    from imgvec.embed.pixels import prepare
    from imgvec.scan import sha256_bytes

    data = read_file(str(path))
    sha256_bytes(data)
    prepare(data, prep)


def time_calls(runner: Any) -> list[float]:
    """How long each ``embed_inputs`` call of this runner (a torch ``Embedder`` or an
    ``OnnxEmbedder``) takes, recorded from now on (the library's cached runner is the one
    ``add`` uses)."""
    times: list[float] = []
    method = runner.embed_inputs

    def timed(batch: Any) -> Any:
        begin = time.perf_counter()
        try:
            return method(batch)
        finally:
            times.append(time.perf_counter() - begin)

    runner.embed_inputs = timed
    return times


def ns_and_map(ranked: np.ndarray, labels: Sequence[int]) -> tuple[float, float]:
    """UKBench N-S score (group members in the top 4, the query included; 4.0 is perfect) and
    mAP of each query's other group members in the ranking of all the rest. ``ranked[q]``: every
    row by decreasing similarity to row ``q`` (``q`` itself included)."""
    import numpy as np

    from imgvec.tools.evaluate import average_precision

    groups = np.asarray(labels)
    ns, aps = 0, []
    for query, order in enumerate(ranked):
        same = groups[order] == groups[query]
        ns += int(same[:4].sum())
        mates = int((groups == groups[query]).sum()) - 1
        if mates:
            aps.append(average_precision(list(same[order != query]), mates))
    return ns / len(groups), float(np.mean(aps)) if aps else 1.0
