"""One writer per library: an exclusive, non-blocking lock on a file in the library directory.

The operating system releases the lock when the process dies, however it dies, so a killed
``imgvec add`` never leaves a stale lock behind. Readers never take it; ``index verify`` holds it
shared (:func:`no_writer`), so that no writer starts while it checks.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from imgvec.errors import LibraryLocked, StorageError

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
