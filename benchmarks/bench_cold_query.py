"""Benchmark for issue 15: a cold ``imgvec query``, from process start to exit, with the code
before the torch-free query path beside this checkout's, in one run.

    .venv/bin/python -m benchmarks.bench_cold_query --out BENCHMARKS.md

Per model (``--models``; efficientnet_lite0 with its installed weights, mobilenet_v2 with the
shared weights file, vit_b_16 with random weights, as fast as real ones), for each version (the
commit ``--before`` in a git worktree, first on ``PYTHONPATH``; then this checkout): a library
of the first ``--photos`` UKBench photos made by that version's own ``imgvec add``, then
``--repeats`` fresh processes (medians, after one unrecorded run) of
``python -m imgvec query PHOTO -k 10 --timings``:

- *new photo*: a copy of a library photo in another folder, so it is embedded;
- *stored*: a library photo, answered from its stored vector (no model runs).

Bytecode caching is on (``PYTHONDONTWRITEBYTECODE`` removed), as in any installed package.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import common

MODULE = "benchmarks.bench_cold_query"
MODELS = ("efficientnet_lite0", "mobilenet_v2", "vit_b_16")
BEFORE = "b25e6bc"
"""The last commit before queries ran on ONNX Runtime."""
TARGETS = {"efficientnet_lite0": 1.0, "mobilenet_v2": 1.0, "vit_b_16": 1.5}
"""Issue 15's goals for a new photo, seconds; a stored vector's: 0.5 s."""
STORED_TARGET = 0.5


def _weights(name: str) -> str:
    """Real weights where no download is needed (:func:`common.offline_weights`), else random."""
    return (common.offline_weights(name, common.MOBILENET_WEIGHTS) or ("none", ""))[0]


def _run(code: Path, library: Path, *args: str, timeout: float = 900) -> tuple[float, str]:
    """``python -m imgvec ARGS`` with ``code`` first on the path: (wall seconds, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(code), IMGVEC_LIBRARY=str(library))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "imgvec", *args],
        cwd=code,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"imgvec {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return wall, done.stderr


def _parts(stderr: str) -> dict[str, float]:
    line = next(x for x in stderr.splitlines() if x.startswith("timings (s): "))
    return {k: float(v) for k, v in (t.split("=") for t in line.split(": ", 1)[1].split())}


def measure(
    name: str, version: str, code: Path, photos: list[Path], args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    library = tmp / f"{version}-{name}"
    folder = tmp / "photos"
    common.log(f"{name} ({version}): add {len(photos)} photos")
    add_s, _ = _run(code, library, "add", str(folder), "--model", name, "--weights", _weights(name))
    copy = tmp / "outside" / photos[1].name
    stored = folder / photos[2].name
    result: dict[str, Any] = {"model": name, "version": version, "add_s": add_s}
    for way, photo in (("new", copy), ("stored", stored)):
        common.wait_for_quiet(0.2, 30)
        _run(code, library, "query", str(photo), "-k", "10", "--timings")  # unrecorded
        runs = [
            _run(code, library, "query", str(photo), "-k", "10", "--timings")
            for _ in range(args.repeats)
        ]
        parts = [_parts(stderr) for _, stderr in runs]
        result[way] = {
            "wall": statistics.median(wall for wall, _ in runs),
            "walls": [wall for wall, _ in runs],
            "parts": {k: statistics.median(p.get(k, 0.0) for p in parts) for k in parts[-1]},
        }
    return result


def tables(rows: list[dict[str, Any]], run_line: str, before: str) -> dict[str, str]:
    by = {(r["model"], r["version"]): r for r in rows}
    models = list(dict.fromkeys(r["model"] for r in rows))

    def parts(row: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v:.3f}" for k, v in row["parts"].items())

    walls = common.table(
        f"model | new photo: {before} | new photo: now | now / before | target "
        f"| stored vector: {before} | stored vector: now | target",
        (
            f"`{m}` | {by[m, 'before']['new']['wall']:.2f} s "
            f"| **{by[m, 'now']['new']['wall']:.2f} s** "
            f"| {by[m, 'now']['new']['wall'] / by[m, 'before']['new']['wall']:.2f}x "
            f"| {TARGETS[m]:.1f} s | {by[m, 'before']['stored']['wall']:.2f} s "
            f"| **{by[m, 'now']['stored']['wall']:.2f} s** | {STORED_TARGET:.1f} s"
            for m in models
        ),
        "lr",
    )
    breakdown = common.table(
        "model | query | `--timings` parts now, medians (s)",
        (
            f"`{m}` | {way} | {parts(by[m, 'now'][way])}"
            for m in models
            for way in ("new", "stored")
        ),
        "l",
    )
    return {"run": run_line, "walls": walls, "parts": breakdown}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--before", default=BEFORE, help="the commit to compare with")
    parser.add_argument("--photos", type=int, default=20, help="photos in each library")
    parser.add_argument("--repeats", type=int, default=7, help="fresh processes per query")
    parser.add_argument("--tmp", type=Path, help="folder for temporary data (default: system)")
    common.report_args(parser)
    args = parser.parse_args(argv)
    started, meter = time.perf_counter(), common.CpuMeter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-cold-", dir=args.tmp))
    worktree = tmp / "before"
    try:
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(worktree), args.before],
            cwd=common.REPO,
            check=True,
            capture_output=True,
        )
        photos = sorted(common.UKBENCH.glob("*.jpg"))[: args.photos]
        if len(photos) < 3:
            raise SystemExit(f"needs the UKBench photos in {common.UKBENCH}")
        for folder in ("photos", "outside"):
            (tmp / folder).mkdir()
            for photo in photos:
                shutil.copy(photo, tmp / folder / photo.name)
        rows = [
            measure(name, version, code, photos, args, tmp)
            for name in args.models.split(",")
            if name
            for version, code in (("before", worktree), ("now", common.REPO))
        ]
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(worktree)],
            cwd=common.REPO,
            capture_output=True,
        )
        shutil.rmtree(tmp, ignore_errors=True)
    run_line = common.run_line(
        common.command_line(MODULE, argv), started, meter, cpu_threads=os.cpu_count()
    )
    common.publish("bench_cold_query", tables(rows, run_line, args.before), {"rows": rows}, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
