"""Memory and time to prepare one image for a model, by shape and kind (issue 11).

Each case runs in a fresh interpreter: imports, a warm-up on a small photo, then the peak
resident memory (``getrusage``) before and after ``embed.pixels.prepare`` of the case's file;
``--whole-resize`` (the default) also measures the recipe before issue 11 (resize the whole
picture, then crop) on the lines where it is affordable. BENCHMARKS.md says what the table means.

    .venv/bin/python -m benchmarks.bench_decode --out BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import common

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


def write_case(folder: Path, size: tuple[int, int], mode: str, fmt: str) -> Path:
    """A seeded noise image of ``size`` in ``mode``, saved as ``fmt``."""
    import numpy as np
    from PIL import Image

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


def child_prepare(task: dict[str, Any]) -> dict[str, Any]:
    from imgvec.decode.images import decode
    from imgvec.embed.pixels import prepare
    from imgvec.embed.spec import Preprocess

    prep = Preprocess(resize=256, crop=224)
    prepare(Path(task["warm"]).read_bytes(), prep)  # warm-up: lazy imports, allocator
    data = Path(task["path"]).read_bytes()
    before = common.peak_rss()
    started = time.perf_counter()
    if task["recipe"] == "whole":
        from torchvision.transforms.v2 import functional as F

        image = F.resize(decode(data).image, [prep.resize], F.InterpolationMode.BILINEAR)
        F.center_crop(image, [prep.crop, prep.crop])
    else:
        prepare(data, prep)
    seconds = time.perf_counter() - started
    return {"mib": (common.peak_rss() - before) / common.MIB, "seconds": seconds, "base": before}


def measure(cases: Sequence[tuple[str, tuple[int, int], str, str]], whole: bool) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="imgvec-bench-decode-") as scratch:
        warm = write_case(Path(scratch), (64, 48), "RGB", "JPEG")
        for name, size, mode, fmt in cases:
            path = write_case(Path(scratch), size, mode, fmt)
            task = {"kind": "prepare", "warm": str(warm), "path": str(path), "recipe": "prepare"}
            row = {"case": name, "kind": f"{fmt} {mode}", "file_bytes": path.stat().st_size}
            row["now"] = common.run_child("benchmarks.bench_decode", task, timeout=600)
            if whole and min(size) == 1 and max(size) <= WHOLE_RESIZE_MAX_PIXELS:
                task["recipe"] = "whole"
                row["whole"] = common.run_child("benchmarks.bench_decode", task, timeout=600)
            rows.append(row)
    return rows


def decode_table(rows: Sequence[dict[str, Any]]) -> str:
    return common.table(
        "image | kind | file | peak MiB above baseline | seconds | whole-image resize (the recipe "
        "before issue 11) | baseline MiB",
        (
            f"{row['case']} | {row['kind']} | {row['file_bytes'] / 1024:.0f} KiB "
            f"| {row['now']['mib']:.0f} | {row['now']['seconds']:.3f} | "
            + (
                f"{row['whole']['mib']:.0f} MiB, {row['whole']['seconds']:.2f} s"
                if "whole" in row
                else "-"
            )
            + f" | {row['now']['base'] / common.MIB:.0f}"
            for row in rows
        ),
        "llrrrlr",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cases", help="comma-separated case names (default: all)")
    parser.add_argument("--no-whole-resize", action="store_true", help="skip the old recipe")
    common.report_args(parser)
    args = parser.parse_args(argv)
    if args.child:
        return common.child_main({"prepare": child_prepare}, args.child)
    started, meter = time.perf_counter(), common.CpuMeter()
    wanted = set(args.cases.split(",")) if args.cases else {case[0] for case in CASES}
    rows = measure([c for c in CASES if c[0] in wanted], whole=not args.no_whole_resize)
    run = common.run_line(common.command_line("benchmarks.bench_decode", argv), started, meter)
    common.publish("bench_decode", {"run": run, "table": decode_table(rows)}, rows, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
