"""The benchmark scripts still run, at tiny sizes (nothing downloads: random weights, or the real
ones in shared/eval), and what they measure holds up, so that BENCHMARKS.md can be reproduced."""

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


def test_index_benchmark(tmp_path: Path) -> None:
    arguments = ("--sizes", "2000", "--dim", "32", "--queries", "50", "--tmp", str(tmp_path))
    text, raw = run_benchmark("benchmarks.bench_index", tmp_path, *arguments)
    for block in ("bench_index:build", "bench_index:search"):
        assert [row[:2] for row in rows(text, block)] == [
            ["2k", k] for k in ("flat", "ivf", "ivfpq")
        ]
    kinds = {row["kind"]: row for row in raw["sizes"][0]["kinds"]}
    assert kinds["flat"]["recall"] == 1.0  # flat is exact search
    assert all(0.5 <= row["recall"] <= 1.0 and row["p50_ms"] > 0 for row in kinds.values())
    library = raw["sizes"][0]["library"]
    assert library["query_base"]["recall"] == 1.0  # 2,000 vectors: a flat base
    assert library["query_changed"]["removed_returned"] == 0
    assert 0.9 <= library["query_changed"]["recall"] <= 1.0
    assert library["remove"]["rule"]["dead"] == 2000  # 1,000 added + 1,000 removed ids
    assert library["compact"]["operation"] == "compact"
    assert (
        len(rows(text, "bench_index:changes")) == 3 and len(rows(text, "bench_index:queries")) == 2
    )


def test_scale_benchmark(tmp_path: Path) -> None:
    text, raw = run_benchmark(
        "benchmarks.bench_scale",
        tmp_path,
        *("--noop-files", "40", "--memory-files", "300", "--extra-files", "20"),
        *("--queries", "20", "--repeats", "1", "--models", "mobilenet_v2"),
        *("--photos", str(random_photos(tmp_path / "photos")), "--tmp", str(tmp_path)),
    )
    noop = raw["noop"]
    assert noop["child"]["unchanged"] == 40 and not any(noop["child"]["modules"].values())
    assert (
        rows(text, "bench_scale:noop")[0][0] == "40"
        and rows(text, "bench_scale:noop")[0][-1] == "none of them"
    )
    assert [row[:2] for row in rows(text, "bench_scale:query")] == [["`mobilenet_v2`", "1"]]
    assert raw["query"]["models"][0]["batch"]["n"] == 6
    assert len(rows(text, "bench_scale:startup")) == 1
    assert [row[0] for row in rows(text, "bench_scale:memory")] == [
        "10%",
        "25%",
        "50%",
        "75%",
        "100%",
    ]
    assert raw["memory"]["stopped_at"] is None and raw["memory"]["ingest"]["total"] == 300
    search, delta = raw["memory"]["search"], raw["memory"]["search_delta"]
    assert (search["vectors"], delta["vectors"], delta["segments"]) == (300, 320, 2)
    assert 0.95 <= search["recall"] <= 1.0 and 0.95 <= delta["recall"] <= 1.0
    assert len(rows(text, "bench_scale:search")) == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("bench-scale-")] == []


def test_models_benchmark(tmp_path: Path) -> None:
    text, raw = run_benchmark(
        "benchmarks.bench_models",
        tmp_path,
        *("--models", "mobilenet_v2", "--images", str(ukbench_photos(tmp_path / "photos"))),
        *("--malloc-check", "", "--start-wait", "0", "--max-wait", "0", "--attempts", "1"),
        *("--batches", "1", "--min-seconds", "0"),
    )
    (row,) = raw["rows"]
    assert row["weights"] == "ImageNet (shared/eval file)" and row["add"]["images"] == 8
    assert (row["add"]["ns"], row["add"]["map"]) == (4.0, 1.0)  # real weights, two objects
    assert row["forward_ips"] > 0 and 0 < row["add"]["model_s"] < row["add"]["add_s"]
    (cells,) = rows(text, "bench_models:table")
    assert cells[:2] == ["`mobilenet_v2`", "`pool`"] and cells[14:16] == ["4.000", "1.000"]


def test_ingest_benchmark(tmp_path: Path) -> None:
    text, raw = run_benchmark(
        "benchmarks.bench_ingest",
        tmp_path,
        *("--images", str(ukbench_photos(tmp_path / "photos", 4))),
        *("--models", "mobilenet_v2", "--precision-models", "mobilenet_v2"),
        *("--large", "1", "--original", "4", "--max-wait", "0", "--tmp", str(tmp_path)),
        *("--batches", "1", "--min-seconds", "0", "--precision-batch", "1"),
    )
    assert [row[:2] for row in rows(text, "bench_ingest:ingest")] == [
        ["`mobilenet_v2`", "UKBench (4)"],
        ["`mobilenet_v2`", "12 MP (1)"],
    ]
    assert all(0 < row["model_share"] <= 1 for row in raw["ingest"])
    (precision,) = raw["precision"]
    assert (precision["ns_fp32"], precision["ns_bf16"]) == (4.0, 4.0)  # one object, four views
    assert 0.99 <= precision["cosine_mean"] <= 1.0 + 1e-6
    (draft,) = raw["draft"]
    assert draft["cosine_mean"] > 0.99 and len(rows(text, "bench_ingest:draft")) == 1


def test_decode_benchmark(tmp_path: Path) -> None:
    text, _ = run_benchmark(
        "benchmarks.bench_decode",
        tmp_path,
        "--cases",
        "640x480 photo,60000x1 line",
        "--no-whole-resize",
    )
    table = rows(text, "bench_decode:table")
    assert [row[0] for row in table] == ["640x480 photo", "60000x1 line"]
    assert float(table[1][3]) < 100  # the long line is resampled only where the crop keeps it


def test_dupes_benchmark(tmp_path: Path) -> None:
    text, raw = run_benchmark(
        "benchmarks.bench_dupes",
        tmp_path,
        *("--parts", "scale", "--sizes", "1000", "--dims", "32", "--new", "100"),
        *("--planted", "0.05", "--tmp", str(tmp_path)),
    )
    (size,) = raw["scale"]["sizes"]
    assert size["library"]["index_kind"] == "flat"  # exact search: every planted pair is found
    assert (size["all"]["queried"], size["new"]["queried"]) == (1100, 100)
    assert (size["all"]["planted"], size["new"]["planted"]) == (55, 5)
    for run in (size["all"], size["new"]):
        assert run["recall"] == 1.0 and run["other_pairs"] == 0 and run["saturated"] == 0
    assert [row[:2] for row in rows(text, "bench_dupes:candidates")] == [
        ["1k", "all"],
        ["1k", "`--new`"],
    ]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("bench-dupes-")] == []


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


def test_onnx_benchmark(tmp_path: Path) -> None:
    text, raw = run_benchmark(
        "benchmarks.bench_onnx",
        tmp_path,
        *("--models", "mobilenet_v2", "--repeats", "1", "--batches", "1", "--batch-size", "2"),
        *("--tmp", str(tmp_path)),
    )
    (row,) = raw["rows"]
    assert row["min_cosine"] >= 0.9999 and row["onnx_mb"] > 1
    assert all(part > 0 for way in row["cold"].values() for part in way.values())
    assert [r[0] for r in rows(text, "bench_onnx:cold")] == ["`mobilenet_v2`"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("bench-onnx-")] == []
