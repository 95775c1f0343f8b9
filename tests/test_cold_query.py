"""Issue 15: ``imgvec query`` answered from a cold start without SQLAlchemy
(:mod:`imgvec.ops.cold_query`, :mod:`imgvec.storage.snapshot`), with the ordinary path's answers,
and the ordinary path wherever the quick one cannot answer."""

from __future__ import annotations

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
        for field in ("id", "name", "layer", "weights", "weights_path", "preprocessing", "dim"):
            assert getattr(record, field) == getattr(model, field)
        export, ours = store.model_export(session, model.id), snapshot.export(model.id)
        assert export is not None and ours is not None
        assert (ours.path, ours.size_bytes, ours.sha256) == (
            export.path,
            export.size_bytes,
            export.sha256,
        )
        version, mine = store.active_version(session, model.id), snapshot.active_version(model.id)
        assert version is not None and mine is not None
        assert (mine.id, mine.kind, mine.params, mine.change_seq) == (
            version.id,
            version.kind,
            version.params,
            version.change_seq,
        )
        assert snapshot.last_change(model.id) == store.last_change(session, model.id) > 0
        changes = store.changed_since(session, model.id, 0)
        assert snapshot.changed_since(model.id, 0) == changes and changes
        segments = store.segments_of(session, version.id)
        assert len(segments) > 1  # a base and a delta
        assert [(s.id, s.path, s.role, s.size_bytes, s.created_seq) for s in segments] == [
            (s.id, s.path, s.role, s.size_bytes, s.created_seq)
            for s in snapshot.segments(version.id)
        ]
        ids = store.vector_ids(session, model.id)
        paths = store.paths_of(session, ids)
        assert snapshot.paths([*ids, 10_000]) == paths
        for image_id, path in paths.items():
            row, image = store.image_by_path(session, path), snapshot.image(path)
            assert row is not None and image is not None
            assert (image.id, image.size, image.mtime_ns, image.error) == (
                row.id,
                row.size,
                row.mtime_ns,
                row.error,
            )
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
