"""The two places a library's indexes can live, FAISS files (the default) and Milvus (here Milvus
Lite, the same pymilvus API as a Milvus server), run the same cases through the real CLI and
must answer alike; then what only Milvus has: its URL, its watermark repaired after a kill, its
collections verified and cleaned up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from imgvec.api import Library
from imgvec.errors import ImgvecError
from tests.conftest import FAKE_ARGS, Run, make_image

pytest.importorskip("pymilvus", reason="Milvus tests need pymilvus + milvus-lite (test extra)")

from imgvec.index import milvus

RUNNER = Path(__file__).resolve().parent / "run_imgvec.py"
APPLY = "imgvec.index.milvus:MilvusIndex._apply"
"""Where a writer applies committed changes to Milvus (killed there in a test)."""


@pytest.fixture(autouse=True)
def _close_milvus() -> Iterator[None]:
    """Each test's Milvus Lite store is freed at its end (one server thread per store)."""
    yield
    milvus.close_all()


@pytest.fixture(params=["faiss", "milvus-lite"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where new libraries keep their indexes (``IMGVEC_VECTORS``): FAISS files, or Milvus Lite."""
    if request.param == "milvus-lite":
        monkeypatch.setenv("IMGVEC_VECTORS", f"milvus-lite://{tmp_path / 'vectors.db'}")
    return str(request.param)


@contextmanager
def held_elsewhere(store_dir: Path) -> Iterator[None]:
    """Another process holds the Milvus Lite store (this one lets it go first)."""
    milvus.close_all()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pymilvus import MilvusClient; MilvusClient(sys.argv[1]); "
            "print('open', flush=True); sys.stdin.read()",
            str(store_dir),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        yield
    finally:
        holder.communicate("", timeout=60)


def milvus_lite(tmp_path: Path) -> str:
    return f"milvus-lite://{tmp_path / 'vectors.db'}"


def ranking(run: Run) -> list[tuple[str, float]]:
    [result] = run.json()
    return [(Path(h["path"]).name, h["score"]) for h in result["results"]]


def exact_ranking(library: Path, query: str) -> list[tuple[str, float]]:
    """Every image by exact cosine to the stored vector of ``query`` (the ground truth)."""
    with Library.open(library) as lib:
        ids, vectors = lib.vectors()
        with lib.session() as session:
            from imgvec.storage import store as sql

            paths = sql.paths_of(session, ids.tolist())
    names = [Path(paths[int(i)]).name for i in ids]
    scores = vectors @ vectors[names.index(query)]
    order = np.argsort(-scores, kind="stable")
    return [(names[i], float(scores[i])) for i in order]


def same(found: list[tuple[str, float]], expected: list[tuple[str, float]]) -> None:
    assert [n for n, _ in found] == [n for n, _ in expected]
    assert np.allclose([s for _, s in found], [s for _, s in expected], atol=1e-5)


def test_add_query_remove_and_where_answer_alike(
    store: str, imgvec: Callable[..., Run], photos: Path, library: Path, tmp_path: Path
) -> None:
    assert imgvec("add", photos, *FAKE_ARGS).exit_code == 0
    status = imgvec("status", "--json").json()
    assert status["vectors"] == (None if store == "faiss" else milvus_lite(tmp_path))
    assert status["index"]["kind"] == ("flat" if store == "faiss" else "milvus")

    found = imgvec("query", photos / "p0.jpg", "-k", "6", "--json")
    same(ranking(found), exact_ranking(library, "p0.jpg"))

    assert imgvec("remove", photos / "p1.jpg").exit_code == 0
    names = [n for n, _ in ranking(imgvec("query", photos / "p0.jpg", "-k", "6", "--json"))]
    assert "p1.jpg" not in names and len(names) == 5

    sub = "path LIKE '%/sub/%'"
    where = imgvec("query", photos / "p0.jpg", "-k", "6", "--where", sub, "--json")
    assert sorted(n for n, _ in ranking(where)) == ["p4.png", "p5.png"]

    make_image(photos / "p6.jpg", seed=6)
    assert imgvec("add", photos).exit_code == 0
    found = imgvec("query", photos / "p6.jpg", "-k", "6", "--json")
    same(ranking(found), exact_ranking(library, "p6.jpg")[:6])

    verify = imgvec("index", "verify", "--json")
    assert verify.exit_code == 0, verify.stdout
    assert verify.json()["live_vectors"] == 7 and verify.json()["problems"] == []


def test_model_switch_drop_and_dupes_answer_alike(
    store: str, imgvec: Callable[..., Run], photos: Path, library: Path
) -> None:
    (photos / "copy").mkdir()
    (photos / "copy" / "p2.jpg").write_bytes((photos / "p2.jpg").read_bytes())
    assert imgvec("add", photos, *FAKE_ARGS).exit_code == 0
    assert imgvec("model", "use", "fake3", "--weights", "none").exit_code == 0
    found = imgvec("query", photos / "p3.jpg", "-k", "3", "--json")
    assert found.exit_code == 0 and ranking(found)[0][0] == "p3.jpg"
    assert imgvec("model", "use", "fake").exit_code == 0
    groups = imgvec("dupes", "--json").json()["groups"]
    assert [sorted(Path(m["path"]).parent.name for m in g["members"]) for g in groups] == [
        ["copy", "photos"]
    ]
    assert imgvec("model", "drop", "fake3").exit_code == 0
    if store == "milvus-lite":
        with Library.open(library) as lib:
            names = milvus.client(milvus.parse_url(lib.vector_store() or "")).list_collections()
        assert len(names) == 1 and "_m1_" in names[0]  # fake3's collection went with it
    assert imgvec("index", "verify").exit_code == 0


def test_export_and_import_between_milvus_libraries(
    imgvec: Callable[..., Run], photos: Path, library: Path, tmp_path: Path
) -> None:
    assert imgvec("add", photos, *FAKE_ARGS, "--vectors", milvus_lite(tmp_path)).exit_code == 0
    expected = ranking(imgvec("query", photos / "p0.jpg", "-k", "6", "--json"))
    assert imgvec("export", tmp_path / "v.npz").exit_code == 0
    other, url = tmp_path / "other", f"milvus-lite://{tmp_path / 'other.db'}"
    fake3 = ["--model", "fake3", "--weights", "none"]
    assert imgvec("add", photos, *fake3, "--vectors", url, "-L", other).exit_code == 0
    imported = imgvec("import", tmp_path / "v.npz", "-L", other, "--json")
    assert imported.exit_code == 0 and imported.json()["imported"] == 6
    assert imgvec("model", "use", "fake", "-L", other).exit_code == 0  # its collection is built
    found = imgvec("query", photos / "p0.jpg", "-k", "6", "--json", "-L", other)
    same(ranking(found), expected)
    assert imgvec("index", "verify", "-L", other).exit_code == 0


def test_moving_the_indexes_to_milvus_and_back_changes_no_answer(
    imgvec: Callable[..., Run], photos: Path, library: Path, tmp_path: Path
) -> None:
    assert imgvec("add", photos, *FAKE_ARGS).exit_code == 0
    expected = ranking(imgvec("query", photos / "p0.jpg", "-k", "6", "--json"))
    moved = imgvec("index", "move", milvus_lite(tmp_path), "--json")
    assert moved.exit_code == 0
    assert moved.json() == {"vectors": milvus_lite(tmp_path), "models": ["fake"]}
    assert list((library / "index").iterdir()) == []  # the FAISS files went
    same(ranking(imgvec("query", photos / "p0.jpg", "-k", "6", "--json")), expected)
    assert imgvec("index", "verify").exit_code == 0
    assert imgvec("model", "use", "fake3", "--weights", "none").exit_code == 0  # built in Milvus

    back = imgvec("index", "move", "files", "--json")
    assert back.exit_code == 0 and back.json() == {"vectors": None, "models": ["fake", "fake3"]}
    assert imgvec("index", "verify").exit_code == 0
    assert imgvec("model", "use", "fake").exit_code == 0
    same(ranking(imgvec("query", photos / "p0.jpg", "-k", "6", "--json")), expected)
    assert milvus.client(milvus.parse_url(milvus_lite(tmp_path))).list_collections() == []


def test_a_move_cut_short_keeps_the_old_store_until_it_is_run_again(
    imgvec: Callable[..., Run], photos: Path, library: Path, tmp_path: Path
) -> None:
    assert imgvec("add", photos, *FAKE_ARGS).exit_code == 0
    env = {
        **os.environ,
        "IMGVEC_LIBRARY": str(library),
        "IMGVEC_TEST_KILL_AT": "imgvec.storage.store:set_vector_store",  # built, not switched
    }
    killed = subprocess.run(
        [sys.executable, str(RUNNER), "index", "move", milvus_lite(tmp_path)],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    status = imgvec("status", "--json").json()
    assert status["vectors"] is None and status["index"]["kind"] == "flat"  # the old store
    assert imgvec("index", "verify").exit_code == 0
    found = imgvec("query", photos / "p0.jpg", "-k", "6", "--json")  # rebuilds its FAISS files
    same(ranking(found), exact_ranking(library, "p0.jpg"))
    assert imgvec("index", "verify").exit_code == 0

    assert imgvec("index", "move", milvus_lite(tmp_path)).exit_code == 0
    assert imgvec("status", "--json").json()["vectors"] == milvus_lite(tmp_path)
    same(ranking(imgvec("query", photos / "p0.jpg", "-k", "6", "--json")), ranking(found))
    verify = imgvec("index", "verify", "--json")
    assert verify.exit_code == 0 and verify.json()["leftovers"] == []
    assert len(milvus.client(milvus.parse_url(milvus_lite(tmp_path))).list_collections()) == 1


def test_a_store_that_is_down_refuses_a_change_before_it_is_made(
    imgvec: Callable[..., Run], photos: Path, library: Path, tmp_path: Path, monkeypatch
) -> None:
    url = milvus_lite(tmp_path)
    assert imgvec("add", photos, *FAKE_ARGS, "--vectors", url).exit_code == 0
    make_image(photos / "new.jpg", seed=60)
    with held_elsewhere(tmp_path / "vectors.db"):
        for args in (("add", photos), ("remove", photos / "p0.jpg")):
            refused = imgvec(*args)
            assert refused.exit_code == 2 and "another process has it open" in refused.stderr
    with Library.open(library) as lib:
        assert lib.sql("SELECT count(*) FROM images").rows == [(6,)]  # nothing changed

    # A store that fails after the commit: the change stays, a notice says so, exit 0.
    def down(*_args: object) -> None:
        raise milvus.VectorStoreError("the vector store is down (test)")

    with monkeypatch.context() as patch:
        patch.setattr(milvus.MilvusIndex, "_apply", down)
        added = imgvec("add", photos, "--json")
    assert added.exit_code == 0 and added.json()["added"] == 1
    assert "The index was not brought up to date (the vector store is down (test))" in added.stderr
    assert imgvec("index", "status", "--json").json()["behind"] is True
    assert imgvec("add", photos).exit_code == 0  # the next writer applies it
    assert ranking(imgvec("query", photos / "new.jpg", "-k", "1", "--json"))[0][0] == "new.jpg"


def test_a_lost_collection_is_rebuilt_by_the_next_query(
    imgvec: Callable[..., Run], photos: Path, library: Path, tmp_path: Path
) -> None:
    assert imgvec("add", photos, *FAKE_ARGS, "--vectors", milvus_lite(tmp_path)).exit_code == 0
    expected = ranking(imgvec("query", photos / "p0.jpg", "-k", "6", "--json"))
    with Library.open(library) as lib:
        name = lib.index_status().params["collection"]  # type: ignore[union-attr]
    milvus.client(milvus.parse_url(milvus_lite(tmp_path))).drop_collection(name)
    lost = imgvec("index", "verify")
    assert lost.exit_code == 1 and f"Milvus collection {name}: missing" in lost.stderr
    found = imgvec("query", photos / "p0.jpg", "-k", "6", "--json")
    assert found.exit_code == 0 and "rebuilding it from stored vectors" in found.stderr
    same(ranking(found), expected)
    assert imgvec("index", "verify").exit_code == 0


def test_imgvec_vectors_is_for_new_libraries_only(
    imgvec: Callable[..., Run], photos: Path, monkeypatch
) -> None:
    assert imgvec("add", photos, *FAKE_ARGS).exit_code == 0
    monkeypatch.setenv("IMGVEC_VECTORS", "redis://nowhere:1")  # ignored, even unreadable
    assert imgvec("add", photos).exit_code == 0
    assert imgvec("status", "--json").json()["vectors"] is None


def test_a_kill_between_the_commit_and_milvus_is_repaired_by_the_next_writer(
    imgvec: Callable[..., Run], photos: Path, library: Path, tmp_path: Path
) -> None:
    url = milvus_lite(tmp_path)
    assert imgvec("add", photos, *FAKE_ARGS, "--vectors", url).exit_code == 0
    milvus.close_all()  # the store is the child's now
    make_image(photos / "new.jpg", seed=60)
    env = {**os.environ, "IMGVEC_LIBRARY": str(library), "IMGVEC_TEST_KILL_AT": APPLY}
    killed = subprocess.run(
        [sys.executable, str(RUNNER), "add", photos], env=env, capture_output=True, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL
    status = imgvec("index", "status", "--json").json()
    assert status["behind"] is True  # the image is committed; the collection lacks it
    verify = imgvec("index", "verify", "--json").json()
    assert verify["pending_changes"] == 1 and verify["problems"] == []

    assert imgvec("add", photos).exit_code == 0  # the next writer applies it
    assert imgvec("index", "status", "--json").json()["behind"] is False
    found = ranking(imgvec("query", photos / "new.jpg", "-k", "1", "--json"))
    assert found[0][0] == "new.jpg" and found[0][1] == pytest.approx(1.0, abs=1e-5)
    verify = imgvec("index", "verify", "--json").json()
    assert verify["live_vectors"] == 7 and verify["problems"] == []


def test_changes_not_yet_in_milvus_are_left_out_of_results(
    photos: Path, library: Path, tmp_path: Path
) -> None:
    with Library.open(library) as lib:
        lib.add(photos, model="fake", weights="none", vectors=milvus_lite(tmp_path))
        row = lib.active_model_row()
        index = lib.index()
        version, _ = index.active()
        assert version is not None
        ids, vectors = lib.vectors()
        gone = int(ids[1])
        with lib.session() as session, session.begin():
            from imgvec.storage import store as sql

            sql.delete_images(session, [gone])  # committed, not applied to Milvus
        _, found = index.search(version, vectors[1:2], 6)
        assert gone not in found[0].tolist() and (found[0] >= 0).sum() == 5
        assert lib.verify_index().pending_changes == 1
        assert row.id == version.model_id


def test_verify_finds_what_milvus_lost_and_rebuild_restores_it(
    imgvec: Callable[..., Run], photos: Path, library: Path, tmp_path: Path
) -> None:
    assert imgvec("add", photos, *FAKE_ARGS, "--vectors", milvus_lite(tmp_path)).exit_code == 0
    with Library.open(library) as lib:
        ids, _ = lib.vectors()
        name = lib.index_status().params["collection"]  # type: ignore[union-attr]
        client = milvus.client(milvus.parse_url(lib.vector_store() or ""))
        client.delete(name, ids=[int(ids[0])])
        client.flush(name)
        client.create_collection(name.rsplit("_", 1)[0] + "_crashedbuild", dimension=48)
    verify = imgvec("index", "verify", "--json")
    assert verify.exit_code == 1
    assert verify.json()["problems"] == [
        f"1 stored vectors are not in the collection (e.g. image ids [{int(ids[0])}])"
    ]
    assert verify.json()["leftovers"] == [name.rsplit("_", 1)[0] + "_crashedbuild"]
    assert imgvec("index", "rebuild").exit_code == 0
    verify = imgvec("index", "verify", "--json")
    assert verify.exit_code == 0 and verify.json()["live_vectors"] == 6
    assert verify.json()["leftovers"] == []  # the rebuild (a writer) dropped the orphan
    with Library.open(library) as lib:
        assert client.list_collections() == [lib.index_status().params["collection"]]  # type: ignore[union-attr]


def test_what_milvus_cannot_do_is_refused_in_one_line(
    imgvec: Callable[..., Run], photos: Path, tmp_path: Path
) -> None:
    assert imgvec("add", photos, *FAKE_ARGS, "--vectors", milvus_lite(tmp_path)).exit_code == 0
    for args, words in [
        (("index", "rollback", "1"), "keeps no earlier index versions"),
        (("index", "build", "--kind", "ivf"), "Milvus chooses the index"),
        (("add", photos, "--vectors", f"milvus-lite://{tmp_path / 'x.db'}"), "imgvec index move"),
    ]:
        run = imgvec(*args)
        assert run.exit_code == 2, (args, run.stdout, run.stderr)
        assert run.stderr.count("\n") == 1 and words in run.stderr, run.stderr


def test_bad_or_unreachable_stores_are_one_line_and_record_nothing(
    imgvec: Callable[..., Run], photos: Path, library: Path, tmp_path: Path
) -> None:
    for url, words in [
        ("redis://x:1", "expected milvus://HOST:PORT[/DB] or milvus-lite://PATH.db"),
        ("milvus://nohost", "expected milvus://HOST:PORT[/DB]"),
        (f"milvus-lite://{tmp_path / 'v.txt'}", "a Milvus Lite path ends in .db"),
        ("milvus://127.0.0.1:1", "cannot open the vector store milvus://127.0.0.1:1"),
    ]:
        run = imgvec("add", photos, *FAKE_ARGS, "--vectors", url)
        assert run.exit_code == 2, (url, run.stdout, run.stderr)
        [error] = [line for line in run.stderr.splitlines() if line.startswith("error:")]
        assert words in error, run.stderr
        others = [line for line in run.stderr.splitlines() if line != error]
        assert all(line.startswith("Created library schema") for line in others), run.stderr
        assert "Created library schema" not in run.stderr  # checked before a library is made
    assert not library.exists()
    assert imgvec("add", photos, *FAKE_ARGS).exit_code == 0  # FAISS files, as before
    refused = imgvec("init", "--vectors", milvus_lite(tmp_path))
    assert refused.exit_code == 2
    assert "keeps its indexes in FAISS files in the library folder" in refused.stderr


def test_a_milvus_lite_store_open_in_another_process_is_named(
    imgvec: Callable[..., Run], photos: Path, tmp_path: Path
) -> None:
    url = milvus_lite(tmp_path)
    assert imgvec("add", photos, *FAKE_ARGS, "--vectors", url).exit_code == 0
    with held_elsewhere(tmp_path / "vectors.db"):
        run = imgvec("query", photos / "p0.jpg")
        assert run.exit_code == 2
        assert run.stderr.count("\n") == 1 and "another process has it open" in run.stderr


@pytest.mark.parametrize(
    ("url", "uri", "db", "lite"),
    [
        ("milvus://db.example:19530", "http://db.example:19530", "", False),
        ("milvus://10.0.0.2:19530/photos", "http://10.0.0.2:19530", "photos", False),
        ("milvus-lite:///data/v.db", "/data/v.db", "", True),
        ("milvus-lite://rel/v.db", "/work/rel/v.db", "", True),
    ],
)
def test_parse_url(url: str, uri: str, db: str, lite: bool) -> None:
    target = milvus.parse_url(url, cwd=Path("/work"))
    assert (target.uri, target.db_name, target.lite) == (uri, db, lite)
    assert milvus.parse_url(target.url, cwd=Path("/elsewhere")) == target  # recorded absolutely


@pytest.mark.parametrize(
    "url",
    [
        "milvus://h",
        "milvus://h:0",
        "milvus://:19530",
        "milvus://h:x",
        "milvus-lite://",
        "ftp://h:1",
    ],
)
def test_parse_url_refuses(url: str) -> None:
    with pytest.raises(ImgvecError, match="--vectors"):
        milvus.parse_url(url)
