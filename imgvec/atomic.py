"""Crash-safe file writes: write a temporary file, fsync it, rename it over the target."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

TEMP_PREFIX = ".tmp-"


def atomic_write(target: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temp_path)``, then make the result appear at ``target`` all at once.

    A crash leaves either no file or the complete file at ``target`` (plus perhaps a temporary
    file named with :data:`TEMP_PREFIX`, which cleanup may delete).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}-{target.name}")
    try:
        write(temp)
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
