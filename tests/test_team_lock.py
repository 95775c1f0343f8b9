"""A team on one library (issue 17): with the metadata in PostgreSQL, writers in different
library folders (different machines) exclude each other through the database's advisory lock, not
a shared folder; readers never wait; a killed writer frees it; with the indexes in a Milvus
server too, a folder with nothing in it is a full member of the team."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgvec.api import Library
from imgvec.errors import LibraryLocked
from tests.conftest import FAKE_ARGS, make_image

pytestmark = pytest.mark.databases
RUNNER = Path(__file__).resolve().parent / "run_imgvec.py"

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


@pytest.fixture
def milvus_server(tmp_path: Path) -> Iterator[str]:
    """A Milvus Lite server on localhost (``milvus-lite server``, as a team would run Milvus):
    its ``milvus://`` URL once it answers; stopped at the end."""
    pytest.importorskip("pymilvus", reason="needs pymilvus + milvus-lite (test extra)")
    from pymilvus import MilvusClient

    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(tmp_path / "m")]
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # until it answers (or has died: then its stderr says why)
            if server.poll() is not None:
                raise AssertionError(f"milvus-lite server stopped: {server.stderr.read()!r}")  # type: ignore[union-attr]
            try:
                MilvusClient(uri=f"http://127.0.0.1:{port}", timeout=2).close()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
        yield f"milvus://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_team_shares_a_library_through_postgresql_and_a_milvus_server(
    database: str, tmp_path: Path, imgvec, milvus_server: str
) -> None:
    """Two writers in two folders (two machines), one PostgreSQL database, one Milvus server:
    the second writer is refused while the first writes, a third folder with nothing in it
    queries throughout, and what a writer adds reaches every folder."""
    if database != "postgresql":
        pytest.skip("a team shares PostgreSQL; SQLite is a file of one folder")
    db = os.environ["IMGVEC_DB"]
    photos = tmp_path / "photos"
    for i in range(4):
        make_image(photos / f"{i}.jpg", seed=800 + i)
    added = imgvec("add", photos, *FAKE_ARGS, "--vectors", milvus_server, "-L", tmp_path / "a")
    assert added.exit_code == 0, added.stderr
    assert not (tmp_path / "a" / "index").exists() or not any((tmp_path / "a" / "index").iterdir())

    def query_from_c(photo: str) -> list[str]:  # a reader on a third machine, in a new process
        done = subprocess.run(
            [sys.executable, str(RUNNER), "query", photos / photo, "-k", "5", "--json"],
            env={**os.environ, "IMGVEC_LIBRARY": str(tmp_path / "c")},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return [Path(h["path"]).name for h in json.loads(done.stdout)[0]["results"]]

    assert query_from_c("2.jpg")[0] == "2.jpg"
    holder = subprocess.Popen(
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
        refused = imgvec("add", photos, "-L", tmp_path / "a")
        assert refused.exit_code == 2 and "is writing to this library's database" in refused.stderr
        assert sorted(query_from_c("0.jpg")) == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    _wait_until_gone(db, holder.pid)
    make_image(photos / "4.jpg", seed=804)
    assert imgvec("add", photos, "-L", tmp_path / "b").exit_code == 0  # the other machine writes
    assert query_from_c("4.jpg")[0] == "4.jpg"
    assert imgvec("index", "verify", "-L", tmp_path / "a").exit_code == 0
