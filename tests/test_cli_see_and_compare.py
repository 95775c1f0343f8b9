"""The 'see and compare' commands through the CLI: each writes files with real content."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FAKE_ARGS, make_image


@pytest.fixture
def groups(tmp_path: Path) -> tuple[Path, Path]:
    """4 groups of 4 near-identical pictures, and their ground truth."""
    folder = tmp_path / "labelled"
    rows = []
    for group in range(4):
        for member in range(4):
            path = make_image(folder / f"g{group}m{member}.png", seed=group, fmt="PNG")
            pixels = np.asarray(Image.open(path)).astype(np.int16) + member * 3
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
            rows.append((path.name, f"group{group}"))
    truth = tmp_path / "truth.csv"
    with open(truth, "w", newline="") as handle:
        csv.writer(handle).writerows([("filename", "group"), *rows])
    return folder, truth


def test_eval_reports_retrieval_quality(imgvec, groups: tuple[Path, Path]) -> None:
    folder, truth = groups
    result = imgvec("eval", folder, "--groundtruth", truth, *FAKE_ARGS, "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert (report["images"], report["groups"]) == (16, 4)
    assert report["map"] == pytest.approx(1.0) and report["ns_score"] == pytest.approx(4.0)
    assert report["transforms"] is None
    table = imgvec(
        "eval", folder, "--groundtruth", truth, *FAKE_ARGS, "--transforms", "--per-transform", "4"
    )
    assert table.exit_code == 0, table.stderr
    assert "UKBench N-S" in table.stdout and "copy detection top-1: jpeg" in table.stdout


def test_eval_with_a_bad_groundtruth_is_a_clear_error(
    imgvec, groups: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, _ = groups
    bad = tmp_path / "bad.csv"
    bad.write_text("name,label\na.png,1\n")
    result = imgvec("eval", folder, "--groundtruth", bad, *FAKE_ARGS)
    assert result.exit_code == 2 and "filename" in result.stderr


def test_plot_and_contact_sheets(imgvec, groups: tuple[Path, Path], tmp_path: Path) -> None:
    folder, _ = groups
    imgvec("add", folder, *FAKE_ARGS)
    plot = imgvec("plot", "--out", tmp_path / "map.png", "--color-by", "format", "--json")
    assert plot.exit_code == 0, plot.stderr
    assert plot.json()["points"] == 16 and plot.json()["legend"] == ["PNG"]
    assert Image.open(tmp_path / "map.png").size == (1000, 800)
    for sheet in ("sheet.png", "sheet.html"):
        shown = imgvec("query", folder / "g1m0.png", "-k", "3", "--show", tmp_path / sheet)
        assert shown.exit_code == 0, shown.stderr
    assert Image.open(tmp_path / "sheet.png").width >= 4 * 150  # query + 3 matches
    assert (tmp_path / "sheet.html").read_text().count("data:image/jpeg;base64,") == 4
    wrong = imgvec("plot", "--color-by", "no_such_column")
    assert wrong.exit_code == 2 and "camera_model" in wrong.stderr


def test_bench_table_json_and_plot(imgvec, tmp_path: Path) -> None:
    result = imgvec("bench", "--sizes", "200,1000", "--dim", "16", "--queries", "10", "--json")
    assert result.exit_code == 0, result.stderr
    rows = result.json()["rows"]
    assert {row["method"] for row in rows} == {"numpy", "flat", "ivf"}
    assert all(row["recall"] == 1.0 for row in rows if row["method"] != "ivf")
    plotted = imgvec(
        "bench",
        "--sizes",
        "200,1000",
        "--dim",
        "16",
        "--queries",
        "5",
        "--plot",
        tmp_path / "bench.png",
    )
    assert plotted.exit_code == 0 and "numpy" in plotted.stdout
    assert Image.open(tmp_path / "bench.png").width > 400
    assert imgvec("bench", "--sizes", "ten").exit_code == 2


@pytest.mark.parametrize("suffix", [".npz", ".parquet", ".h5"])
def test_export_then_import_into_another_library(
    imgvec, groups: tuple[Path, Path], tmp_path: Path, suffix: str
) -> None:
    folder, _ = groups
    imgvec("add", folder, *FAKE_ARGS)
    exported = imgvec("export", tmp_path / f"vectors{suffix}", "--json")
    assert exported.exit_code == 0, exported.stderr
    assert exported.json()["vectors"] == 16 and exported.json()["dim"] == 48
    other = tmp_path / "other"
    imgvec("add", folder, "--model", "fake3", "--weights", "none", "--library", other)
    imported = imgvec("import", tmp_path / f"vectors{suffix}", "--library", other, "--json")
    assert imported.exit_code == 0, imported.stderr
    assert imported.json()["imported"] == 16 and imported.json()["by_hash"] == 16
    hits = imgvec(
        "query", folder / "g2m1.png", "--model", "fake", "-k", "1", "--library", other, "--json"
    ).json()[0]["results"]
    assert Path(hits[0]["path"]).name == "g2m1.png"


def test_eval_in_bf16(imgvec, groups: tuple[Path, Path]) -> None:
    folder, truth = groups
    result = imgvec(
        "eval", folder, "--groundtruth", truth, *FAKE_ARGS, "--precision", "bf16", "--json"
    )
    assert result.exit_code == 0, result.stderr
    assert result.json()["map"] == pytest.approx(1.0)
    wrong = imgvec("eval", folder, "--groundtruth", truth, *FAKE_ARGS, "--precision", "fp8")
    assert wrong.exit_code == 2 and "'fp8' is not one of" in " ".join(wrong.stderr.split())


def test_bench_on_the_library_s_own_vectors(
    imgvec, groups: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, _ = groups
    imgvec("add", folder, *FAKE_ARGS, "--library", tmp_path / "lib")
    result = imgvec(
        "bench", "--library", tmp_path / "lib", "--sizes", "8,1000", "--queries", "4", "--json"
    )
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["sizes"] == [8, 16] and report["dim"] == 48  # capped to the 16 stored vectors
