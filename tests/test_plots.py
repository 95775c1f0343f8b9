"""The embedding plot and the contact sheets, on a small library of the fake test model."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgvec.api import Library, QueryHit, QueryResult
from imgvec.errors import ImgvecError
from imgvec.tools.plots import CELL_HEIGHT, CELL_WIDTH, contact_sheet, pca, plot_embeddings
from tests.conftest import make_image

pytest.importorskip("matplotlib")

PER_FOLDER = 6


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    folder_a, folder_b = tmp_path / "alpha", tmp_path / "beta"
    for i in range(PER_FOLDER):
        make_image(folder_a / f"a{i}.jpg", seed=i)
        make_image(folder_b / f"b{i}.png", seed=100 + i, size=(64, 96))
    return folder_a, folder_b


@pytest.fixture
def lib(tmp_path: Path, folders: tuple[Path, Path]) -> Iterator[Library]:
    with Library.open(tmp_path / "lib") as library:
        report = library.add(list(folders), model="fake", weights="none")
        assert report.added == 2 * PER_FOLDER and report.failed == 0
        yield library


def _size_close(path: Path, expected: tuple[int, int], tolerance: int = 4) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert abs(image.width - expected[0]) <= tolerance, image.size
        assert abs(image.height - expected[1]) <= tolerance, image.size
        image.load()


def test_plot_2d(lib: Library, folders: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "plot.png"
    info = plot_embeddings(lib, out)
    assert info.path == out and out.exists()
    _size_close(out, (1000, 800))
    assert info.points == 2 * PER_FOLDER
    assert info.dims == 2 and info.color_by == "folder" and info.method == "pca"
    assert sorted(info.legend) == sorted(str(f) for f in folders)
    assert len(info.explained_variance) == 2
    assert all(0 < v <= 1 for v in info.explained_variance)
    assert info.explained_variance == sorted(info.explained_variance, reverse=True)
    assert info.thumbnails == 12  # all files readable


def test_plot_3d_and_other_columns(lib: Library, tmp_path: Path) -> None:
    info = plot_embeddings(lib, tmp_path / "plot3.png", dims=3, color_by="format")
    _size_close(tmp_path / "plot3.png", (1000, 800))
    assert info.dims == 3 and info.points == 2 * PER_FOLDER
    assert sorted(info.legend) == ["JPEG", "PNG"]
    assert len(info.explained_variance) == 3
    assert info.explained_variance == sorted(info.explained_variance, reverse=True)
    assert info.thumbnails == 0  # thumbnails are 2-D only
    # A column with no values at all (no EXIF in the test images) is one "(none)" group.
    assert plot_embeddings(lib, tmp_path / "cam.png", color_by="camera_model").legend == ["(none)"]


def test_plot_skips_unreadable_thumbnails(
    lib: Library, folders: tuple[Path, Path], tmp_path: Path
) -> None:
    for path in folders[0].iterdir():
        path.unlink()  # gone since the add: no thumbnail, the stored vector is still plotted
    info = plot_embeddings(lib, tmp_path / "plot.png", thumbnails=20)
    assert info.points == 2 * PER_FOLDER
    assert info.thumbnails == PER_FOLDER


def test_plot_errors(lib: Library, tmp_path: Path) -> None:
    with pytest.raises(ImgvecError, match="no column 'nope'") as caught:
        plot_embeddings(lib, tmp_path / "x.png", color_by="nope")
    for valid in ("folder", "format", "camera_model"):
        assert valid in str(caught.value)
    with pytest.raises(ImgvecError, match="dims"):
        plot_embeddings(lib, tmp_path / "x.png", dims=4)
    with pytest.raises(ImgvecError, match="method"):
        plot_embeddings(lib, tmp_path / "x.png", method="umap")
    with pytest.raises(ImgvecError, match=r"\.png"):
        plot_embeddings(lib, tmp_path / "x.jpg")
    with pytest.raises(ImgvecError, match="model"):
        plot_embeddings(lib, tmp_path / "x.png", model="fake3")
    assert not (tmp_path / "x.png").exists()


def test_plot_needs_three_vectors(tmp_path: Path) -> None:
    make_image(tmp_path / "two" / "a.jpg", seed=1)
    make_image(tmp_path / "two" / "b.jpg", seed=2)
    with Library.open(tmp_path / "small") as library:
        library.add([tmp_path / "two"], model="fake", weights="none")
        with pytest.raises(ImgvecError, match="at least 3 images"):
            plot_embeddings(library, tmp_path / "x.png")


def test_pca_matches_covariance_eigenvalues() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(50, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    coords, ratios = pca(data, 3)
    eigen = np.sort(np.linalg.eigvalsh(np.cov(data, rowvar=False)))[::-1]
    np.testing.assert_allclose(ratios, eigen[:3] / eigen.sum(), rtol=1e-9)
    np.testing.assert_allclose(coords.var(axis=0, ddof=1), eigen[:3], rtol=1e-9)
    assert coords.shape == (50, 3)
    again, _ = pca(data, 3)
    np.testing.assert_array_equal(coords, again)  # signs fixed: deterministic


def test_numeric_column_gets_a_colour_bar(tmp_path: Path) -> None:
    from imgvec.tools.plots import _draw

    coords, ratios = pca(np.random.default_rng(1).normal(size=(40, 8)), 2)
    values = [None if i % 7 == 0 else float(i) for i in range(40)]  # > 12 distinct numbers
    legend, thumbs = _draw(tmp_path / "n.png", coords, ratios, ["/nope"] * 40, values, "w", "m", 5)
    assert legend == [] and thumbs == 0  # a colour bar, no legend; missing files skipped
    _size_close(tmp_path / "n.png", (1000, 800))


def _results(lib: Library, folders: tuple[Path, Path], k: int) -> list[QueryResult]:
    queries = [str(folders[0] / "a0.jpg"), str(folders[1] / "b3.png")]
    return lib.query(queries, k=k)


def test_contact_sheet_png(lib: Library, folders: tuple[Path, Path], tmp_path: Path) -> None:
    k = 4
    results = _results(lib, folders, k)
    assert [len(r.hits) for r in results] == [k, k]
    out = contact_sheet(results, tmp_path / "sheet.png")
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == ((k + 1) * CELL_WIDTH, 2 * CELL_HEIGHT)
        pixels = np.asarray(image.convert("RGB"))
    # The query cell shows the query image: its centre has the query's colours, not white.
    assert pixels[CELL_WIDTH // 2 - 10 : CELL_WIDTH // 2 + 10, 60:100].std() > 0
    # Every cell has text under its thumbnail (dark pixels in the label strip).
    for column in range(k + 1):
        strip = pixels[
            CELL_HEIGHT - 45 : CELL_HEIGHT, column * CELL_WIDTH : (column + 1) * CELL_WIDTH
        ]
        assert (strip < 100).any(), f"no label in cell {column}"


def test_contact_sheet_html(lib: Library, folders: tuple[Path, Path], tmp_path: Path) -> None:
    k = 3
    results = _results(lib, folders, k)
    out = contact_sheet(results, tmp_path / "sheet.html")
    page = out.read_text(encoding="utf-8")
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == 2 * (k + 1)
    assert all(src.startswith("data:image/jpeg;base64,") for src in images)
    assert "http" not in page  # self-contained
    assert page.count("<table>") == 2
    for result in results:
        assert result.query in page
        for hit in result.hits:
            assert f"{hit.score:.4f}" in page
            assert hit.path in page


def test_contact_sheet_unreadable_hits(tmp_path: Path) -> None:
    good = make_image(tmp_path / "q.jpg", seed=5)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    results = [
        QueryResult(
            str(good),
            [
                QueryHit(1, str(good), 1.0),
                QueryHit(2, str(tmp_path / "missing.png"), 0.5),
                QueryHit(3, str(broken), 0.25),
            ],
        ),
        QueryResult(str(tmp_path / "gone.jpg"), [], error="cannot read file"),
    ]
    png = contact_sheet(results, tmp_path / "sheet.png")
    with Image.open(png) as image:
        assert image.size == (4 * CELL_WIDTH, 2 * CELL_HEIGHT)
        pixels = np.asarray(image.convert("RGB"))
    # The missing file's cell is the grey placeholder.
    cell = pixels[20:60, 2 * CELL_WIDTH + 20 : 2 * CELL_WIDTH + 60]
    assert (cell == 200).all()
    page = contact_sheet(results, tmp_path / "sheet.HTML").read_text(encoding="utf-8")
    assert page.count("<img ") == 5
    assert "0.2500" in page and "cannot read file" in page


def test_contact_sheet_errors(tmp_path: Path) -> None:
    result = QueryResult(str(tmp_path / "q.jpg"), [])
    with pytest.raises(ImgvecError, match=r"\.png or \.html"):
        contact_sheet([result], tmp_path / "sheet.pdf")
    with pytest.raises(ImgvecError, match="no query results"):
        contact_sheet([], tmp_path / "sheet.png")
