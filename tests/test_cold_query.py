"""Issue 15: ``imgvec query`` answered from a cold start without SQLAlchemy
(:mod:`imgvec.ops.cold_query`, :mod:`imgvec.storage.snapshot`), with the ordinary path's answers,
and the ordinary path wherever the quick one cannot answer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from imgvec.api import Library
from imgvec.cli.app import app, for_command
from imgvec.storage import store
from imgvec.storage.snapshot import Snapshot
from tests.conftest import FAKE_ARGS, make_image


def timed_query(imgvec, *args: object):  # type: ignore[no-untyped-def]
    """(exit code, stdout, the path that answered: ``cold`` or ``ordinary``)."""
    done = imgvec("query", *args, "--timings")
    line = next(x for x in done.stderr.splitlines() if x.startswith("timings (s): "))
    stages = {t.split("=")[0] for t in line.split(": ", 1)[1].split()}
    assert ("snapshot" in stages) != ("open" in stages), line
    return done, "cold" if "snapshot" in stages else "ordinary"


@pytest.fixture
def changed(imgvec, photos: Path, library: Path) -> Path:
    """A library whose index has a base, a delta and tombstones: 6 photos added, one removed,
    two added (one of them back under another name)."""
    assert imgvec("add", photos, *FAKE_ARGS).exit_code == 0
    assert imgvec("remove", photos / "p1.jpg").exit_code == 0
    make_image(photos / "late" / "p6.jpg", seed=6)
    shutil.copy(photos / "p2.jpg", photos / "late" / "again.jpg")
    assert imgvec("add", photos / "late").exit_code == 0
    return photos


def alike(ours: object, theirs: object, *names: str) -> None:
    """The snapshot's record and the store's row agree on these columns."""
    assert [getattr(ours, n) for n in names] == [getattr(theirs, n) for n in names], names


def test_the_snapshot_reads_what_the_store_reads(changed: Path, library: Path) -> None:
    with (
        Library.open(library) as lib,
        lib.session() as session,
        Snapshot(library / "imgvec.db") as snapshot,
    ):
        model = store.active_model(session)
        assert model is not None
        assert snapshot.state() == (model.id, store.vector_store(session))
        record = snapshot.model(model.id)
        assert record is not None
        alike(record, model, "id", "name", "layer", "weights", "weights_path", "preprocessing")
        alike(record, model, "dim", "vector_count")
        export, ours = store.model_export(session, model.id), snapshot.export(model.id)
        assert export is not None and ours is not None
        alike(ours, export, "path", "size_bytes", "sha256", "error", "exporter")
        version, mine = store.active_version(session, model.id), snapshot.active_version(model.id)
        assert version is not None and mine is not None
        alike(mine, version, "id", "kind", "params", "change_seq")
        assert snapshot.last_change(model.id) == store.last_change(session, model.id) > 0
        changes = store.changed_since(session, model.id, 0)
        assert snapshot.changed_since(model.id, 0) == changes and changes
        segments = store.segments_of(session, version.id)
        assert len(segments) > 1  # a base and a delta
        mirrored = snapshot.segments(version.id)
        assert len(mirrored) == len(segments)
        for ours_segment, segment in zip(mirrored, segments, strict=True):
            alike(ours_segment, segment, "id", "path", "role", "size_bytes", "created_seq")
        ids = store.vector_ids(session, model.id)
        paths = store.paths_of(session, ids)
        assert snapshot.paths([*ids, 10_000]) == paths
        for image_id, path in paths.items():
            row, image = store.image_by_path(session, path), snapshot.image(path)
            assert row is not None and image is not None
            alike(image, row, "id", "size", "mtime_ns", "error")
            assert snapshot.vector(image_id, model.id) == store.stored_vector(
                session, image_id, model.id
            )
        found_ids, found = store.vectors_of(session, model.id, model.dim, ids)
        vectors = snapshot.vectors(model.id, [*ids, 10_000])
        assert sorted(vectors) == found_ids.tolist()
        assert all(
            np.array_equal(np.frombuffer(vectors[int(i)], "<f4"), v)
            for i, v in zip(found_ids, found, strict=True)
        )
        assert snapshot.image(str(changed / "p1.jpg")) is None  # removed


def test_a_cold_query_answers_as_the_ordinary_path(
    imgvec, changed: Path, library: Path, tmp_path: Path
) -> None:
    """Stored photos, a new photo and a removed one, with a delta and tombstones in the index:
    the same hits, scores and vector sources as :meth:`Library.query` (the ordinary path)."""
    outside = tmp_path / "outside"
    make_image(outside / "new.jpg", seed=40)
    shutil.copy(changed / "p1.jpg", outside / "removed.jpg")
    queries = [changed / "p0.jpg", outside / "new.jpg", changed / "late" / "again.jpg"]
    queries.append(outside / "removed.jpg")
    done, path = timed_query(imgvec, *queries, "-k", "4", "--json")
    assert done.exit_code == 0 and path == "cold"
    quick = done.json()
    with Library.open(library) as lib:
        ordinary = [r.to_json() for r in lib.query(queries, k=4)]
    assert [q["vector"] for q in quick] == ["stored", "embedded", "stored", "embedded"]
    assert [q["vector"] for q in ordinary] == [q["vector"] for q in quick]
    for mine, theirs in zip(quick, ordinary, strict=True):
        assert [h["path"] for h in mine["results"]] == [h["path"] for h in theirs["results"]]
        assert np.allclose(
            [h["score"] for h in mine["results"]], [h["score"] for h in theirs["results"]]
        )
        assert len(mine["results"]) == 4
        assert str(changed / "p1.jpg") not in [h["path"] for h in mine["results"]]
    assert quick[0]["results"][0]["path"] == str(changed / "p0.jpg")
    assert quick[0]["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_the_ordinary_path_answers_what_the_cold_one_cannot(
    imgvec, photos: Path, library: Path, tmp_path: Path
) -> None:
    assert imgvec("add", photos, *FAKE_ARGS).exit_code == 0
    new = tmp_path / "outside" / "new.jpg"
    make_image(new, seed=41)
    # a photo that cannot be read: one line naming it, exit 1, the others answered
    broken = tmp_path / "outside" / "broken.jpg"
    broken.write_bytes(b"not an image")
    done, path = timed_query(imgvec, photos / "p0.jpg", broken)
    assert (done.exit_code, path) == (1, "ordinary")
    assert str(broken) in done.stderr and str(photos / "p0.jpg") in done.stdout
    # --where and --model need SQL beyond the snapshot's
    assert timed_query(imgvec, new, "--where", "width > 0")[1] == "ordinary"
    # a lost export: the ordinary path answers and makes it again; the next query is cold
    for export in (library / "models").glob("*.onnx"):
        export.unlink()
    done, path = timed_query(imgvec, new, "--json")
    assert (done.exit_code, path) == (0, "ordinary")
    assert list((library / "models").glob("*.onnx"))
    assert timed_query(imgvec, new, "--json")[1] == "cold"
    # a lost index file: the ordinary path rebuilds it; then cold again, with the same answer
    before = done.json()
    for segment in (library / "index").rglob("*.faiss"):
        segment.unlink()
    done, path = timed_query(imgvec, new, "--json")
    assert (done.exit_code, path, done.json()) == (0, "ordinary", before)
    done, path = timed_query(imgvec, new, "--json")
    assert (done.exit_code, path, done.json()) == (0, "cold", before)


def test_a_cold_query_of_a_stored_photo_imports_no_database_layer_model_or_pillow(
    imgvec, photos: Path, tmp_path: Path
) -> None:
    """The real command's entry point in a fresh process: SQLAlchemy, Alembic, torch, Pillow and
    ONNX Runtime are never imported to answer from a stored vector."""
    assert imgvec("add", photos, *FAKE_ARGS).exit_code == 0
    modules = tmp_path / "modules.txt"
    script = (
        "import atexit, sys\n"
        f"atexit.register(lambda: open({str(modules)!r}, 'w').write(' '.join(sys.modules)))\n"
        f"sys.argv = ['imgvec', 'query', {str(photos / 'p0.jpg')!r}, '-k', '2']\n"
        "from imgvec.__main__ import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and str(photos / "p0.jpg") in done.stdout
    imported = {name.split(".")[0] for name in modules.read_text().split()}
    assert {"typer", "faiss", "numpy", "imgvec"} <= imported  # the check sees imports
    assert not imported & {"sqlalchemy", "alembic", "torch", "PIL", "onnxruntime"}


def test_the_command_line_builds_only_the_command_it_runs() -> None:
    """Typer builds every command's options before parsing; ``for_command`` keeps one."""
    narrowed = for_command(["query"])
    assert [c.callback.__name__ for c in narrowed.registered_commands] == ["query"]  # type: ignore[union-attr]
    assert [g.name for g in for_command(["index"]).registered_groups] == ["index"]
    assert for_command(["quer"]) is app and for_command(["--help"]) is app
    runner = CliRunner()
    for argv in (["query", "--help"], ["index", "status", "--help"], ["query", "-k", "0", "x"]):
        full, one = runner.invoke(app, argv), runner.invoke(for_command(argv[:1]), argv)
        assert (one.exit_code, one.stdout, one.stderr) == (full.exit_code, full.stdout, full.stderr)
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout.startswith("imgvec ")


