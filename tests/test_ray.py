"""``add`` and ``model use`` with ``--ray``, through the real CLI, against a real Ray cluster: the
one ``.ci/ray`` starts on this machine (two worker processes), named by ``IMGVEC_TEST_RAY``.

Each run is compared with the same run done locally: same outcomes, same rows, same vectors
(exactly for the test model; to a cosine of 0.9999 for real weights).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from imgvec.cli.app import app
from imgvec.embed import registry
from imgvec.embed.spec import Layer, ModelSpec, Preprocess
from tests.conftest import FAKE_ARGS, SHARED_EVAL, Run, make_image
from tests.fake_model import FAKE_DIM, grid_model
from tests.test_interrupt import RUNNER, committed_vectors, wait_for_commits

RAY_ENV = "IMGVEC_TEST_RAY"
COUNTS = ("added", "updated", "moved", "unchanged", "removed", "failed", "ignored")
UKBENCH = SHARED_EVAL / "ukbench140" / "images"
WEIGHTS = SHARED_EVAL / "weights" / "mobilenet_v2-imagenet-dequantized.pth"


@pytest.fixture(scope="module")
def ray_address() -> str:
    address = os.environ.get(RAY_ENV)
    if not address:
        pytest.skip(f"no Ray cluster: set {RAY_ENV} (.ci/ray starts one)")
    return address


def cli(*args: object) -> Run:
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return Run(result.exit_code, result.stdout, result.stderr)


def make_corpus(root: Path) -> Path:
    """Five distinct pictures (JPEG and PNG), a copy of one, a damaged file and an empty one."""
    for i in range(3):
        make_image(root / f"p{i}.jpg", seed=i)
    for i in range(3, 5):
        make_image(root / "sub" / f"p{i}.png", seed=i)
    shutil.copy(root / "p0.jpg", root / "sub" / "copy-of-p0.jpg")
    (root / "damaged.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "empty.png").write_bytes(b"")
    return root


def rows(library: Path, photos: Path, model: str = "fake") -> dict[str, tuple[Any, ...]]:
    """What the library holds of each file, by path under ``photos``: content hash, picture
    columns, error, and the vector (float32) of ``model``, if any."""
    with sqlite3.connect(library / "imgvec.db") as db:
        found = db.execute(
            "SELECT i.path, i.content_hash, i.width, i.height, i.format, i.phash, i.error, "
            "i.camera_make, e.vector FROM images i LEFT JOIN embeddings e ON e.image_id = i.id "
            "AND e.model_id = (SELECT id FROM models WHERE name = ?)",
            (model,),
        ).fetchall()
    return {
        str(Path(path).relative_to(photos)): (*rest, None if vector is None else vector)
        for path, *rest, vector in found
    }


def counts(report: dict[str, Any]) -> dict[str, Any]:
    errors = sorted((Path(e["path"]).name, e["reason"]) for e in report["errors"])
    return {**{k: report[k] for k in COUNTS if k in report}, "errors": errors}


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Run]:
    """The corpus added locally: (photos, library, the run)."""
    root = tmp_path_factory.mktemp("local")
    photos = make_corpus(root / "photos")
    run = cli("add", photos, *FAKE_ARGS, "--library", root / "library", "--json")
    assert run.exit_code == 1  # the damaged and the empty file
    return photos, root / "library", run


def test_add_on_ray_is_a_local_add_then_skips_moves_and_copies(
    tmp_path: Path, ray_address: str, local: tuple[Path, Path, Run]
) -> None:
    local_photos, local_library, local_run = local
    photos = shutil.copytree(local_photos, tmp_path / "photos")
    library = tmp_path / "library"
    on_ray = ["--library", library, "--ray", ray_address, "--json"]

    first = cli("add", photos, *FAKE_ARGS, *on_ray)
    assert first.exit_code == local_run.exit_code == 1
    report = first.json()
    assert counts(report) == counts(local_run.json())
    assert report["ray"] == {"address": ray_address, "workers": 2, "ship_bytes": False, "sent": 8}
    assert (
        f"Working on the Ray cluster at {ray_address}: 2 workers, reading the files by path"
        in first.stderr
    )
    assert {name for name, _ in counts(report)["errors"]} == {"damaged.jpg", "empty.png"}
    assert rows(library, photos) == rows(local_library, local_photos)
    assert report["runtime"] == local_run.json()["runtime"]

    again = cli("add", photos, *on_ray).json()  # one stat per file: nothing for the workers
    assert again["unchanged"] == 8 and again["ray"]["sent"] == 0

    vectors = rows(library, photos)
    (photos / "p1.jpg").rename(photos / "sub" / "p1-moved.jpg")
    shutil.copy(photos / "p2.jpg", photos / "p2-copy.jpg")
    moved = cli("add", photos, *on_ray).json()
    assert (moved["moved"], moved["added"], moved["removed"]) == (1, 1, 0)
    assert moved["ray"]["sent"] == 2 and moved["runtime"] is None  # hashed there, not embedded
    after = rows(library, photos)
    assert after["sub/p1-moved.jpg"] == vectors["p1.jpg"]
    assert after["p2-copy.jpg"][-1] == vectors["p2.jpg"][-1]


def test_ship_bytes_and_model_use_on_ray(
    tmp_path: Path, ray_address: str, local: tuple[Path, Path, Run]
) -> None:
    """Workers that do not share the files' storage get their bytes from the writer; the files
    it cannot read fail here, with the local reasons."""
    photos, local_library, local_run = local
    library = tmp_path / "library"
    shipped = cli(
        "add", photos, *FAKE_ARGS, "--library", library, "--ray", ray_address, "--ship-bytes",
        "--json",
    )  # fmt: skip
    assert shipped.exit_code == 1
    assert counts(shipped.json()) == counts(local_run.json())
    assert shipped.json()["ray"]["ship_bytes"] is True
    assert "2 workers, sending the files' bytes" in shipped.stderr
    assert shipped.json()["ray"]["sent"] == 7  # the empty file failed in the writer
    assert rows(library, photos) == rows(local_library, photos)

    switch = ["model", "use", "fake3", "--weights", "none", "--json"]
    on_ray = cli(*switch, "--library", library, "--ray", ray_address)
    here = cli(*switch, "--library", local_library)
    assert on_ray.exit_code == here.exit_code == 0
    assert on_ray.json()["switched"] and on_ray.json()["ray"]["sent"] == 6
    fields = ("embedded", "reused", "failed", "errors")
    assert {k: on_ray.json()[k] for k in fields} == {k: here.json()[k] for k in fields}
    assert rows(library, photos, "fake3") == rows(local_library, photos, "fake3")


@pytest.mark.skipif(not UKBENCH.is_dir(), reason=f"no UKBench photos in {UKBENCH}")
def test_real_weights_on_ray_agree_with_a_local_run(tmp_path: Path, ray_address: str) -> None:
    """mobilenet_v2 at fp32: workers run the library's ONNX export, sent by the writer."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for number in range(6):
        shutil.copy(UKBENCH / f"ukbench{number:05d}.jpg", photos)
    model = ["--model", "mobilenet_v2", "--weights", WEIGHTS, "--precision", "fp32", "--json"]
    local_library, library = tmp_path / "local", tmp_path / "library"
    assert cli("add", photos, *model, "--library", local_library).exit_code == 0
    shutil.copytree(local_library, library)  # with its ONNX export; then forget 4 images
    assert cli("remove", *sorted(photos.iterdir())[2:], "--library", library).exit_code == 0
    on_ray = cli("add", photos, *model, "--library", library, "--ray", ray_address)
    assert on_ray.exit_code == 0
    assert on_ray.json()["added"] == 4 and on_ray.json()["runtime"] == "onnxruntime"
    expected = rows(local_library, photos, "mobilenet_v2")
    got = rows(library, photos, "mobilenet_v2")
    assert got.keys() == expected.keys()
    for name, row in expected.items():
        assert got[name][:-1] == row[:-1]
        a, b = (np.frombuffer(r[-1], dtype="<f4") for r in (row, got[name]))
        assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.9999, name


