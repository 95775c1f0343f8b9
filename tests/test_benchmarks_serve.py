"""The serving benchmark at a tiny size (tests/benchmark_runs.py runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmark_runs import rows, run_benchmark


def test_serve_benchmark(tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    text, raw = run_benchmark(
        "benchmarks.bench_serve",
        tmp_path,
        *("--base", "24", "--gone", "4", "--add", "6", "--clients", "2", "--seconds", "0"),
        *("--after", "1"),
        *("--queries", "5", "--upload-every", "2", "--tmp", str(tmp_path)),
    )
    load = raw["load"]
    assert load["errors"] == 0 and load["added"] == 6 and load["removed"] == 4
    assert load["removed_returned"] == 0 and load["requests"] > 0
    assert load["uploads_found_first"] == load["uploads_after_add"]
    assert len(rows(text, "bench_serve:load")) == 5
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("bench-serve-")] == []
