"""Running a benchmark script at a tiny size, for the smoke tests (``tests/test_benchmarks_*.py``):
the scripts still run (nothing downloads: random weights, or the real ones in shared/eval), and
what they measure holds up, so that BENCHMARKS.md can be reproduced. Split over several files so
that the test workers (whole files each) share them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
UKBENCH = ROOT.parent / "shared" / "eval" / "ukbench140" / "images"
PROSE = "Hand-written prose stays.\n"


def run_benchmark(module: str, tmp_path: Path, *arguments: str) -> tuple[str, Any]:
    """Run ``python -m module ... --out B.md --json b.json`` into a file that already holds prose
    and a stale table; the file's text and the measurements."""
    script = module.rsplit(".", 1)[1]
    out, raw = tmp_path / "B.md", tmp_path / "b.json"
    out.write_text(
        f"# Benchmarks\n\n{PROSE}\n<!-- {script}:run -->\nstale\n<!-- /{script}:run -->\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", module, *arguments, "--out", str(out), "--json", str(raw)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert PROSE in text and "stale" not in text and text.count(f"<!-- {script}:run -->") == 1
    assert f".venv/bin/python -m {module}" in text
    return text, json.loads(raw.read_text())


def rows(text: str, block: str) -> list[list[str]]:
    """The cells of a generated table's rows (header and separator left out)."""
    section = text[text.index(f"<!-- {block} -->") : text.index(f"<!-- /{block} -->")]
    lines = [line for line in section.splitlines() if line.startswith("| ")][2:]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def random_photos(folder: Path, count: int = 6) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for number in range(count):
        pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"photo{number}.jpg")
    return folder


def ukbench_photos(folder: Path, count: int = 8) -> Path:
    """The first ``count`` UKBench photos (two objects, four views each)."""
    if not UKBENCH.is_dir():
        pytest.skip("no shared/eval/ukbench140")
    folder.mkdir()
    for number in range(count):
        shutil.copy(UKBENCH / f"ukbench{number:05d}.jpg", folder)
    return folder
