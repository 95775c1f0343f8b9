"""The benchmark scripts still run (a tiny size), so BENCHMARKS.md can always be reproduced."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_index_benchmark_runs_and_writes_its_section(tmp_path: Path) -> None:
    out = tmp_path / "BENCH.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_index",
            "--sizes",
            "2000",
            "--dim",
            "32",
            "--queries",
            "50",
            "--kinds",
            "flat,ivf",
            "--out",
            str(out),
            "--tmp",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "<!-- index:start -->" in text and "<!-- index:end -->" in text
    assert "| 2k | flat |" in text or "2,000" in text or "2000" in text
