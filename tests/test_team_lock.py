"""A team on one library (issue 17, first step): with the metadata in PostgreSQL, writers in
different library folders (different machines) exclude each other through the database's
advisory lock, not a shared folder; readers never wait; a killed writer frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imgvec.api import Library
from imgvec.errors import LibraryLocked
from tests.conftest import FAKE_ARGS, make_image

pytestmark = pytest.mark.databases

HOLD = """
import signal, sys
sys.path.insert(0, {repo!r})
import tests.fake_model
from imgvec.api import Library
with Library.open({library!r}, db={db!r}) as lib, lib.writing():
    print("holding", flush=True)
    signal.pause()
"""


def test_writers_in_two_folders_of_one_database_exclude_each_other(
    database: str, tmp_path: Path, imgvec
) -> None:
    if database != "postgresql":
        pytest.skip("SQLite's database is a file of its folder: the folder's lock covers it")
    db = os.environ["IMGVEC_DB"]
    photos = tmp_path / "photos"
    for i in range(3):
        make_image(photos / f"{i}.jpg", seed=700 + i)
    assert imgvec("add", photos, *FAKE_ARGS, "--library", tmp_path / "a").exit_code == 0

    holder = subprocess.Popen(  # a writer on another machine: another folder, the same database
        [
            sys.executable,
            "-c",
            HOLD.format(repo=str(Path(__file__).parent.parent), library=str(tmp_path / "b"), db=db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with Library.open(tmp_path / "a", db=db) as lib:
            locked = pytest.raises(LibraryLocked, match=rf"imgvec writer pid {holder.pid} on ")
            with locked, lib.writing():
                pass
            assert len(lib.query([photos / "1.jpg"], k=2)[0].hits) == 2  # readers go on
        refused = imgvec("add", photos, "--library", tmp_path / "a")
        assert refused.exit_code == 2 and "is writing to this library's database" in refused.stderr
    finally:
        holder.send_signal(signal.SIGKILL)  # as a crash: PostgreSQL ends its session
        holder.wait(timeout=30)
    _wait_until_gone(db, holder.pid)
    make_image(photos / "3.jpg", seed=703)
    report = imgvec("add", photos, "--library", tmp_path / "a", "--json")
    assert report.exit_code == 0, report.stderr
    assert report.json()["added"] == 1


def _wait_until_gone(db: str, pid: int) -> None:
    """Until the server has ended the killed writer's session (it reads the closed socket at
    once; this waits on that fact, not on a guess of how long it takes)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db)
    deadline = time.monotonic() + 30
    try:
        with engine.connect() as connection:
            while time.monotonic() < deadline:
                left = connection.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE :n"),
                    {"n": f"imgvec writer pid {pid} on %"},
                ).scalar()
                connection.commit()
                if not left:
                    return
                time.sleep(0.05)
    finally:
        engine.dispose()
    raise AssertionError(f"the killed writer's session (pid {pid}) is still open")
