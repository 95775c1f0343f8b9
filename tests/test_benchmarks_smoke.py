"""The benchmark scripts still run (tiny sizes, random weights: nothing downloads), so that
BENCHMARKS.md can always be reproduced."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SCALE_TABLE_HEADERS = (
    "| files | first add (embeds) |",  # noop
    "| model | cold runs | wall |",  # query, cold and batched
    "| interpreter start |",  # query, what the rest holds
    "| ingested | images | RSS MiB |",  # memory, RSS while adding
    "| ingest img/s |",  # memory, peaks
    "| library | vectors | index |",  # memory, search before and after a delta
)


def run_benchmark(module: str, *arguments: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _photos(folder: Path, count: int = 6) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for number in range(count):
        pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"photo{number}.jpg")
    return folder


def test_index_benchmark_runs_and_writes_its_section(tmp_path: Path) -> None:
    out = tmp_path / "BENCH.md"
    run_benchmark(
        "benchmarks.bench_index",
        *("--sizes", "2000", "--dim", "32", "--queries", "50", "--kinds", "flat,ivf"),
        *("--out", str(out), "--tmp", str(tmp_path)),
    )
    text = out.read_text()
    assert "<!-- index:start -->" in text and "<!-- index:end -->" in text
    section = text[text.index("<!-- index:start -->") : text.index("<!-- index:end -->")]
    for kind in ("flat", "ivf"):  # a row per kind in the build and the query tables
        rows = [line for line in section.splitlines() if line.startswith(f"| 2k | {kind} |")]
        assert len(rows) == 2, (kind, rows)


def test_scale_benchmark_runs_every_part_and_writes_its_section(tmp_path: Path) -> None:
    out = tmp_path / "B.md"
    out.write_text("# Benchmarks\n\nAnother section stays.\n")
    run_benchmark(
        "benchmarks.bench_scale",
        *("--noop-files", "40", "--memory-files", "300", "--extra-files", "20"),
        *("--queries", "20", "--repeats", "1", "--models", "mobilenet_v2"),
        *("--photos", str(_photos(tmp_path / "photos"))),
        *("--tmp", str(tmp_path), "--out", str(out)),
    )
    text = out.read_text()
    assert "Another section stays." in text
    assert text.count("<!-- scale:start -->") == 1 and text.count("<!-- scale:end -->") == 1
    assert ".venv/bin/python -m benchmarks.bench_scale --noop-files 40" in text
    for header in SCALE_TABLE_HEADERS:
        assert header in text, header
    assert "| `mobilenet_v2` | 1 |" in text
    assert "**Interpretation.**" in text
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("bench-scale-")] == []


def test_ingest_benchmark_runs_and_writes_its_section(tmp_path: Path) -> None:
    out = tmp_path / "B.md"
    run_benchmark(
        "benchmarks.bench_ingest",
        *("--images", str(_photos(tmp_path / "photos")), "--groundtruth", str(tmp_path / "none")),
        *("--models", "mobilenet_v2", "--precision-models", "mobilenet_v2"),
        *("--large", "2", "--original", "4", "--max-wait", "0"),
        *("--tmp", str(tmp_path), "--out", str(out)),
    )
    text = out.read_text()
    assert text.count("<!-- ingest:start -->") == 1 and text.count("<!-- ingest:end -->") == 1
    assert "| `mobilenet_v2` | UKBench (6) |" in text and "| `mobilenet_v2` | 12 MP (2) |" in text
    assert "**Targets.**" in text


def test_decode_benchmark_runs_and_writes_its_section(tmp_path: Path) -> None:
    out = tmp_path / "BENCH.md"
    run_benchmark(
        "benchmarks.bench_decode",
        *("--cases", "640x480 photo,60000x1 line", "--no-whole-resize", "--out", str(out)),
    )
    text = out.read_text()
    section = text[text.index("<!-- decode:start -->") : text.index("<!-- decode:end -->")]
    rows = [line for line in section.splitlines() if line.startswith(("| 640x480", "| 60000x1"))]
    assert len(rows) == 2, section
    peak_mib = float(rows[1].split("|")[4])
    assert peak_mib < 100  # the long line is resampled only where the crop keeps it
