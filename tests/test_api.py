"""The Python API as a user calls it: one path or several, ``~``, and what FAISS refuses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from imgvec.api import Library
from tests.conftest import FAKE_ARGS, make_image


def test_one_path_given_as_a_string_is_one_path(photos: Path, library: Path) -> None:
    """A bare string is not a sequence of one-letter paths: remove('/x.jpg') once removed "/"."""
    one = photos / "p0.jpg"
    with Library.open(library) as lib:
        assert lib.add(str(photos), model="fake", weights="none").added == 6
        [result] = lib.query(str(one), k=1)
        assert result.query == str(one) and result.hits[0].path == str(one)
        report = lib.remove(one)
        assert (report.removed, report.errors) == (1, [])
        assert lib.status().images == 5


def test_home_is_expanded_in_image_paths(
    photos: Path, library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(photos.parent))
    with Library.open(library) as lib:
        assert lib.add(["~/photos/sub"], model="fake", weights="none").added == 2
        assert lib.query(["~/photos/sub/p4.png"], k=1)[0].hits[0].path.endswith("p4.png")
        assert lib.remove(["~/photos/sub"]).removed == 2


def test_an_index_faiss_cannot_train_is_one_line_and_exit_2(
    tmp_path: Path, imgvec: Callable[..., object]
) -> None:
    """60 vectors are enough for IVF's lists but not for PQ's 256 centroids per sub-quantizer."""
    folder = tmp_path / "sixty"
    for number in range(60):
        make_image(folder / f"{number:02}.png", seed=number)
    assert imgvec("add", folder, *FAKE_ARGS).exit_code == 0  # type: ignore[attr-defined]
    result = imgvec("index", "build", "--kind", "ivfpq")
    assert result.exit_code == 2, result.stderr  # type: ignore[attr-defined]
    lines = result.stderr.splitlines()  # type: ignore[attr-defined]
    assert lines[-1] == (
        "error: cannot train a ivfpq index on 60 vectors: Number of training points (60) "
        "should be at least as large as number of clusters (256)"
    )
    assert "Traceback" not in result.stderr and len(lines) == 2  # type: ignore[attr-defined]


def test_an_unknown_index_kind_is_one_line_and_exit_2(
    photos: Path, imgvec: Callable[..., object]
) -> None:
    assert imgvec("add", photos, *FAKE_ARGS).exit_code == 0  # type: ignore[attr-defined]
    result = imgvec("index", "build", "--kind", "hnsw")
    assert result.exit_code == 2  # type: ignore[attr-defined]
    assert result.stderr == (  # type: ignore[attr-defined]
        "error: unknown index kind 'hnsw'; choose one of flat, ivf, ivfpq\n"
    )


def test_the_switch_hint_names_the_whole_identity() -> None:
    """Only the layer differing: "imgvec model use NAME" alone would switch to nothing new."""
    from imgvec.ops.models import use_command
    from imgvec.storage.schema import EmbeddingModel

    def row(weights: str, path: str | None = None) -> EmbeddingModel:
        return EmbeddingModel(
            name="m", layer="logits", weights=weights, weights_path=path, preprocessing="", dim=1
        )

    assert use_command(row("none:seed=0")) == "imgvec model use m --layer logits --weights none"
    assert use_command(row("sha256:ab", "/w.pth")) == (
        "imgvec model use m --layer logits --weights /w.pth"
    )
    assert use_command(row("torchvision:X")) == "imgvec model use m --layer logits"


def test_gc_refuses_a_negative_keep(photos: Path, library: Path) -> None:
    from imgvec.errors import ImgvecError

    with Library.open(library) as lib:
        lib.add([photos], model="fake", weights="none")
        with pytest.raises(ImgvecError, match="keep must be 0 or more, not -1"):
            lib.gc_index(keep=-1)
