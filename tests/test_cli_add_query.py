"""The main workflow through the real CLI: add, re-add, change, move, copy, vanish, query."""

from __future__ import annotations

import gc
import shutil
from pathlib import Path
from typing import Any

import pytest

from imgvec.api import Library
from imgvec.embed import batches
from imgvec.embed.loader import Models
from imgvec.index.segments import IndexStore
from imgvec.storage import store
from tests.conftest import FAKE_ARGS, make_image, set_mtime

pytestmark = pytest.mark.databases


def test_add_then_query_finds_the_image_itself_first(imgvec, photos: Path) -> None:
    result = imgvec("add", photos, *FAKE_ARGS, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["added"] == 6
    assert result.json()["failed"] == 0

    hits = imgvec("query", photos / "p2.jpg", "-k", "3", "--json").json()[0]
    assert hits["vector"] == "stored"
    assert Path(hits["results"][0]["path"]).name == "p2.jpg"
    assert hits["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    scores = [h["score"] for h in hits["results"]]
    assert scores == sorted(scores, reverse=True)
    assert len(scores) == 3


def test_query_image_outside_the_library_is_embedded(imgvec, photos: Path, tmp_path: Path) -> None:
    imgvec("add", photos, *FAKE_ARGS)
    outside = tmp_path / "elsewhere" / "copy.jpg"
    outside.parent.mkdir()
    shutil.copy(photos / "p1.jpg", outside)
    result = imgvec("query", outside, "--json").json()[0]
    assert result["vector"] == "embedded"
    assert Path(result["results"][0]["path"]).name == "p1.jpg"
    assert result["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_many_query_images_are_embedded_in_batches_and_answered_in_order(
    imgvec, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    imgvec("add", photos, *FAKE_ARGS)
    outside = tmp_path / "queries"
    queries = [make_image(outside / f"q{i:02}.png", seed=100 + i) for i in range(40)]
    broken = outside / "broken.jpg"
    broken.write_bytes(b"not a picture")
    queries.insert(17, broken)
    batch_sizes: list[int] = []
    real = Models.embed
    monkeypatch.setattr(
        Models,
        "embed",
        lambda self, row, batch, bulk=False: (
            batch_sizes.append(len(batch)) or real(self, row, batch, bulk)
        ),
    )

    result = imgvec("query", *queries, "-k", "1", "--timings", "--json")

    assert result.exit_code == 1  # one query could not be read
    answers = result.json()
    assert [Path(a["query"]).name for a in answers] == [q.name for q in queries]
    assert "not an image" in answers[17]["error"] and answers[17]["results"] == []
    assert "broken.jpg" in result.stderr  # the one-line error names the file
    assert all(a["vector"] == "embedded" for i, a in enumerate(answers) if i != 17)
    assert batch_sizes == [31, 9]  # 32 per batch, less the unreadable one
    timings = result.stderr.split("timings (s): ")[1].split()
    # add exported the model: the query runs it on ONNX Runtime, without torch
    stages = ["open", "model_load", "import_onnxruntime", "embed", "import_faiss", "index_load"]
    assert [t.split("=")[0] for t in timings] == [*stages, "search"]


def test_table_output_lists_paths_and_scores(imgvec, photos: Path) -> None:
    imgvec("add", photos, *FAKE_ARGS)
    result = imgvec("query", photos / "p0.jpg", "-k", "2")
    assert result.exit_code == 0
    assert "p0.jpg" in result.stdout
    assert "1.0000" in result.stdout


def test_unchanged_files_cost_a_stat_and_load_no_model(
    imgvec, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    imgvec("add", photos, *FAKE_ARGS)

    def forbidden(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("an unchanged library must not read files or load a model")

    monkeypatch.setattr(batches, "read_file", forbidden)
    monkeypatch.setattr(Models, "embedder", forbidden)
    monkeypatch.setattr(IndexStore, "update", forbidden)  # nor touch FAISS
    result = imgvec("add", photos, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["unchanged"] == 6
    assert result.json()["added"] == result.json()["updated"] == 0


def test_touched_file_with_same_content_is_not_re_embedded(
    imgvec, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    imgvec("add", photos, *FAKE_ARGS)
    set_mtime(photos / "p0.jpg", 1_000_000_000_000_000_000)
    monkeypatch.setattr(Models, "embedder", lambda *a: pytest.fail("model loaded"))
    report = imgvec("add", photos, "--json").json()
    assert report["unchanged"] == 6
    # The refreshed stat makes the next run skip the file without reading it.
    monkeypatch.setattr(batches, "read_file", lambda _p: pytest.fail("file read"))
    assert imgvec("add", photos, "--json").json()["unchanged"] == 6


def test_changed_file_is_re_embedded(imgvec, photos: Path, tmp_path: Path) -> None:
    imgvec("add", photos, *FAKE_ARGS)
    before = imgvec("query", photos / "p0.jpg", "--json").json()[0]["results"][0]
    make_image(photos / "p0.jpg", seed=99)
    set_mtime(photos / "p0.jpg", 2_000_000_000_000_000_000)
    report = imgvec("add", photos, "--json").json()
    assert report["updated"] == 1
    assert report["unchanged"] == 5
    probe = make_image(tmp_path / "probe.jpg", seed=99)
    after = imgvec("query", probe, "-k", "1", "--json").json()[0]["results"][0]
    assert Path(after["path"]).name == "p0.jpg"
    assert after["id"] == before["id"]  # same row, new vector
    assert after["score"] == pytest.approx(1.0, abs=1e-4)


def test_moved_file_keeps_its_row_and_vector(
    imgvec, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    imgvec("add", photos, *FAKE_ARGS)
    old_id = imgvec("query", photos / "p3.jpg", "--json").json()[0]["results"][0]["id"]
    (photos / "sub" / "deeper").mkdir()
    (photos / "p3.jpg").rename(photos / "sub" / "deeper" / "renamed.jpg")
    monkeypatch.setattr(Models, "embedder", lambda *a: pytest.fail("model loaded"))
    # Known contents are asked of the database per file, never read all at once.
    monkeypatch.setattr(store, "hashes_with_vectors", lambda *a: pytest.fail("every hash read"))
    report = imgvec("add", photos, "--json").json()
    assert (report["moved"], report["added"], report["removed"]) == (1, 0, 0)
    hit = imgvec("query", photos / "sub" / "deeper" / "renamed.jpg", "--json").json()[0]
    assert hit["vector"] == "stored"
    assert hit["results"][0]["id"] == old_id
    assert hit["results"][0]["path"].endswith("renamed.jpg")


def test_second_copy_reuses_the_vector(
    imgvec, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    imgvec("add", photos, *FAKE_ARGS)
    shutil.copy(photos / "p1.jpg", photos / "p1-copy.jpg")
    monkeypatch.setattr(Models, "embedder", lambda *a: pytest.fail("model loaded"))
    monkeypatch.setattr(store, "hashes_with_vectors", lambda *a: pytest.fail("every hash read"))
    report = imgvec("add", photos, "--json").json()
    assert report["added"] == 1 and report["moved"] == 0
    results = imgvec("query", photos / "p1.jpg", "-k", "2", "--json").json()[0]["results"]
    assert {Path(r["path"]).name for r in results} == {"p1.jpg", "p1-copy.jpg"}
    assert all(r["score"] == pytest.approx(1.0, abs=1e-5) for r in results)


def test_copies_within_one_batch_are_embedded_once(
    imgvec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "dups"
    make_image(folder / "a.jpg", seed=1)
    shutil.copy(folder / "a.jpg", folder / "b.jpg")
    calls: list[int] = []
    real = Models.embed
    monkeypatch.setattr(
        Models,
        "embed",
        lambda self, row, batch, bulk=False: (
            calls.append(len(batch)) or real(self, row, batch, bulk)
        ),
    )
    report = imgvec("add", folder, *FAKE_ARGS, "--json").json()
    assert report["added"] == 2
    assert calls == [1]


def test_vanished_files_are_removed_and_reported(imgvec, photos: Path) -> None:
    imgvec("add", photos, *FAKE_ARGS)
    (photos / "p0.jpg").unlink()
    shutil.rmtree(photos / "sub")
    result = imgvec("add", photos)
    assert result.exit_code == 0
    assert "removed 3" in result.stdout.lower()
    assert "Removed 3 files that are gone" in result.stderr
    assert imgvec("status", "--json").json()["images"] == 3
    names = {
        Path(r["path"]).name
        for r in imgvec("query", photos / "p1.jpg", "-k", "10", "--json").json()[0]["results"]
    }
    assert names == {"p1.jpg", "p2.jpg", "p3.jpg"}


def test_adding_one_folder_does_not_remove_another(imgvec, photos: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    make_image(other / "o.jpg", seed=50)
    imgvec("add", photos, other, *FAKE_ARGS)
    report = imgvec("add", other, "--json").json()
    assert report["removed"] == 0
    assert imgvec("status", "--json").json()["images"] == 7


def test_remove_files_and_folders(imgvec, photos: Path) -> None:
    imgvec("add", photos, *FAKE_ARGS)
    result = imgvec("remove", photos / "sub", photos / "p0.jpg", "--json")
    assert result.exit_code == 0
    assert result.json() == {"removed": 3, "errors": []}
    results = imgvec("query", photos / "p1.jpg", "-k", "10", "--json").json()[0]["results"]
    assert {Path(r["path"]).name for r in results} == {"p1.jpg", "p2.jpg", "p3.jpg"}
    assert (photos / "p0.jpg").exists()  # the file itself is untouched


def test_remove_of_unknown_path_fails_with_its_name(imgvec, photos: Path) -> None:
    imgvec("add", photos, *FAKE_ARGS)
    result = imgvec("remove", photos / "nope.jpg")
    assert result.exit_code == 1
    assert "nope.jpg: not in the library" in result.stderr


@pytest.mark.databases
def test_folder_prefix_does_not_match_sibling_names(imgvec, tmp_path: Path) -> None:
    """A folder is a range of paths on SQLite (``a/`` up to ``a0``): names that sort next to
    it, byte by byte, stay out ("-", "." and "0" around "/"; a non-ASCII name inside)."""
    inside = [tmp_path / "a" / "x.jpg", tmp_path / "a" / "sub" / "é.jpg", tmp_path / "a" / "0.jpg"]
    beside = [tmp_path / name / "y.jpg" for name in ("ab", "a-b", "a.b", "a0", "a 1", "A")]
    beside.append(tmp_path / "a.jpg")
    for seed, path in enumerate(inside + beside):
        make_image(path, seed=seed)
    assert imgvec("add", tmp_path, *FAKE_ARGS).exit_code == 0
    assert imgvec("remove", tmp_path / "a", "--json").json()["removed"] == len(inside)
    assert imgvec("status", "--json").json()["images"] == len(beside)
    report = imgvec("add", tmp_path / "a0", "--json").json()  # a folder's own rows: no others
    assert (report["unchanged"], report["removed"]) == (1, 0)


def test_missing_path_is_reported_and_the_rest_is_added(imgvec, photos: Path) -> None:
    result = imgvec("add", photos, photos / "missing", *FAKE_ARGS, "--json")
    assert result.exit_code == 1
    report = result.json()
    assert report["added"] == 6
    assert report["errors"] == [
        {"path": str(photos / "missing"), "reason": "no such file or directory"}
    ]


def test_images_are_found_by_content_not_only_extension(imgvec, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    make_image(folder / "no_extension", seed=3, fmt="PNG")
    make_image(folder / "wrong.dat", seed=4, fmt="JPEG")
    (folder / "notes.txt").write_text("not an image")
    report = imgvec("add", folder, *FAKE_ARGS, "--json").json()
    assert report["added"] == 2
    assert report["failed"] == 0


def test_model_is_fixed_by_the_first_add(imgvec, photos: Path) -> None:
    imgvec("add", photos, *FAKE_ARGS)
    result = imgvec("add", photos, "--model", "mobilenet_v2", "--weights", "none")
    assert result.exit_code == 2
    assert "this library embeds with fake/grid" in result.stderr
    assert "to switch: imgvec model use mobilenet_v2" in result.stderr
    # The same model again is fine.
    assert imgvec("add", photos, *FAKE_ARGS).exit_code == 0


def test_init_fixes_the_model_and_reports_it(imgvec, photos: Path) -> None:
    result = imgvec("init", *FAKE_ARGS, "--json")
    assert result.exit_code == 0
    assert result.json()["model"]["name"] == "fake"
    assert result.json()["model"]["dim"] == 48
    assert imgvec("add", photos, "--json").json()["added"] == 6
    status = imgvec("status", "--json").json()
    assert status["models"][0]["model"]["name"] == "fake"
    assert status["models"][0]["embeddings"] == 6


def test_unknown_model_and_layer_are_clear_errors(imgvec, photos: Path) -> None:
    result = imgvec("add", photos, "--model", "nope")
    assert result.exit_code == 2
    assert "unknown model 'nope'" in result.stderr and "vit_b_16" in result.stderr
    result = imgvec("add", photos, "--model", "resnet50", "--layer", "fc9", "--weights", "none")
    assert result.exit_code == 2
    assert "no layer 'fc9'" in result.stderr and "avgpool" in result.stderr


def test_status_reports_images_models_and_index(imgvec, photos: Path, database: str) -> None:
    imgvec("add", photos, *FAKE_ARGS)
    status = imgvec("status", "--json").json()
    assert status["database"].startswith(database)  # the backend this run is about
    assert status["images"] == 6 and status["failed"] == 0
    assert status["index"]["kind"] == "flat"
    assert status["index"]["n_vectors"] == 6
    assert status["index"]["stale"] is False
    assert status["index"]["segments"] == 1
    assert status["index"]["size_bytes"] > 6 * 48 * 4
    text = imgvec("status").stdout
    assert "Images:   6" in text and "flat" in text


def test_commands_on_a_missing_library_say_how_to_start(imgvec, tmp_path: Path) -> None:
    result = imgvec("query", tmp_path / "x.jpg", "--library", tmp_path / "none")
    assert result.exit_code == 2
    assert "imgvec add" in result.stderr


def test_library_option_and_db_url(imgvec, photos: Path, tmp_path: Path) -> None:
    lib = tmp_path / "lib2"
    db = tmp_path / "meta" / "elsewhere.db"
    result = imgvec("add", photos, *FAKE_ARGS, "--library", lib, "--db", f"sqlite:///{db}")
    assert result.exit_code == 0, result.stderr
    assert db.is_file()
    assert not (lib / "imgvec.db").exists()
    assert list((lib / "index").glob("*.faiss"))
    status = imgvec("status", "--library", lib, "--db", f"sqlite:///{db}", "--json").json()
    assert status["images"] == 6
    assert status["database"].endswith("elsewhere.db")


def test_first_open_says_it_created_the_schema(imgvec, photos: Path) -> None:
    result = imgvec("add", photos, *FAKE_ARGS)
    assert "Created library schema" in result.stderr
    assert "Created library schema" not in imgvec("add", photos).stderr


def test_stale_index_is_rebuilt_before_a_query(imgvec, photos: Path, library: Path) -> None:
    imgvec("add", photos, *FAKE_ARGS)
    for artifact in (library / "index").glob("*.faiss"):
        artifact.write_bytes(b"damaged")
    result = imgvec("query", photos / "p1.jpg", "--json")
    assert result.exit_code == 0
    assert "is missing or damaged; rebuilding the index from stored vectors" in result.stderr
    assert Path(result.json()[0]["results"][0]["path"]).name == "p1.jpg"


def test_python_api_does_what_the_cli_does(photos: Path, tmp_path: Path) -> None:
    with Library.open(tmp_path / "api-lib") as lib:
        report = lib.add([photos], model="fake", weights="none")
        assert report.added == 6
        [result] = lib.query([photos / "sub" / "p4.png"], k=2)
        assert result.hits[0].path == str(photos / "sub" / "p4.png")
        assert lib.remove([photos / "sub"]).removed == 2
        assert lib.status().images == 4


def test_add_streams_only_two_batches_of_pictures_are_alive_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "many"
    for number in range(100):
        make_image(folder / f"{number:03}.png", seed=number)
    alive: list[int] = []
    real = batches.embed_new_contents

    def counting(*args: Any, **kwargs: Any) -> dict[str, bytes]:
        gc.collect()
        loaded = [o for o in gc.get_objects() if type(o) is batches.Loaded]
        alive.append(sum(o.inputs is not None or o.picture is not None for o in loaded))
        return real(*args, **kwargs)

    monkeypatch.setattr(batches, "embed_new_contents", counting)
    with Library.open(tmp_path / "lib") as lib:
        report = lib.add([folder], model="fake", weights="none", batch_size=10)

    assert report.added == 100 and len(alive) == 10
    assert max(alive) <= 20  # the batch being embedded and the next one being prepared


def test_timings_of_the_real_command_start_with_its_imports(
    imgvec, photos: Path, database: str
) -> None:
    """``python -m imgvec`` (the entry point) times its own imports; a stored vector needs no
    model, so the fake model need not be registered in the child."""
    import subprocess
    import sys

    assert imgvec("add", photos, *FAKE_ARGS).exit_code == 0
    done = subprocess.run(
        [sys.executable, "-m", "imgvec", "query", str(photos / "p0.jpg"), "--timings", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    timings = dict(t.split("=") for t in done.stderr.split("timings (s): ")[1].split())
    # on SQLite, answered without opening the library through SQLAlchemy (imgvec.ops.cold_query)
    opened = "snapshot" if database == "sqlite" else "open"
    assert list(timings)[:3] == ["imports", "parse", opened] and "import_torch" not in timings
    assert 0 < float(timings["imports"]) < 60
