"""One writer per library: an exclusive, non-blocking lock on a file in the library directory,
and on PostgreSQL also an advisory lock of the database (:func:`database_write_lock`), so that
writers in different library folders or on different machines sharing one database exclude
each other without a shared folder (issue 17).

The operating system releases the file lock when the process dies, however it dies, and
PostgreSQL releases a session's advisory lock when its connection ends, so a killed ``imgvec
add`` never leaves a stale lock behind. Readers never take either; ``index verify`` holds them
shared (:func:`no_writer`), so that no writer starts while it checks.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, text

from imgvec.errors import LibraryLocked, StorageError

ADVISORY_KEY = int.from_bytes(b"imgvec", "big")
"""The advisory lock's key: one write lock per database (PostgreSQL's locks are per database)."""

_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


@contextmanager
def write_lock(path: Path) -> Iterator[None]:
    """Hold the write lock. Raises :class:`LibraryLocked` when another process holds it, and
    :class:`StorageError` when the library directory cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        if error.errno in _READ_ONLY:
            raise StorageError(
                f"the library is read-only ({path.parent}: {error.strerror}); "
                "this command needs write access"
            ) from error
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise LibraryLocked(
                f"another imgvec process (pid {holder}) is writing to this library; "
                "wait for it to finish and try again"
            ) from None
        _write_pid(fd, str(os.getpid()))
        try:
            yield
        finally:
            _write_pid(fd, "")
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _write_pid(fd: int, text: str) -> None:
    """Best effort: the pid only names the writer in the refusal; a full disk must not stop it."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)
    except OSError:
        pass


@contextmanager
def no_writer(path: Path) -> Iterator[bool]:
    """Yield True while holding the lock shared (no writer can start), or False if a writer
    holds it now. Writes nothing: works on a read-only library (where no writer can be)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file: nobody has written yet; unreadable: nobody can write
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def database_write_lock(engine: Engine) -> Iterator[None]:
    """On PostgreSQL, hold the database's write lock: a session-level advisory lock on a
    connection of its own, named ``imgvec writer pid N on HOST`` (``application_name``) so that
    a refused writer can say who holds it. Raises :class:`LibraryLocked` while another process
    holds it. Elsewhere (SQLite: its file is in the library folder, under the file lock) a
    no-op."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as connection:
        name = f"imgvec writer pid {os.getpid()} on {socket.gethostname()}"
        connection.execute(text("SELECT set_config('application_name', :n, false)"), {"n": name})
        got = connection.execute(text(f"SELECT pg_try_advisory_lock({ADVISORY_KEY})")).scalar()
        connection.commit()  # the lock is the session's: no transaction is kept open
        if not got:
            raise LibraryLocked(
                f"another imgvec process ({_holder(connection)}) is writing to this library's "
                "database; wait for it to finish and try again"
            )
        try:
            yield
        finally:
            connection.execute(text(f"SELECT pg_advisory_unlock({ADVISORY_KEY})"))
            connection.execute(text("SELECT set_config('application_name', '', false)"))
            connection.commit()


@contextmanager
def database_no_writer(engine: Engine) -> Iterator[bool]:
    """Like :func:`no_writer` for :func:`database_write_lock`: True while holding it shared,
    False if a writer holds it now; always True off PostgreSQL."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    with engine.connect() as connection:
        got = connection.execute(
            text(f"SELECT pg_try_advisory_lock_shared({ADVISORY_KEY})")
        ).scalar()
        connection.commit()
        try:
            yield bool(got)
        finally:
            if got:
                connection.execute(text(f"SELECT pg_advisory_unlock_shared({ADVISORY_KEY})"))
                connection.commit()


def _holder(connection: Connection) -> str:
    """Who holds the advisory lock, as its session named itself (best effort)."""
    try:
        found = connection.execute(
            text(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a "
                "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                "AND l.objid = :low AND l.classid = :high"
            ),
            {"low": ADVISORY_KEY & 0xFFFFFFFF, "high": ADVISORY_KEY >> 32},
        ).scalar()
        connection.commit()
    except Exception:  # no right to see other sessions: still refuse, unnamed
        return "unknown"
    return str(found) if found else "unknown"
