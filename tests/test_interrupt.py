"""Killing or interrupting a real `imgvec add` loses nothing committed; the next run finishes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import make_image

RUNNER = Path(__file__).resolve().parent / "run_imgvec.py"
N_IMAGES = 48


def start_add(folder: Path, library: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "IMGVEC_LIBRARY": str(library)}
    return subprocess.Popen(
        [
            sys.executable,
            str(RUNNER),
            "add",
            str(folder),
            "--model",
            "mobilenet_v2",
            "--weights",
            "none",
            "--batch-size",
            "2",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def committed_vectors(library: Path) -> int:
    database = library / "imgvec.db"
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as connection:
            return connection.execute("SELECT count(*) FROM embeddings").fetchone()[0]
    except sqlite3.OperationalError:  # schema not created yet
        return 0


def wait_for_commits(process: subprocess.Popen[str], library: Path, at_least: int) -> int:
    """Poll the database (a condition, not a fixed sleep) until the writer has committed enough."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        count = committed_vectors(library)
        if count >= at_least:
            return count
        time.sleep(0.02)
    raise AssertionError(
        f"add finished or stalled before {at_least} commits: {process.communicate()[1][-2000:]}"
    )


@pytest.fixture
def many_photos(tmp_path: Path) -> Path:
    folder = tmp_path / "many"
    for i in range(N_IMAGES):
        make_image(folder / f"img{i:03d}.jpg", seed=1000 + i, size=(64, 48))
    return folder


@pytest.mark.parametrize("kill_after", [2, 20])
def test_killed_add_loses_nothing_and_the_next_add_finishes(
    imgvec, many_photos: Path, tmp_path: Path, kill_after: int
) -> None:
    library = tmp_path / "killed-lib"
    process = start_add(many_photos, library)
    committed = wait_for_commits(process, library, kill_after)
    assert process.poll() is None, "add finished before it could be killed"
    process.kill()
    process.wait()
    survived = committed_vectors(library)
    assert survived >= committed

    result = imgvec("add", many_photos, "--library", library, "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["unchanged"] == survived
    assert report["added"] == N_IMAGES - survived
    status = imgvec("status", "--library", library, "--json").json()
    assert status["images"] == N_IMAGES
    assert status["models"][0]["embeddings"] == N_IMAGES
    assert status["index"]["n_vectors"] == N_IMAGES and not status["index"]["stale"]
    hits = imgvec("query", many_photos / "img007.jpg", "--library", library, "--json").json()
    assert Path(hits[0]["results"][0]["path"]).name == "img007.jpg"


def test_ctrl_c_stops_cleanly_and_says_how_to_continue(
    imgvec, many_photos: Path, tmp_path: Path
) -> None:
    library = tmp_path / "interrupted-lib"
    process = start_add(many_photos, library)
    wait_for_commits(process, library, 4)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Interrupted after committing" in stdout
    assert "again to continue" in stderr
    survived = committed_vectors(library)
    report = imgvec("add", many_photos, "--library", library, "--json").json()
    assert report["added"] == N_IMAGES - survived
    assert imgvec("status", "--library", library, "--json").json()["images"] == N_IMAGES


def test_a_second_writer_is_refused_while_one_runs(
    imgvec, many_photos: Path, tmp_path: Path
) -> None:
    library = tmp_path / "busy-lib"
    process = start_add(many_photos, library)
    try:
        wait_for_commits(process, library, 2)
        result = imgvec("add", many_photos, "--library", library)
        assert result.exit_code == 2
        assert "another imgvec process" in result.stderr
        assert f"pid {process.pid}" in result.stderr
        # Readers are not blocked by the writer.
        assert imgvec("status", "--library", library, "--json").exit_code == 0
    finally:
        process.kill()
        process.wait()
