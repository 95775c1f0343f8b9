"""Each model's ONNX export as an artifact of the library (issue 15): made once by a command that
may write, recorded with its sha256, run by queries without importing torch, never run when
damaged, made again, and a model that cannot be exported runs on torch with one notice."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imgvec.api import Library
from imgvec.embed.loader import bulk_runtime
from imgvec.embed.registry import register
from imgvec.embed.spec import Layer, ModelSpec, Preprocess
from tests.conftest import FAKE_ARGS, make_image

RUNNER = Path(__file__).resolve().parent / "run_imgvec.py"
DROP_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
"""Root without its override of file permissions: CI runs as root."""
UNTRACEABLE = "fake_untraceable"


def _untraceable_model():  # type: ignore[no-untyped-def]
    from torch import jit, nn

    class Untraceable(nn.Module):
        """Mean colours, refusing to be traced: a model the exporter cannot handle."""

        def forward(self, x):  # type: ignore[no-untyped-def]
            if jit.is_tracing():
                raise RuntimeError("this model cannot be traced")
            return nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)

    return Untraceable()


register(
    ModelSpec(
        name=UNTRACEABLE,
        build=_untraceable_model,
        layers={"grid": Layer(12, lambda model: model, "2x2 grid of mean colours")},
        default_layer="grid",
        preprocess=Preprocess(resize=16, crop=16, mean=(0.5,) * 3, std=(0.5,) * 3),
        description="test model that the ONNX exporter cannot trace",
    )
)


def entry(imgvec, name: str = "fake") -> dict:  # type: ignore[no-untyped-def]
    status = imgvec("status", "--json")
    assert status.exit_code == 0, status.stderr
    return next(m for m in status.json()["models"] if m["model"]["name"] == name)


def timing_stages(stderr: str) -> list[str]:
    return [t.split("=")[0] for t in stderr.split("timings (s): ")[1].split()]


def test_add_exports_the_model_once_and_a_query_runs_the_export(
    imgvec, photos: Path, library: Path, tmp_path: Path
) -> None:
    first = imgvec("add", photos, *FAKE_ARGS, "--json")
    assert first.exit_code == 0, first.stderr
    assert first.stderr.count("Exporting fake to ONNX") == 1
    assert first.json()["runtime"] == "torch"  # batches: the test model is no CNN (bulk_runtime)
    export = entry(imgvec)["export"]
    assert entry(imgvec)["query_runtime"] == "onnxruntime"
    path = library / export["path"]
    data = path.read_bytes()
    assert len(data) == export["size_bytes"] and export["error"] is None
    recorded = imgvec("sql", "SELECT sha256 FROM model_exports", "--json").json()
    assert recorded == [{"sha256": hashlib.sha256(data).hexdigest()}]
    assert path.name == f"m1-{recorded[0]['sha256'][:12]}.onnx"

    make_image(photos / "later.jpg", seed=60)
    again = imgvec("add", photos)
    assert again.exit_code == 0 and "Exporting" not in again.stderr
    assert sorted((library / "models").iterdir()) == [path]

    outside = tmp_path / "outside.jpg"
    shutil.copy(photos / "p1.jpg", outside)
    result = imgvec("query", outside, "-k", "1", "--timings", "--json")
    assert result.exit_code == 0, result.stderr
    stages = timing_stages(result.stderr)
    assert "import_onnxruntime" in stages and "import_torch" not in stages
    [answer] = result.json()
    assert answer["vector"] == "embedded"  # not stored: embedded by ONNX Runtime ...
    assert Path(answer["results"][0]["path"]).name == "p1.jpg"
    assert answer["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)  # ... as torch did


def test_a_query_of_a_new_photo_imports_no_torch(imgvec, photos: Path, tmp_path: Path) -> None:
    """The real command in a fresh process, as a user runs it."""
    assert imgvec("add", photos, *FAKE_ARGS).exit_code == 0
    query = make_image(tmp_path / "new.jpg", seed=90)
    listing = tmp_path / "modules.txt"
    done = subprocess.run(
        [sys.executable, str(RUNNER), "query", str(query), "-k", "2", "--json"],
        env={**os.environ, "IMGVEC_TEST_MODULES_FILE": str(listing)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Loading model fake/grid" in done.stderr and "(ONNX Runtime)" in done.stderr
    modules = set(listing.read_text().split())
    assert "onnxruntime" in modules and "faiss" in modules
    assert not {m for m in modules if m == "torch" or m.startswith(("torch.", "torchvision"))}


@pytest.mark.parametrize("damage", ["flipped byte", "flipped weight", "deleted", "truncated"])
def test_a_damaged_export_is_never_run_and_is_made_again(
    imgvec, photos: Path, library: Path, tmp_path: Path, damage: str
) -> None:
    assert imgvec("add", photos, *FAKE_ARGS).exit_code == 0
    [path] = (library / "models").glob("*.onnx")
    good = path.read_bytes()
    if damage == "deleted":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    else:  # in the graph (ONNX Runtime refuses it), or in the weights (it loads; the hash says)
        at = 100 if damage == "flipped byte" else len(good) - 8
        path.write_bytes(good[:at] + bytes([good[at] ^ 0xFF]) + good[at + 1 :])
    stat_only = "onnxruntime" if damage.startswith("flipped") else "torch"  # status hashes nothing
    assert entry(imgvec)["query_runtime"] == stat_only
    outside = tmp_path / "outside.jpg"
    shutil.copy(photos / "p2.jpg", outside)

    result = imgvec("query", outside, "-k", "1", "--timings", "--json")

    assert result.exit_code == 0, result.stderr
    reason = "cannot be read" if damage == "deleted" else "is damaged"
    assert f"The ONNX export of fake is not used: its file {path.relative_to(library)}" in (
        result.stderr
    )
    assert reason in result.stderr
    assert "import_torch" in timing_stages(result.stderr)
    assert result.json()[0]["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert path.read_bytes() == good  # the query made it again (the export is deterministic)
    again = imgvec("query", outside, "-k", "1", "--timings")
    assert "not used" not in again.stderr
    assert "import_onnxruntime" in timing_stages(again.stderr)


def test_a_model_that_cannot_be_exported_runs_on_torch_with_one_notice(
    imgvec, photos: Path, library: Path, tmp_path: Path
) -> None:
    first = imgvec("add", photos, "--model", UNTRACEABLE, "--weights", "none")
    assert first.exit_code == 0, first.stderr
    notice = f"{UNTRACEABLE} cannot be exported to ONNX (RuntimeError: this model cannot be traced"
    assert first.stderr.count(notice) == 1
    found = entry(imgvec, UNTRACEABLE)
    assert found["query_runtime"] == "torch"
    assert "cannot be traced" in found["export"]["error"] and found["export"]["path"] is None
    assert "queries on torch (not exportable)" in " ".join(imgvec("status").stdout.split())

    make_image(photos / "later.jpg", seed=61)
    again = imgvec("add", photos)
    outside = make_image(tmp_path / "q.jpg", seed=62)
    query = imgvec("query", outside, "-k", "1", "--timings")
    for run in (again, query):
        assert run.exit_code == 0, run.stderr
        assert "cannot be exported" not in run.stderr and "Exporting" not in run.stderr
    assert "import_torch" in timing_stages(query.stderr)
    assert not list((library / "models").glob("*.onnx"))


def test_files_a_killed_export_left_are_deleted_by_the_next_writer(
    imgvec, photos: Path, library: Path
) -> None:
    assert imgvec("add", photos, *FAKE_ARGS).exit_code == 0
    folder = library / "models"
    [recorded] = folder.glob("*.onnx")
    stray = folder / "m7-0123456789ab.onnx"  # written, but its record never committed
    temp = folder / f".tmp-{'0' * 32}-m1-0123456789ab.onnx"  # killed while writing
    foreign = folder / "notes.txt"  # not imgvec's: kept
    for path in (stray, temp, foreign):
        path.write_bytes(b"x")
    assert imgvec("query", photos / "p0.jpg").exit_code == 0  # a reader deletes nothing
    assert stray.exists() and temp.exists()

    assert imgvec("add", photos).exit_code == 0

    assert sorted(folder.iterdir()) == sorted([recorded, foreign])


def test_dropping_a_model_deletes_its_export(imgvec, photos: Path, library: Path) -> None:
    assert imgvec("add", photos, *FAKE_ARGS).exit_code == 0
    [fake_export] = (library / "models").glob("*.onnx")
    assert imgvec("model", "use", "fake3", "--weights", "none").exit_code == 0
    assert len(list((library / "models").glob("*.onnx"))) == 2

    dropped = imgvec("model", "drop", "fake")

    assert dropped.exit_code == 0, dropped.stderr
    assert not fake_export.exists()
    assert len(list((library / "models").glob("*.onnx"))) == 1
    assert entry(imgvec, "fake3")["query_runtime"] == "onnxruntime"


def test_a_query_on_a_read_only_library_writes_no_export(
    imgvec, photos: Path, library: Path, tmp_path: Path
) -> None:
    assert imgvec("add", photos, *FAKE_ARGS).exit_code == 0
    assert imgvec("sql", "SELECT 1").exit_code == 0
    from imgvec.storage.schema import ModelExport

    with Library.open(library) as lib, lib.writing(), lib.session() as session, session.begin():
        session.query(ModelExport).delete()  # as a library made before exports existed
    for path in (library / "models").iterdir():
        path.unlink()
    query = make_image(tmp_path / "q.jpg", seed=70)
    with Library.open(library) as lib:
        lib.read_only = True
        [result] = lib.query([query], k=2)
        assert len(result.hits) == 2
        assert lib.parts.models.runtime_of(lib.active_model_row()) == "torch"
    assert not list((library / "models").iterdir())

    with Library.open(library) as lib:  # a query ran on torch: make_exports makes it
        lib.query([query], k=2)
        assert not list((library / "models").glob("*.onnx"))  # not while answering
        lib.make_exports()
    assert len(list((library / "models").glob("*.onnx"))) == 1


def test_add_of_a_convolutional_network_runs_its_batches_on_the_faster_runtime(
    imgvec, tmp_path: Path, library: Path
) -> None:
    """efficientnet_lite0 (real weights, installed with imgvec): the batches run where
    bulk_runtime says, and the vectors agree with torch's fp32 ones to cosine >= 0.9999."""
    import torch
    from PIL import Image

    from imgvec.embed.registry import get_spec, resolve_weights
    from imgvec.embed.runtime import Embedder, auto_precision

    folder = tmp_path / "cnn"
    paths = [make_image(folder / f"{i}.jpg", seed=i, size=(240, 180)) for i in range(3)]
    report = imgvec("add", folder, "--model", "efficientnet_lite0", "--json")
    assert report.exit_code == 0, report.stderr
    assert report.stderr.count("Exporting") == 1 and "not used" not in report.stderr
    expected = bulk_runtime(True, "cpu", auto_precision(torch.device("cpu")))
    if torch.cuda.is_available():
        expected = "torch"
    assert report.json()["runtime"] == expected
    spec = get_spec("efficientnet_lite0")
    reference = Embedder(
        spec, spec.default_layer, resolve_weights(spec, "default"), torch.device("cpu"), "fp32"
    )
    wanted = reference.embed([Image.open(p).convert("RGB") for p in paths])
    with Library.open(library) as lib:
        ids, vectors = lib.vectors()
        path_of = dict(lib.sql("SELECT id, path FROM images").rows)
    order = [path_of[int(i)] for i in ids]
    got = vectors[[order.index(str(p)) for p in paths]]
    assert float(np.min(np.sum(got * wanted, axis=1))) >= 0.9999


