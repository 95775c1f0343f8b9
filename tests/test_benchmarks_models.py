"""The embedding benchmarks at tiny sizes: models, ingest, ONNX Runtime, decoding
(tests/benchmark_runs.py runs them)."""

from __future__ import annotations

from pathlib import Path

from tests.benchmark_runs import rows, run_benchmark, ukbench_photos


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