def test_a_first_add_on_ray_makes_the_export_its_cpu_workers_run(
    tmp_path: Path, ray_address: str
) -> None:
    """efficientnet_lite0 runs faster on ONNX Runtime: a new library's first add on Ray makes
    the export in the writer first, the workers run it, and queries have it."""
    for i in range(2):
        make_image(tmp_path / "photos" / f"p{i}.jpg", seed=i)
    library = tmp_path / "library"
    first = cli(
        "add", tmp_path / "photos", "--model", "efficientnet_lite0", "--library", library,
        "--ray", ray_address, "--json",
    )  # fmt: skip
    assert first.exit_code == 0, first.stderr
    assert first.json()["added"] == 2 and first.json()["runtime"] == "onnxruntime"
    assert "Exporting efficientnet_lite0 to ONNX" in first.stderr
    assert len(list((library / "models").glob("*.onnx"))) == 1


def dying_model(markers: str) -> Any:
    """The ``fake`` model, whose process dies on a batch while ``markers`` holds ``always``,
    or ``once`` (removed as it dies). Built on the workers: the test process never runs it."""
    from torch import nn

    class Dying(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.grid = grid_model(4)

        def forward(self, batch: Any) -> Any:
            for name in ("always", "once"):
                marker = os.path.join(markers, name)
                if os.path.exists(marker):
                    if name == "once":
                        os.unlink(marker)
                    os._exit(1)
            return self.grid(batch)

    return Dying()


def test_a_lost_worker_costs_one_retry_then_its_files_fail_until_the_next_run(
    tmp_path: Path, ray_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    spec = ModelSpec(
        name="dying",
        build=lambda: dying_model(str(markers)),
        layers={"grid": Layer(FAKE_DIM, lambda model: model, "the fake model's grid")},
        default_layer="grid",
        preprocess=Preprocess(32, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        description="test model whose worker dies",
        onnx_batches=False,  # torch on the workers: an ONNX graph would not die
    )
    monkeypatch.setitem(registry._REGISTRY, "dying", spec)
    for i in range(3):
        make_image(tmp_path / "photos" / f"p{i}.jpg", seed=i)
    add = ["add", tmp_path / "photos", "--ray", ray_address, "--json"]

    (markers / "always").touch()
    lost = cli(*add, "--model", "dying", "--weights", "none")
    assert lost.exit_code == 1
    report = lost.json()
    assert report["failed"] == 3 and report["ray"]["sent"] == 6  # sent twice, lost twice
    assert {e["reason"] for e in report["errors"]} == {
        "cannot read file: its Ray worker was lost twice"
    }

    (markers / "always").unlink()
    (markers / "once").touch()
    retried = cli(*add)  # the reason says "try again": the files are not skipped
    assert retried.exit_code == 0
    assert retried.json()["updated"] == 3 and retried.json()["ray"]["sent"] == 6
    assert not (markers / "once").exists()


def test_ctrl_c_keeps_the_committed_batches_and_the_next_run_continues(
    tmp_path: Path, ray_address: str
) -> None:
    photos, library, count = tmp_path / "photos", tmp_path / "library", 160
    for i in range(count):
        make_image(photos / f"p{i:03d}.jpg", seed=100 + i, size=(32, 32))
    add = [sys.executable, RUNNER, "add", photos, "--library", library, "--batch-size", "1"]
    process = subprocess.Popen(
        [str(a) for a in [*add, *FAKE_ARGS, "--ray", ray_address]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_commits(process, library, 4)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Interrupted after committing" in stdout
    survived = committed_vectors(library)
    assert 4 <= survived < count, survived
    report = cli("add", photos, "--library", library, "--ray", ray_address, "--json").json()
    assert (report["added"], report["unchanged"]) == (count - survived, survived)


def test_an_unreachable_cluster_is_one_line_and_writes_nothing(
    tmp_path: Path, local: tuple[Path, Path, Run]
) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    photos, library, _ = local
    before = rows(library, photos)
    refused = cli("add", photos, "--library", library, "--ray", "127.0.0.1:9")
    assert refused.exit_code == 2
    assert refused.stderr.strip().splitlines() == [
        "error: cannot reach the Ray cluster at 127.0.0.1:9: Connection refused"
    ]
    (photos / "new.jpg").write_bytes((photos / "p1.jpg").read_bytes())
    try:
        assert cli("add", photos, "--library", library, "--ray", "127.0.0.1:9").exit_code == 2
        assert rows(library, photos) == before
    finally:
        (photos / "new.jpg").unlink()


def test_without_ray_installed_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # ``import ray`` raises ImportError
    make_image(tmp_path / "photos" / "a.jpg", seed=1)
    result = cli("add", tmp_path / "photos", *FAKE_ARGS, "--ray", "auto")
    assert result.exit_code == 2
    assert "pip install 'imgvec[ray]'" in result.stderr
    assert cli("status", "--json").json()["images"] == 0