@pytest.mark.parametrize(
    ("convolutional", "device", "precision", "runtime"),
    [
        (True, "cpu", "fp32", "onnxruntime"),
        (True, "cpu", "bf16", "torch"),
        (True, "cuda", "fp32", "torch"),
        (False, "cpu", "fp32", "torch"),
    ],
)
def test_bulk_runtime_rule(convolutional: bool, device: str, precision: str, runtime: str) -> None:
    assert bulk_runtime(convolutional, device, precision) == runtime


@pytest.mark.parametrize("blocked", ["a file", "read-only"])
def test_an_export_that_cannot_be_written_costs_a_notice_not_the_command(
    imgvec, photos: Path, library: Path, tmp_path: Path, blocked: str
) -> None:
    """``models`` is a file, or a folder this user cannot write (root's override dropped, as
    everywhere in these tests, in a process of its own): add and query still work, on torch,
    and say why."""
    assert imgvec("init", *FAKE_ARGS).exit_code == 0
    folder = library / "models"
    outside = make_image(tmp_path / "q.jpg", seed=80)
    if blocked == "a file":
        folder.write_text("not a folder")
        runs = [imgvec("add", photos, "--json"), imgvec("query", outside, "-k", "1", "--json")]
    else:
        folder.mkdir()
        folder.chmod(0o555)
        done = subprocess.run(
            [*DROP_OVERRIDE, sys.executable, str(RUNNER), "add", str(photos), "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        runs = [done]
    for run in runs:
        code = getattr(run, "returncode", getattr(run, "exit_code", None))
        assert code == 0, run.stderr
        assert json.loads(run.stdout)  # the answer is whole
        assert "Cannot write fake's ONNX export (models/:" in run.stderr
        assert "Traceback" not in run.stderr and "Exporting" not in run.stderr
    assert folder.is_file() or not list(folder.iterdir())
