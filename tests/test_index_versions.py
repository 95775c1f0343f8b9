"""Versioned index segments through the CLI: incremental updates, tombstones, compaction,
rebuild without a model, recall recorded, list/rollback/gc, verify."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from imgvec.api import Library
from imgvec.embed.loader import Models
from imgvec.storage import store
from tests.conftest import FAKE_ARGS, make_image

pytestmark = pytest.mark.databases


@pytest.fixture
def library_with_photos(imgvec, tmp_path: Path) -> Path:
    folder = tmp_path / "many"
    for i in range(60):
        make_image(folder / f"img{i:03d}.jpg", seed=500 + i, size=(48, 32))
    assert imgvec("add", folder, *FAKE_ARGS).exit_code == 0
    return folder


def index_status(imgvec) -> dict:
    result = imgvec("index", "status", "--json")
    assert result.exit_code == 0, result.stderr
    return result.json()


def names(results: list[dict]) -> list[str]:
    return [Path(r["path"]).name for r in results]


def test_first_add_builds_one_exact_base(imgvec, library_with_photos: Path) -> None:
    status = index_status(imgvec)
    assert status["kind"] == "flat" and status["operation"] == "build"
    assert [s["role"] for s in status["segments"]] == ["base"]
    assert status["n_vectors"] == 60 and status["behind"] is False


def test_adding_writes_only_a_small_delta_and_never_touches_the_base(
    imgvec,
    library_with_photos: Path,
    library: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = index_status(imgvec)["segments"][0]
    base_file = library / base["path"]
    before = base_file.stat()
    make_image(tmp_path / "new" / "fresh.jpg", seed=9999)

    def no_full_read(*_args: object) -> None:
        raise AssertionError("an update must not read all stored vectors")

    monkeypatch.setattr(store, "all_vectors", no_full_read)
    assert imgvec("add", tmp_path / "new", "--json").json()["added"] == 1

    status = index_status(imgvec)
    assert status["operation"] == "update"
    assert [s["role"] for s in status["segments"]] == ["base", "delta"]
    assert status["segments"][0]["path"] == base["path"]
    assert status["segments"][1]["n_vectors"] == 1
    after = base_file.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_size,
    )
    hits = imgvec("query", tmp_path / "new" / "fresh.jpg", "-k", "1", "--json").json()[0]
    assert names(hits["results"]) == ["fresh.jpg"]


def test_removed_images_are_tombstoned_not_rewritten(imgvec, library_with_photos: Path) -> None:
    base_path = index_status(imgvec)["segments"][0]["path"]
    assert imgvec("remove", library_with_photos / "img007.jpg").exit_code == 0
    status = index_status(imgvec)
    assert status["segments"][0]["path"] == base_path  # the base still holds id 7, filtered
    assert status["n_vectors"] == 59
    results = imgvec("query", library_with_photos / "img008.jpg", "-k", "60", "--json").json()
    assert "img007.jpg" not in names(results[0]["results"])
    assert len(results[0]["results"]) == 59


def test_re_embedded_image_is_found_by_its_new_content_only(
    imgvec, library_with_photos: Path, tmp_path: Path
) -> None:
    target = library_with_photos / "img003.jpg"
    make_image(target, seed=4242, size=(48, 32))
    import os

    os.utime(target, ns=(1, 1))
    assert imgvec("add", library_with_photos, "--json").json()["updated"] == 1
    probe = make_image(tmp_path / "probe.jpg", seed=4242, size=(48, 32))
    top = imgvec("query", probe, "-k", "60", "--json").json()[0]["results"]
    assert names(top)[0] == "img003.jpg" and top[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert names(top).count("img003.jpg") == 1  # the old vector is dead in the base


def test_many_small_updates_are_compacted_by_rule(
    imgvec, library_with_photos: Path, tmp_path: Path
) -> None:
    for i in range(18):
        make_image(tmp_path / f"batch{i}" / "x.jpg", seed=7000 + i)
        imgvec("add", tmp_path / f"batch{i}")
        segments = index_status(imgvec)["segments"]
        assert len(segments) <= 17  # never more than MAX_DELTA_SEGMENTS deltas plus the base
    status = index_status(imgvec)
    assert status["n_vectors"] == 78
    assert status["operation"] in ("compact", "update")
    assert any(v["operation"] == "compact" for v in imgvec("index", "list", "--json").json())
    assert names(
        imgvec("query", tmp_path / "batch3" / "x.jpg", "-k", "1", "--json").json()[0]["results"]
    ) == ["x.jpg"]


def test_compact_folds_everything_into_one_base(
    imgvec, library_with_photos: Path, tmp_path: Path
) -> None:
    make_image(tmp_path / "more" / "a.jpg", seed=31337)
    imgvec("add", tmp_path / "more")
    imgvec("remove", library_with_photos / "img000.jpg")
    before = imgvec("query", library_with_photos / "img010.jpg", "-k", "5", "--json").json()
    result = imgvec("index", "compact", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["operation"] == "compact"
    status = index_status(imgvec)
    assert [s["role"] for s in status["segments"]] == ["base"]
    assert status["segments"][0]["n_vectors"] == 60
    after = imgvec("query", library_with_photos / "img010.jpg", "-k", "5", "--json").json()
    assert before == after
    assert imgvec("index", "verify").exit_code == 0


def test_rebuild_loads_no_model_and_ivf_records_measured_recall(
    imgvec, library_with_photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Models, "embedder", lambda *a: pytest.fail("model loaded"))
    # A build streams the stored vectors in chunks (here 7 rows), never all of them at once.
    monkeypatch.setattr(store, "all_vectors", lambda *a: pytest.fail("all vectors read"))
    chunk_rows: list[int] = []
    iter_vectors = store.iter_vectors

    def small_chunks(session, model_id, dim, chunk=0):  # type: ignore[no-untyped-def]
        for ids, vectors in iter_vectors(session, model_id, dim, 7):
            chunk_rows.append(len(ids))
            yield ids, vectors

    monkeypatch.setattr(store, "iter_vectors", small_chunks)
    result = imgvec("index", "build", "--kind", "ivf", "--nlist", "2", "--json")
    assert result.exit_code == 0, result.stderr
    built = result.json()
    assert built["kind"] == "ivf" and built["params"]["nlist"] == 2
    assert built["params"]["nprobe"] in (1, 2)
    assert 0.0 < built["recall"] <= 1.0 and built["train_size"] == 60
    assert max(chunk_rows) == 7 and sum(chunk_rows) == 2 * 60  # sample, then index + truth
    text = imgvec("index", "status").stdout
    assert "Recall@10:" in text and "nprobe=" in text
    rebuilt = imgvec("index", "rebuild", "--json").json()
    assert rebuilt["kind"] == "flat"  # the automatic choice for 60 vectors
    assert rebuilt["operation"] == "build" and rebuilt["recall"] is None


def test_list_rollback_and_gc(
    imgvec, library_with_photos: Path, tmp_path: Path, library: Path
) -> None:
    first = index_status(imgvec)["id"]
    make_image(tmp_path / "later" / "b.jpg", seed=2024)
    imgvec("add", tmp_path / "later")
    versions = imgvec("index", "list", "--json").json()
    assert [v["status"] for v in versions][:2] == ["active", "retired"]
    assert versions[1]["id"] == first

    rolled = imgvec("index", "rollback", str(first), "--json")
    assert rolled.exit_code == 0, rolled.stderr
    # The rolled-back version is caught up at once: nothing committed is lost.
    hits = imgvec("query", tmp_path / "later" / "b.jpg", "-k", "1", "--json").json()[0]
    assert names(hits["results"]) == ["b.jpg"]
    assert imgvec("index", "rollback", "999").exit_code == 2

    files_before = set((library / "index").iterdir())
    gc = imgvec("index", "gc", "--keep", "0", "--json").json()
    assert gc["versions_deleted"] >= 1 and gc["files_deleted"] >= 1
    assert [v["status"] for v in imgvec("index", "list", "--json").json()] == ["active"]
    assert set((library / "index").iterdir()) < files_before
    assert imgvec("index", "verify").exit_code == 0
    assert names(
        imgvec("query", tmp_path / "later" / "b.jpg", "-k", "1", "--json").json()[0]["results"]
    ) == ["b.jpg"]


def test_verify_reports_truncated_missing_and_foreign_files(
    imgvec, library_with_photos: Path, library: Path, tmp_path: Path
) -> None:
    make_image(tmp_path / "d" / "c.jpg", seed=77)
    imgvec("add", tmp_path / "d")
    ok = imgvec("index", "verify", "--json")
    assert ok.exit_code == 0 and ok.json()["ok"] is True and ok.json()["live_vectors"] == 61

    segments = index_status(imgvec)["segments"]
    base, delta = library / segments[0]["path"], library / segments[1]["path"]
    (library / "index" / "stray.faiss").write_bytes(b"not ours")
    data = base.read_bytes()
    base.write_bytes(data[: len(data) // 2])
    delta.unlink()
    result = imgvec("index", "verify")
    assert result.exit_code == 1
    assert f"{segments[0]['path']}: size" in result.stderr and "truncated" in result.stderr
    assert f"{segments[1]['path']}: missing" in result.stderr
    assert "index/stray.faiss: foreign file" in result.stderr
    assert "stored vectors are not in the index" in result.stderr

    # The next query repairs the index from stored vectors; only the foreign file remains.
    assert names(
        imgvec("query", tmp_path / "d" / "c.jpg", "-k", "1", "--json").json()[0]["results"]
    ) == ["c.jpg"]
    again = imgvec("index", "verify", "--json").json()
    assert again["problems"] == ["index/stray.faiss: foreign file (not part of any index version)"]


def test_altered_file_fails_its_checksum(imgvec, library_with_photos: Path, library: Path) -> None:
    base = library / index_status(imgvec)["segments"][0]["path"]
    data = bytearray(base.read_bytes())
    data[-1] ^= 0xFF
    base.write_bytes(bytes(data))
    result = imgvec("index", "verify")
    assert result.exit_code == 1 and "checksum mismatch" in result.stderr


def test_a_removal_shows_even_while_another_process_holds_the_write_lock(
    imgvec, library_with_photos: Path, library: Path
) -> None:
    with Library.open(library) as writer, writer.writing():
        with writer.session() as session, session.begin():
            from imgvec.storage import store

            [victim] = store.image_ids_under(session, [str(library_with_photos / "img001.jpg")])
            store.delete_images(session, [victim])
        # A reader cannot update the index now, yet must not return the removed image.
        result = imgvec("query", library_with_photos / "img002.jpg", "-k", "60", "--json")
        assert result.exit_code == 0, result.stderr
        assert "Another process is updating the library" in result.stderr
        assert "img001.jpg" not in names(result.json()[0]["results"])
    assert index_status(imgvec)["behind"] is True
    assert imgvec("index", "verify", "--json").json()["pending_changes"] == 1
    imgvec("query", library_with_photos / "img002.jpg")  # catches up
    assert index_status(imgvec)["behind"] is False


@pytest.mark.sqlite_only
def test_a_library_from_revision_0001_gets_its_index_rebuilt(
    imgvec, library_with_photos: Path, library: Path
) -> None:
    from alembic import command

    from imgvec.storage.engine import alembic_config

    url = f"sqlite:///{library / 'imgvec.db'}"
    shutil.copy(library / "imgvec.db", library / "backup.db")
    command.downgrade(alembic_config(url), "0001")
    result = imgvec("query", library_with_photos / "img005.jpg", "-k", "1", "--json")
    assert result.exit_code == 0, result.stderr
    assert "Upgraded library schema from revision 0001" in result.stderr
    assert names(result.json()[0]["results"]) == ["img005.jpg"]
    assert imgvec("index", "verify").exit_code == 0


def test_one_library_object_sees_every_change_despite_its_search_cache(
    library_with_photos: Path, library: Path
) -> None:
    from imgvec.storage import store

    with Library.open(library) as lib:
        query = [library_with_photos / "img020.jpg"]
        assert any(h.path.endswith("img021.jpg") for h in lib.query(query, k=60)[0].hits)
        with lib.session() as session, session.begin():  # as another process would, unindexed
            [victim] = store.image_ids_under(session, [str(library_with_photos / "img021.jpg")])
            store.delete_images(session, [victim])
        with lib.writing():  # the index cannot catch up now: only tombstones can hide it
            hits = lib.query(query, k=60)[0].hits
        assert len(hits) == 59 and not any(h.path.endswith("img021.jpg") for h in hits)


def test_a_segment_tombstones_only_ids_it_holds(imgvec, tmp_path: Path) -> None:
    """Images added after a segment are not its tombstones: a flat segment searched with an id
    selector loses BLAS (about 10x slower), so a selector is made only for ids it holds."""
    from imgvec.api import Library
    from tests.conftest import FAKE_ARGS, make_image

    library = tmp_path / "lib"
    for i in range(3):
        make_image(tmp_path / "a" / f"{i}.jpg", seed=i)
    assert imgvec("add", tmp_path / "a", *FAKE_ARGS, "--library", library).exit_code == 0
    for i in range(3, 5):
        make_image(tmp_path / "b" / f"{i}.jpg", seed=i)
    assert imgvec("add", tmp_path / "b", "--library", library).exit_code == 0
    with Library.open(library) as lib:
        version, _ = lib.index().active()
        assert version is not None
        segments = lib.index().load(version)
        assert len(segments) == 2 and all(len(s.dead) == 0 for s in segments)
        assert segments[0].selector() is None
    make_image(tmp_path / "a" / "0.jpg", seed=99)  # changed: its old vector is in the base
    assert imgvec("add", tmp_path / "a", "--library", library).exit_code == 0
    with Library.open(library) as lib:
        version, _ = lib.index().active()
        assert version is not None
        base = lib.index().load(version)[0]
        changed = lib.sql("SELECT id FROM images WHERE path LIKE '%/a/0.jpg'").rows[0][0]
        assert base.dead.tolist() == [changed]


def test_vector_counts_follow_every_write(imgvec, library: Path, tmp_path: Path) -> None:
    """``models.vector_count`` (read by every update instead of counting the table) equals
    ``count(*)`` after adds, content changes, failures, moves, removals, a second model and
    an import."""
    from sqlalchemy import func, select

    from imgvec.storage.schema import Embedding, EmbeddingModel

    def agree() -> dict[str, int]:
        lib = Library.open(library, create=False)
        try:
            with lib.session() as session:
                stored = dict(
                    session.execute(
                        select(Embedding.model_id, func.count()).group_by(Embedding.model_id)
                    ).all()
                )
                kept = {
                    row.id: store.count_vectors(session, row.id)
                    for row in session.scalars(select(EmbeddingModel))
                }
        finally:
            lib.close()
        assert kept == {model_id: stored.get(model_id, 0) for model_id in kept}
        return {str(model_id): n for model_id, n in kept.items()}

    folder = tmp_path / "p"
    for i in range(6):
        make_image(folder / f"{i}.jpg", seed=700 + i)
    assert imgvec("add", folder, *FAKE_ARGS).exit_code == 0
    assert agree() == {"1": 6}
    make_image(folder / "0.jpg", seed=790)  # new content: the vector is replaced, not added
    (folder / "1.jpg").write_bytes(b"not an image")  # fails: its vector goes
    shutil.copy(folder / "2.jpg", folder / "2-copy.jpg")  # known content: reused
    (folder / "3.jpg").rename(folder / "3-moved.jpg")  # moved: keeps its row
    assert imgvec("add", folder, *FAKE_ARGS).exit_code == 1
    assert agree() == {"1": 6}
    assert imgvec("remove", folder / "4.jpg").exit_code == 0
    assert agree() == {"1": 5}
    assert imgvec("model", "use", "fake3", "--weights", "none").exit_code == 0
    assert agree() == {"1": 5, "2": 5}
    exported = tmp_path / "vectors.npz"
    assert imgvec("export", exported, "--model", "fake").exit_code == 0
    assert imgvec("model", "drop", "fake").exit_code == 0
    assert agree() == {"2": 5}
    assert imgvec("remove", folder).exit_code == 0
    assert agree() == {"2": 0}
    assert imgvec("add", folder, "--model", "fake3", "--weights", "none").exit_code == 1
    assert agree() == {"2": 6}  # with 4.jpg, removed from the library only
    assert imgvec("import", exported).exit_code == 0  # fake's vectors, matched by content
    assert agree() == {"2": 6, "3": 5}


def test_a_rolled_back_write_leaves_the_vector_count(imgvec, photos: Path, library: Path) -> None:
    assert imgvec("add", photos, *FAKE_ARGS).exit_code == 0
    lib = Library.open(library, create=False)
    try:
        with lib.session() as session:
            model = store.active_model(session)
            assert model is not None and store.count_vectors(session, model.id) == 6
        with pytest.raises(RuntimeError), lib.session() as session, session.begin():
            row = store.new_image(session, str(photos / "never.jpg"))
            session.flush()
            store.put_vector(session, row.id, model.id, bytes(4 * model.dim))
            store.delete_images(session, store.image_ids_under(session, [str(photos / "sub")]))
            raise RuntimeError("the write fails before its commit")
        with lib.session() as session, session.begin():
            store.delete_images(session, store.image_ids_under(session, [str(photos / "sub")]))
        with lib.session() as session:
            assert store.count_vectors(session, model.id) == 4
    finally:
        lib.close()


def test_a_large_build_shows_its_progress(
    imgvec, library_with_photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imgvec.index import segments

    result = imgvec("index", "rebuild")
    assert result.exit_code == 0 and "Indexing" not in result.stderr  # small: no bar
    monkeypatch.setattr(segments, "PROGRESS_MIN_VECTORS", 60)
    result = imgvec("index", "build", "--kind", "ivf", "--nlist", "1")
    assert result.exit_code == 0, result.stderr
    assert "Training the IVF index on 60 vectors" in result.stderr
    assert "Indexing" in result.stderr and "120/120" in result.stderr  # two passes over 60
