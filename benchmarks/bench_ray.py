"""Benchmark for issue 17: ``imgvec add --ray`` against a local ``add``, same model and photos.

    .venv/bin/python -m benchmarks.bench_ray --out BENCHMARKS.md

The photos: the 140 UKBench photos (640x480 JPEG), and mirrored and flipped copies of them
(distinct contents) up to ``--photos``. The model: efficientnet_lite0 with its installed ImageNet
weights, ONNX Runtime fp32 everywhere: each run adds the photos to a copy of a library that holds
one other photo and the model's ONNX export (which the writer sends to the workers), so no run
pays for the export. Ways, each a fresh ``imgvec add`` process timed from start to exit:
``local``; ``ray 1`` and ``ray 2``: a local Ray cluster (``.ci/ray``) with 1 or 2 CPUs, so 1 or 2
worker actors; ``ray 2 --ship-bytes``. The cluster is started before the timing, not counted;
its workers' start (a Python process each, imgvec and torch imported, the model loaded) is.
``--repeats`` rounds, the ways in turn, each run after a quiet second (at most 10 s of waiting);
each way's fastest run is reported, with the cores other processes kept busy in the second
before it (during a Ray run the workers are other processes, so that cannot be told). The
fixed cost of a run: the same ``add`` of one new photo (start, connect, workers, model load).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import common

MODULE = "benchmarks.bench_ray"
MODEL = ["--model", "efficientnet_lite0", "--precision", "fp32"]
WAYS = {
    "local": (0, []),
    "ray 1": (1, []),
    "ray 2": (2, []),
    "ray 2 --ship-bytes": (2, ["--ship-bytes"]),
}
"""Each way: the cluster's CPUs (0: no cluster) and the extra options of ``add``."""


def make_photos(folder: Path, count: int) -> list[Path]:
    """``count`` distinct photos: UKBench's, then mirrored, flipped, and both."""
    from PIL import Image

    folder.mkdir(parents=True)
    sources = common.photos_in(common.UKBENCH)
    if not sources:
        raise SystemExit(f"no UKBench photos in {common.UKBENCH}")
    turns = [None, Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM]
    made: list[Path] = []
    for number in range(count):
        source = sources[number % len(sources)]
        turn = turns[number // len(sources) % len(turns)]
        target = folder / f"{number:04d}.jpg"
        if turn is None:
            shutil.copy(source, target)
        else:
            with Image.open(source) as image:
                image.transpose(turn).save(target, quality=90)
        made.append(target)
    return made


def imgvec(*args: object) -> list[str]:
    return [sys.executable, "-m", "imgvec", *(str(a) for a in args)]


def start_cluster(cpus: int) -> tuple[str, str]:
    """A local cluster from ``.ci/ray`` with ``cpus`` CPUs: its address and its folder."""
    env = {**os.environ, "PYTHON": sys.executable, "IMGVEC_RAY_CPUS": str(cpus)}
    done = subprocess.run(
        [str(common.REPO / ".ci" / "ray")], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f".ci/ray failed: {done.stderr[-2000:]}")
    folder = next(line[5:] for line in done.stderr.splitlines() if line.startswith("ray: "))
    return done.stdout.strip(), folder


def stop_cluster(folder: str) -> None:
    subprocess.run([str(common.REPO / ".ci" / "ray"), "stop", folder], check=False)


def measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from PIL import Image

    photos = make_photos(tmp / "photos", args.photos + 1)
    seed, folder = tmp / "seed", tmp / "photos"
    seed.mkdir()
    photos[-1].rename(seed / photos[-1].name)  # the template library's one photo
    template = tmp / "template"
    common.timed_run(imgvec("add", seed, *MODEL, "--library", template, "-q"), timeout=600)
    with Image.open(photos[0]) as image:  # a new content for the one-photo run
        image.rotate(90, expand=True).save(seed / "one.jpg", quality=90)
    runs: dict[str, list[dict[str, Any]]] = {way: [] for way in WAYS}
    clusters: dict[int, tuple[str, str]] = {}
    try:
        for round_number in range(args.repeats):
            for way, (cpus, extra) in WAYS.items():
                if cpus and cpus not in clusters:
                    for other in list(clusters):  # one cluster at a time: the same 2 cores
                        stop_cluster(clusters.pop(other)[1])
                    clusters[cpus] = start_cluster(cpus)
                library = tmp / f"library-{round_number}-{way.replace(' ', '_')}"
                shutil.copytree(template, library)
                options = ["--ray", clusters[cpus][0], *extra] if cpus else []
                command = imgvec("add", folder, "--library", library, "--json", "-q", *options)
                one = imgvec("add", seed / "one.jpg", "--library", library, "-q", *options)
                others = common.wait_for_quiet(0.3, 10)  # during the run, workers count too
                wall, done = common.timed_run(command, timeout=1800)
                report = json.loads(done.stdout)
                if report["added"] != args.photos or report["runtime"] != "onnxruntime":
                    raise SystemExit(f"{way}: unexpected report {report}")
                fixed, _ = common.timed_run(one, timeout=600)
                runs[way].append(
                    {"wall_s": wall, "images_per_s": args.photos / wall, "other_cores": others,
                     "one_photo_s": fixed}
                )  # fmt: skip
                common.log(f"{way}: {wall:.1f} s, {args.photos / wall:.1f} images/s")
                shutil.rmtree(library)
    finally:
        for _address, cluster in clusters.values():
            stop_cluster(cluster)
    best = {way: min(r, key=lambda run: run["wall_s"]) for way, r in runs.items()}
    return {"photos": args.photos, "runs": runs, "best": best}


def tables(results: dict[str, Any], run_line: str) -> dict[str, str]:
    best = results["best"]
    local = best["local"]["images_per_s"]
    rows = (
        f"`{way}` | {WAYS[way][0] or '—'} | {r['wall_s']:.1f} | {r['images_per_s']:.1f} "
        f"| {r['images_per_s'] / local:.2f}x | {common.num(r['other_cores'], 2)} "
        f"| {r['one_photo_s']:.1f}"
        for way, r in best.items()
    )
    header = (
        f"way | Ray workers | seconds ({results['photos']} photos) | images/s | vs local "
        "| other processes' cores, the second before | seconds for 1 photo"
    )
    return {"run": run_line, "speed": common.table(header, rows, "lr")}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--photos", type=int, default=420, help="photos added by each run")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of all the ways")
    parser.add_argument("--tmp", type=Path, help="folder for temporary data (default: system)")
    common.report_args(parser)
    args = parser.parse_args(argv)
    started, meter = time.perf_counter(), common.CpuMeter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-", dir=args.tmp))
    try:
        results = measure(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    line = common.run_line(common.command_line(MODULE, argv), started, meter, repeats=args.repeats)
    common.publish("bench_ray", tables(results, line), results, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
