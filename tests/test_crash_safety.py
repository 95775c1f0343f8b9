"""Kill real `imgvec` writers (add, remove, index build, index compact) at random moments: the
next command opens the library without repair, nothing committed is lost, the index verifies."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FAKE_ARGS, make_image

RUNNER = Path(__file__).resolve().parent / "run_imgvec.py"


def start(library: Path, *args: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, "IMGVEC_LIBRARY": str(library)}
    return subprocess.Popen(
        [sys.executable, str(RUNNER), *map(str, args)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def folders(tmp_path: Path) -> list[Path]:
    made = []
    for f in range(4):
        folder = tmp_path / f"photos{f}"
        for i in range(60):
            make_image(folder / f"{i:03d}.jpg", seed=f * 1000 + i, size=(32, 24))
        made.append(folder)
    return made


def test_killing_writers_at_random_moments_loses_nothing(
    imgvec, folders: list[Path], tmp_path: Path
) -> None:
    library = tmp_path / "crash-lib"
    assert imgvec("add", folders[0], *FAKE_ARGS, "--library", library).exit_code == 0
    rng = random.Random(20261123)
    operations = [
        ("add", lambda: ["add", folders[rng.randrange(1, 4)], "--batch-size", "1"]),
        ("remove", lambda: ["remove", folders[rng.randrange(0, 4)]]),
        (
            "build",
            lambda: ["index", "build", "--kind", rng.choice(["ivf", "flat"]), "--nlist", "2"],
        ),
        ("compact", lambda: ["index", "compact"]),
    ]
    killed_while_running = 0
    for trial in range(12):
        name, make_args = operations[trial % len(operations)]
        # The kill lands at a random moment; a writer that finished first (fast machines) is
        # started again with the window halved, so every trial ends in a kill of a running writer
        # on any machine speed, and what it did before the kill is checked the same way.
        ceiling = 3.0
        while True:
            images_before = imgvec("status", "--library", library, "--json").json()["images"]
            process = start(library, *make_args())
            time.sleep(rng.uniform(ceiling / 4, ceiling))  # when to kill, not a synchronisation
            running = process.poll() is None
            process.send_signal(signal.SIGKILL)
            process.wait()
            if running or ceiling < 0.2:
                break
            ceiling /= 2
        killed_while_running += running

        status = imgvec("status", "--library", library, "--json")  # opens without repair
        assert status.exit_code == 0, status.stderr
        images = status.json()["images"]
        if name == "remove":  # one transaction: all of the folder or none of it
            assert images_before - 60 <= images <= images_before
        else:
            assert images >= images_before  # nothing committed was lost
        # A plain query is the next command: it catches the index up with the table.
        query = imgvec("query", folders[0] / "000.jpg", "--library", library, "--json")
        assert query.exit_code == 0, query.stderr
        report = imgvec("index", "verify", "--library", library, "--json").json()
        assert report["ok"], report["problems"]
        assert report["live_vectors"] == images and report["pending_changes"] == 0
        # Back to the full library for the next trial.
        done = imgvec("add", *folders, "--library", library, "--json")
        assert done.exit_code == 0, done.stderr
        report = imgvec("index", "verify", "--library", library, "--json").json()
        assert report["ok"] and not report["leftovers"], report
        assert report["live_vectors"] == 240
        assert imgvec("status", "--library", library, "--json").json()["images"] == 240
        hits = imgvec("query", folders[2] / "017.jpg", "-k", "1", "--library", library, "--json")
        assert Path(hits.json()[0]["results"][0]["path"]).name == "017.jpg"
    assert killed_while_running >= 10  # almost every kill landed while the writer was running