def tiny_onnx(dim: int = 48, side: int = 16) -> bytes:
    """An ONNX model of (B, 3, side, side) inputs: flattened, times a (3 side side, dim) matrix
    (its one initializer: 147 KB by default)."""
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).standard_normal((3 * side * side, dim), dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["pixels"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["features"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, side, side])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", dim])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def test_an_export_with_large_weights_is_kept_as_graph_and_weights(tmp_path: Path) -> None:
    """ONNX's external-data layout: the graph names the weights file beside it; ONNX Runtime
    gives the same vectors from it as from the whole model's bytes, and the sha256 covers both
    files."""
    from imgvec.embed import exports
    from imgvec.embed.onnx import OnnxEmbedder

    data = tiny_onnx()
    graph, weights = exports.split(data, "m1-0123456789ab.weights")
    assert len(weights) == 3 * 16 * 16 * 48 * 4 and len(graph) < 1024 < len(data)
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "m1-0123456789ab.onnx").write_bytes(graph)
    (folder / "m1-0123456789ab.weights").write_bytes(weights)
    path = folder / "m1-0123456789ab.onnx"
    assert exports.files(path) == [path, path.with_suffix(".weights")]
    inputs = np.random.default_rng(1).standard_normal((2, 3, 16, 16), dtype=np.float32)
    whole = OnnxEmbedder(data, 48).embed_inputs(inputs)
    quick = OnnxEmbedder(str(path), 48, optimize=False).embed_inputs(inputs)
    assert np.allclose(quick, whole, atol=1e-6)  # vectors are L2-normalised
    import hashlib

    stored = exports.Stored(str(path), path="models/m1-0123456789ab.onnx")
    good = exports.Stored(
        str(path), path=stored.path, sha256=hashlib.sha256(graph + weights).hexdigest()
    )
    assert exports.verified(good) == good
    shipped = exports.whole(good)  # what a Ray worker that cannot read the files gets
    assert isinstance(shipped.source, bytes)
    assert np.allclose(OnnxEmbedder(shipped.source, 48).embed_inputs(inputs), whole)
    damaged = bytearray(weights)
    damaged[100] ^= 0xFF
    path.with_suffix(".weights").write_bytes(bytes(damaged))
    assert "sha256 does not match" in (exports.verified(good).problem or "")
    # orphans: a weights file goes with its graph
    (folder / "m2-0123456789ab.weights").write_bytes(b"x")
    assert exports.remove_orphans(tmp_path, {"models/m1-0123456789ab.onnx"}) == 1
    assert sorted(p.name for p in folder.iterdir()) == [
        "m1-0123456789ab.onnx",
        "m1-0123456789ab.weights",
    ]
    # a model without large initializers is one file, its bytes unchanged
    small = tiny_onnx(dim=4, side=2)  # 192 bytes of weights
    assert exports.split(small, "x.weights") == (small, b"")


