"""Switching embedding models: beside the old one, resumable, instant back, queryable, droppable."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgvec.embed.loader import Models
from tests.conftest import FAKE_ARGS, make_image
from tests.fake_model import FAKE3_DIM, FAKE_DIM

pytestmark = pytest.mark.databases


@pytest.fixture
def photos40(imgvec, tmp_path: Path) -> Path:
    folder = tmp_path / "p40"
    for i in range(40):
        make_image(folder / f"{i:02d}.jpg", seed=300 + i, size=(40, 30))
    assert imgvec("add", folder, *FAKE_ARGS).exit_code == 0
    return folder


def models(imgvec) -> dict[str, dict]:
    listing = imgvec("model", "list", "--json")
    assert listing.exit_code == 0, listing.stderr
    return {m["model"]["name"]: m for m in listing.json()}


def test_model_use_embeds_beside_then_switches(imgvec, photos40: Path) -> None:
    result = imgvec("model", "use", "fake3", "--weights", "none", "--batch-size", "8", "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert (report["embedded"], report["already"], report["switched"]) == (40, 0, True)
    listed = models(imgvec)
    assert listed["fake3"]["active"] and not listed["fake"]["active"]
    assert listed["fake"]["embeddings"] == 40 and listed["fake"]["complete"]  # the old one stays
    assert listed["fake3"]["model"]["dim"] == FAKE3_DIM
    hits = imgvec("query", photos40 / "05.jpg", "-k", "1", "--json").json()[0]["results"]
    assert Path(hits[0]["path"]).name == "05.jpg"
    assert "fake3/grid" in imgvec("status").stdout


def test_interrupted_switch_keeps_the_old_model_and_resumes(
    imgvec, photos40: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imgvec.embed.runtime import Embedder

    original = Embedder.embed_tensors
    calls = {"n": 0}

    def flaky(self: Embedder, batch):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, batch)

    with monkeypatch.context() as patch:
        patch.setattr(Embedder, "embed_tensors", flaky)
        result = imgvec("model", "use", "fake3", "--weights", "none", "--batch-size", "8")
    assert result.exit_code == 130
    assert "run the same command again to continue" in result.stderr
    listed = models(imgvec)
    assert listed["fake"]["active"] and listed["fake3"]["embeddings"] == 16
    assert not listed["fake3"]["complete"]
    # Queries still use the old model; the half-done one refuses clearly.
    assert imgvec("query", photos40 / "01.jpg", "--json").exit_code == 0
    refused = imgvec("query", photos40 / "01.jpg", "--model", "fake3")
    assert refused.exit_code == 2 and "vectors for 16 of 40 images" in refused.stderr

    again = imgvec("model", "use", "fake3", "--batch-size", "8", "--json").json()
    assert (again["embedded"], again["already"], again["switched"]) == (24, 16, True)


def test_switching_back_is_instant(imgvec, photos40: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    imgvec("model", "use", "fake3", "--weights", "none")
    monkeypatch.setattr(Models, "embedder", lambda *a: pytest.fail("a model was loaded"))
    back = imgvec("model", "use", "fake", "--json")
    assert back.exit_code == 0, back.stderr
    assert (back.json()["embedded"], back.json()["already"], back.json()["switched"]) == (
        0,
        40,
        True,
    )
    assert models(imgvec)["fake"]["active"]


def test_query_another_complete_model(imgvec, photos40: Path) -> None:
    imgvec("model", "use", "fake3", "--weights", "none")
    imgvec("model", "use", "fake")
    result = imgvec("query", photos40 / "07.jpg", "--model", "fake3", "-k", "2", "--json")
    assert result.exit_code == 0, result.stderr
    assert Path(result.json()[0]["results"][0]["path"]).name == "07.jpg"
    assert imgvec("query", photos40 / "07.jpg", "--model", "fake3/grid").exit_code == 0
    missing = imgvec("query", photos40 / "07.jpg", "--model", "resnet50")
    assert missing.exit_code == 2 and "no model 'resnet50'" in missing.stderr


def test_added_images_make_other_models_incomplete(imgvec, photos40: Path, tmp_path: Path) -> None:
    imgvec("model", "use", "fake3", "--weights", "none")
    imgvec("model", "use", "fake")
    make_image(tmp_path / "more" / "new.jpg", seed=1)
    imgvec("add", tmp_path / "more")
    listed = models(imgvec)
    assert listed["fake"]["complete"] and not listed["fake3"]["complete"]
    assert imgvec("query", photos40 / "00.jpg", "--model", "fake3").exit_code == 2
    assert imgvec("model", "use", "fake3", "--json").json()["embedded"] == 1


def test_drop_a_model(imgvec, photos40: Path, library: Path) -> None:
    imgvec("model", "use", "fake3", "--weights", "none")
    refused = imgvec("model", "drop", "fake3")
    assert refused.exit_code == 2 and "is the active model" in refused.stderr
    assert models(imgvec)["fake"]["model"]["name"] == "fake"  # model id 1: files m1-*
    assert any(p.name.startswith("m1-") for p in (library / "index").iterdir())
    dropped = imgvec("model", "drop", "fake", "--json")
    assert dropped.exit_code == 0, dropped.stderr
    assert dropped.json() == {"model": "fake", "vectors_deleted": 40}
    assert set(models(imgvec)) == {"fake3"}
    assert not any(p.name.startswith("m1-") for p in (library / "index").iterdir())
    assert imgvec("index", "verify").exit_code == 0
    assert imgvec("sql", "SELECT count(*) AS n FROM embeddings", "--json").json() == [{"n": 40}]


def test_unreadable_images_block_the_switch(imgvec, photos40: Path) -> None:
    (photos40 / "03.jpg").write_bytes(b"broken now")
    result = imgvec("model", "use", "fake3", "--weights", "none", "--json")
    assert result.exit_code == 1
    report = result.json()
    assert report["switched"] is False and report["failed"] == 1
    assert report["errors"][0]["path"].endswith("03.jpg")
    assert models(imgvec)["fake"]["active"]
    assert models(imgvec)["fake"]["model"]["dim"] == FAKE_DIM
