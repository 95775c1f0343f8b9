"""Memory and time to prepare one image for a model, by shape and kind (issue 11).

Each case runs in a fresh interpreter: imports, a warm-up on a small photo, then the peak
resident memory (``getrusage``) is read before and after ``embed.prepare`` of the case's file.
The difference is what that one image costs; ``--whole-resize`` also measures the recipe before
issue 11 (resize the whole picture, then crop) for the shapes where it is affordable.

    .venv/bin/python -m benchmarks.bench_decode --out BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.machine import CpuMeter
from benchmarks.report import write_section

START, END = "<!-- decode:start -->", "<!-- decode:end -->"
HEADER = "# Benchmarks\n"

CASES: list[tuple[str, tuple[int, int], str, str]] = [
    ("640x480 photo", (640, 480), "RGB", "JPEG"),
    ("12 MP photo", (4000, 3000), "RGB", "JPEG"),
    ("10000x1 line", (10000, 1), "L", "PNG"),
    ("1x60000 line", (1, 60000), "L", "PNG"),
    ("60000x1 line", (60000, 1), "L", "PNG"),
    ("8000x8000 RGBA", (8000, 8000), "RGBA", "PNG"),
    ("8000x8000 16-bit grey", (8000, 8000), "I;16", "PNG"),
]
WHOLE_RESIZE_MAX_PIXELS = 20_000
"""The old recipe is measured only on lines up to this length (a 60000-pixel line took 15 GB)."""

_CHILD = """
import json, resource, sys, time
from imgvec.embed import prepare, preprocess_image
from imgvec.embedders.registry import Preprocess
from imgvec.images import decode
prep = Preprocess(resize=256, crop=224)
prepare(open(sys.argv[1], "rb").read(), prep)  # warm-up: lazy imports, allocator
data = open(sys.argv[2], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if sys.argv[3] == "whole":
    from torchvision.transforms.v2 import functional as F
    image = decode(data).image
    image = F.resize(image, [prep.resize], interpolation=F.InterpolationMode.BILINEAR)
    F.center_crop(image, [prep.crop, prep.crop])
else:
    prepare(data, prep)
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"mib": (after - before) / 1024, "seconds": seconds, "base_mib": before / 1024}))
"""


def write_case(folder: Path, size: tuple[int, int], mode: str, fmt: str) -> Path:
    """A seeded noise image of ``size`` in ``mode``, saved as ``fmt``."""
    rng = np.random.default_rng(0)
    width, height = size
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (height, width), dtype=np.uint16))
    else:
        channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
        pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
        image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)
    path = folder / f"{width}x{height}-{mode.replace(';', '')}.{fmt.lower()}"
    image.save(path, format=fmt)
    return path


def measure(warm: Path, path: Path, recipe: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(warm), str(path), recipe],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(cases: list[tuple[str, tuple[int, int], str, str]], whole_resize: bool) -> str:
    meter = CpuMeter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="imgvec-bench-decode-") as scratch:
        folder = Path(scratch)
        warm = write_case(folder, (64, 48), "RGB", "JPEG")
        for name, size, mode, fmt in cases:
            path = write_case(folder, size, mode, fmt)
            now = measure(warm, path, "prepare")
            old = "-"
            if whole_resize and min(size) == 1 and max(size) <= WHOLE_RESIZE_MAX_PIXELS:
                before = measure(warm, path, "whole")
                old = f"{before['mib']:.0f} MiB, {before['seconds']:.2f} s"
            rows.append(
                f"| {name} | {fmt} {mode} | {path.stat().st_size / 1024:.0f} KiB "
                f"| {now['mib']:.0f} | {now['seconds']:.3f} | {old} | {now['base_mib']:.0f} |"
            )
    busy = meter.other_cores()
    busy_text = "unknown" if busy is None else f"{busy:.2f}"
    table = "\n".join(
        [
            "| image | kind | file | peak MiB above baseline | seconds | whole-image resize "
            "(the recipe before issue 11) | baseline MiB |",
            "|---|---|---:|---:|---:|---|---:|",
            *rows,
        ]
    )
    return (
        f"{START}\n## Preparing one image for a model: memory by shape (issue 11)\n\n"
        "Command: `.venv/bin/python -m benchmarks.bench_decode --out BENCHMARKS.md`. Each row is "
        "a fresh interpreter: the peak resident memory `embed.prepare` (decode, upright, RGB, "
        "resize 256, crop 224) added to the process after a warm-up, at the model size of the "
        "torchvision models. Other cores busy during the run: "
        f"{busy_text}.\n\n{table}\n{END}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="Markdown file to write the section into.")
    parser.add_argument("--cases", help="Comma-separated case names (default: all).", default=None)
    parser.add_argument(
        "--no-whole-resize", action="store_true", help="Skip measuring the old recipe."
    )
    args = parser.parse_args()
    cases = CASES
    if args.cases:
        wanted = set(args.cases.split(","))
        cases = [c for c in CASES if c[0] in wanted]
    section = run(cases, whole_resize=not args.no_whole_resize)
    print(section)
    if args.out:
        write_section(args.out, section, START, END, HEADER)


if __name__ == "__main__":
    main()
