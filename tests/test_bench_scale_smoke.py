"""The scale benchmark still runs, every part at tiny sizes, so its BENCHMARKS.md section can always
be reproduced. Random weights only: nothing downloads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
TABLE_HEADERS = (
    "| files | first add (embeds) |",  # noop
    "| model | cold runs | wall |",  # query, cold and batched
    "| interpreter start |",  # query, what the rest holds
    "| ingested | images | RSS MiB |",  # memory, RSS while adding
    "| ingest img/s |",  # memory, peaks
    "| library | vectors | index |",  # memory, search before and after a delta
)


def _photos(folder: Path, count: int = 6) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for number in range(count):
        pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"photo{number}.jpg")
    return folder


def test_scale_benchmark_runs_every_part_and_writes_its_section(tmp_path: Path) -> None:
    out = tmp_path / "B.md"
    out.write_text("# Benchmarks\n\nAnother section stays.\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_scale",
            *("--noop-files", "40", "--memory-files", "300", "--extra-files", "20"),
            *("--queries", "20", "--repeats", "1", "--models", "mobilenet_v2"),
            *("--photos", str(_photos(tmp_path / "photos"))),
            *("--tmp", str(tmp_path), "--out", str(out)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "Another section stays." in text
    assert text.count("<!-- scale:start -->") == 1 and text.count("<!-- scale:end -->") == 1
    assert ".venv/bin/python -m benchmarks.bench_scale --noop-files 40" in text
    for header in TABLE_HEADERS:
        assert header in text, header
    assert "| `mobilenet_v2` | 1 |" in text
    assert "**Interpretation.**" in text
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("bench-scale-")] == []
