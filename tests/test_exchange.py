"""Export a model's vectors to npz / parquet / hdf5 and import them into another library."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from imgvec.api import Library
from imgvec.embed.loader import Models
from imgvec.errors import ImgvecError
from imgvec.ops import exchange
from imgvec.storage import store
from imgvec.storage.schema import Image
from tests.conftest import make_image
from tests.fake_model import FAKE_DIM

FORMATS = {"npz": "vectors.npz", "parquet": "vectors.parquet", "hdf5": "vectors.h5"}


def _photos(root: Path, count: int = 8) -> Path:
    for i in range(count):
        make_image(root / f"p{i}.png", seed=100 + i)
    return root


def _stored(lib: Library, model: str) -> dict[str, tuple[str, np.ndarray]]:
    """path -> (content hash, vector) of the model's stored vectors."""
    row = lib.find_model(model)
    with lib.session() as session:
        ids, vectors = store.all_vectors(session, row.id, row.dim)
        images = {i: session.get(Image, int(i)) for i in ids}
    return {
        images[i].path: (images[i].content_hash, vector)
        for i, vector in zip(ids, vectors, strict=True)
    }


@pytest.fixture
def lib_a(tmp_path: Path) -> Iterator[Library]:
    lib = Library.open(tmp_path / "a")
    lib.add([_photos(tmp_path / "photos")], model="fake", weights="none")
    yield lib
    lib.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_contents(lib_a: Library, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "out" / FORMATS[fmt]
    info = lib_a.export_vectors(out)
    assert info.format == fmt and info.vectors == 8 and info.dim == FAKE_DIM
    assert info.size_bytes == out.stat().st_size > 0
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp-")]
    got_fmt, data = exchange.read_export(out)
    assert got_fmt == fmt
    assert data.identity["name"] == "fake" and data.identity["dim"] == FAKE_DIM
    assert data.identity["layer"] == "grid" and data.identity["weights"].startswith("none")
    stored = _stored(lib_a, "fake")
    assert sorted(data.paths) == sorted(stored)
    assert len(set(data.ids.tolist())) == 8
    with lib_a.session() as session:
        for image_id, path, content_hash, vector in zip(
            data.ids, data.paths, data.hashes, data.vectors, strict=True
        ):
            assert store.paths_of(session, [int(image_id)]) == {int(image_id): path}
            assert content_hash == stored[path][0]
            np.testing.assert_array_equal(vector, stored[path][1])


def test_export_file_layouts(lib_a: Library, tmp_path: Path) -> None:
    """Each format's documented layout, read with its own library rather than ours."""
    import h5py
    import pyarrow as pa
    import pyarrow.parquet as pq

    lib_a.export_vectors(tmp_path / "v.npz")
    with np.load(tmp_path / "v.npz", allow_pickle=False) as npz:
        assert npz["vectors"].shape == (8, FAKE_DIM) and npz["vectors"].dtype == np.float32
        assert npz["ids"].shape == npz["paths"].shape == npz["hashes"].shape == (8,)
        assert json.loads(str(npz["model"]))["name"] == "fake"

    lib_a.export_vectors(tmp_path / "v.parquet")
    table = pq.read_table(tmp_path / "v.parquet")
    assert table.column_names == ["id", "path", "content_hash", "vector"]
    assert table.schema.field("vector").type == pa.list_(pa.float32(), FAKE_DIM)
    assert json.loads(table.schema.metadata[b"imgvec"])["dim"] == FAKE_DIM

    lib_a.export_vectors(tmp_path / "v.bin", fmt="hdf5")  # format named, not guessed
    with h5py.File(tmp_path / "v.bin", "r") as handle:
        assert handle["vectors"].shape == (8, FAKE_DIM)
        assert handle.attrs["name"] == "fake" and handle.attrs["dim"] == FAKE_DIM


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_without_running_the_model(
    lib_a: Library, tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / FORMATS[fmt]
    lib_a.export_vectors(out)
    # Library B: the same pictures, copied elsewhere (matched by hash), embedded with fake3 only.
    shutil.copytree(tmp_path / "photos", tmp_path / "photos-b")
    make_image(tmp_path / "photos-b" / "extra.png", seed=999)  # B has one picture A lacks
    with Library.open(tmp_path / "b") as lib_b:
        lib_b.add([tmp_path / "photos-b"], model="fake3", weights="none")
        assert [m.model.name for m in lib_b.models()] == ["fake3"]

        def no_model(*_args: object, **_kwargs: object) -> None:
            raise AssertionError("import must not run a model")

        monkeypatch.setattr(Models, "embedder", no_model)
        info = lib_b.import_vectors(out)
        assert (info.rows, info.imported, info.by_hash, info.by_path) == (8, 8, 8, 0)
        assert info.unmatched == 0 and info.created_model
        assert info.model.startswith("fake/grid")

        statuses = {s.model.name: s for s in lib_b.models()}
        assert statuses["fake3"].active and not statuses["fake"].active
        assert statuses["fake"].embeddings == 8 and statuses["fake"].indexed
        assert not statuses["fake"].complete  # extra.png has no fake vector

        a_vectors = {Path(p).name: v for p, (_, v) in _stored(lib_a, "fake").items()}
        b_vectors = {Path(p).name: v for p, (_, v) in _stored(lib_b, "fake").items()}
        assert a_vectors.keys() == b_vectors.keys()
        for name, vector in a_vectors.items():
            np.testing.assert_array_equal(b_vectors[name], vector)

        lib_b.remove([tmp_path / "photos-b" / "extra.png"])
        assert {s.model.name: s for s in lib_b.models()}["fake"].complete
        query = tmp_path / "photos-b" / "p3.png"
        [result] = lib_b.query([query], k=1, model="fake")
        assert result.vector_source == "stored"
        assert [hit.path for hit in result.hits] == [str(query)]
        assert result.hits[0].score == pytest.approx(1.0, abs=1e-5)

        again = lib_b.import_vectors(out)  # idempotent
        assert (again.imported, again.already_present, again.created_model) == (0, 8, False)


def test_import_matches_by_path_when_hashes_are_missing(lib_a: Library, tmp_path: Path) -> None:
    out = tmp_path / "v.npz"
    lib_a.export_vectors(out)
    with np.load(out, allow_pickle=False) as npz:
        arrays = dict(npz)
    arrays["hashes"] = np.array([""] * 8)
    arrays["paths"][0] = str(tmp_path / "elsewhere.png")
    with open(out, "wb") as handle:
        np.savez(handle, **arrays)
    with Library.open(tmp_path / "b") as lib_b:
        lib_b.add([tmp_path / "photos"], model="fake3", weights="none")
        info = lib_b.import_vectors(out)
        assert (info.imported, info.by_hash, info.by_path, info.unmatched) == (7, 0, 7, 1)


def test_import_into_an_empty_library_activates_the_model(lib_a: Library, tmp_path: Path) -> None:
    out = tmp_path / "v.parquet"
    lib_a.export_vectors(out)
    with Library.open(tmp_path / "b") as lib_b:
        info = lib_b.import_vectors(out)
        assert (info.imported, info.unmatched) == (0, 8)
        assert lib_b.model() is not None and lib_b.model().name == "fake"


def test_dimension_mismatch_is_refused(lib_a: Library, tmp_path: Path) -> None:
    out = tmp_path / "v.npz"
    lib_a.export_vectors(out)
    with np.load(out, allow_pickle=False) as npz:
        arrays = dict(npz)
    identity = json.loads(str(arrays["model"]))
    identity["dim"] = FAKE_DIM + 1
    arrays["model"] = np.array(json.dumps(identity))
    with open(out, "wb") as handle:
        np.savez(handle, **arrays)
    with pytest.raises(ImgvecError, match="declares 49-d"):
        lib_a.import_vectors(out)


def test_format_errors(lib_a: Library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ImgvecError, match="cannot tell the format"):
        lib_a.export_vectors(tmp_path / "v.txt")
    with pytest.raises(ImgvecError, match="unknown format"):
        lib_a.export_vectors(tmp_path / "v.npz", fmt="csv")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    with pytest.raises(ImgvecError, match="pip install pyarrow"):
        lib_a.export_vectors(tmp_path / "v.parquet")
    assert not (tmp_path / "v.parquet").exists()


def test_export_a_named_model(lib_a: Library, tmp_path: Path) -> None:
    lib_a.use_model("fake3", weights="none")  # fake3 becomes active; fake stays stored
    info = lib_a.export_vectors(tmp_path / "v.h5", model="fake")
    assert info.dim == FAKE_DIM and info.model.startswith("fake/grid")
    assert lib_a.export_vectors(tmp_path / "w.h5").model.startswith("fake3/")
