"""The index and library benchmarks at tiny sizes: index, scale, duplicates, vector stores
(tests/benchmark_runs.py runs them)."""

from __future__ import annotations

from pathlib import Path

from tests.benchmark_runs import random_photos, rows, run_benchmark


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


def test_vector_stores_benchmark(tmp_path: Path) -> None:
    text, raw = run_benchmark(
        "benchmarks.bench_vectors",
        tmp_path,
        *("--sizes", "1500", "--dim", "32", "--queries", "20", "--tmp", str(tmp_path)),
        *("--stores", "faiss,milvus-lite"),
    )
    (size,) = raw
    stores = {s["store"]: s for s in size["stores"]}
    assert stores["faiss"]["kind"] == "flat" and stores["milvus-lite"]["kind"] == "milvus"
    for store in stores.values():
        assert store["base"]["recall"] >= 0.9 and store["changed"]["recall"] >= 0.9
        assert store["first_query_s"] > 0 and store["add"]["update_s"] > 0
    assert stores["faiss"]["base"]["recall"] == 1.0  # flat: exact
    assert [row[:2] for row in rows(text, "bench_vectors:stores")] == [
        ["1,500 x 32", "`faiss`"],
        ["1,500 x 32", "`milvus-lite`"],
    ]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("bench-vectors-")] == []