def test_a_real_model_is_exported_in_two_files_and_queried_cold(
    imgvec, photos: Path, library: Path, tmp_path: Path
) -> None:
    """mobilenet_v2 (random weights: nothing to download): its export is a graph and a weights
    file; a cold query of a new photo runs it and answers as the ordinary path does."""
    assert imgvec("add", photos, "--model", "mobilenet_v2", "--weights", "none").exit_code == 0
    names = sorted(p.suffix for p in (library / "models").iterdir())
    assert names == [".onnx", ".weights"]
    new = tmp_path / "outside" / "new.jpg"
    make_image(new, seed=42)
    done, path = timed_query(imgvec, new, "-k", "3", "--json")
    assert (done.exit_code, path) == (0, "cold")
    with Library.open(library) as lib:
        [ordinary] = lib.query([new], k=3)
    [quick] = done.json()
    assert [h["path"] for h in quick["results"]] == [h.path for h in ordinary.hits]
    assert np.allclose([h["score"] for h in quick["results"]], [h.score for h in ordinary.hits])


RUNNER = Path(__file__).resolve().parent / "run_imgvec.py"
SETPRIV = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def test_a_cold_query_stops_as_the_ordinary_path_does(
    imgvec, photos: Path, library: Path, tmp_path: Path
) -> None:
    """What goes wrong after a quick answer (or inside it) is one line and an exit code, as on
    the ordinary path."""
    assert imgvec("add", photos, *FAKE_ARGS).exit_code == 0
    bad_sheet = imgvec("query", photos / "p0.jpg", "--show", tmp_path / "sheet.txt")
    assert bad_sheet.exit_code == 2
    assert (
        bad_sheet.stderr
        == "error: cannot write a contact sheet as 'sheet.txt': use a .png or .html file\n"
    )
    for extra in ([], ["--where", "1=1"]):  # -k beyond the library: every image, no huge padding
        done, path = timed_query(imgvec, photos / "p0.jpg", "-k", "99999999999", "--json", *extra)
        assert done.exit_code == 0 and len(done.json()[0]["results"]) == 6
        assert path == ("cold" if not extra else "ordinary")
    # an index file damaged at its recorded size: FAISS cannot read it
    [segment] = (library / "index").glob("*.faiss")
    data = bytearray(segment.read_bytes())
    data[:8] = b"XXXXXXXX"
    segment.write_bytes(bytes(data))
    done = imgvec("query", photos / "p0.jpg")
    assert done.exit_code == 2 and done.stderr.startswith(
        f"error: the index file {segment} is damaged"
    )
    assert done.stderr.rstrip().endswith("imgvec index rebuild") and done.stderr.count("\n") == 1
    assert imgvec("index", "rebuild").exit_code == 0
    assert timed_query(imgvec, photos / "p0.jpg")[1] == "cold"
    # an unreadable file among new ones: the model is loaded once, by the ordinary path
    new = tmp_path / "outside" / "new.jpg"
    make_image(new, seed=43)
    broken = tmp_path / "outside" / "broken.jpg"
    broken.write_bytes(b"not an image")
    done, path = timed_query(imgvec, new, broken)
    assert (done.exit_code, path) == (1, "ordinary") and done.stderr.count("Loading model") == 1


def test_a_read_only_library_without_its_wal_files_is_queried_cold(
    imgvec, photos: Path, library: Path
) -> None:
    """A backup or read-only mount (no ``-shm`` can be made): SQLite's ``immutable=1``, as the
    ordinary path opens it. Without root's override of file modes, as CI runs as root."""
    assert imgvec("add", photos, *FAKE_ARGS).exit_code == 0
    assert not Path(f"{library}/imgvec.db-shm").exists()  # SQLite removes it with the last close
    modes = {p: p.stat().st_mode for p in [library, *library.rglob("*")]}
    for path in modes:
        path.chmod(path.stat().st_mode & ~0o222)
    try:
        done = subprocess.run(
            [*SETPRIV, sys.executable, RUNNER, "query", photos / "p0.jpg", "--timings", "--json"],
            capture_output=True,
            text=True,
            env={**os.environ, "IMGVEC_LIBRARY": str(library)},
            timeout=120,
        )
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
    assert done.returncode == 0, done.stderr
    assert "snapshot=" in done.stderr and json.loads(done.stdout)[0]["vector"] == "stored"
