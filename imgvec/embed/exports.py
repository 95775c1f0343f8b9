"""Each model's ONNX export, an artifact of the library (issue 15): the file queries run with
ONNX Runtime instead of importing torch.

Kept like an index segment (:mod:`imgvec.index.artifacts`): written atomically into the
library's ``models/`` folder under a name made of the model's id and the file's sha256, then
recorded in ``model_exports`` with that sha256 and its size. A file that is missing or does not
match its record is never run: the model runs on torch, and the export is made again by the
next command that may write. A model that cannot be exported (a registered model the exporter
cannot trace) is recorded with the reason, so it is tried once, not on every command.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from imgvec.atomic import TEMP_PREFIX, atomic_write

if TYPE_CHECKING:  # the cold query (imgvec.ops.cold_query) reads exports without SQLAlchemy
    from sqlalchemy.orm import Session

    from imgvec.storage.schema import ModelExport

EXPORT_DIR = "models"
OUR_FILE = re.compile(r"m\d+-[0-9a-f]{12}\.onnx")
"""Names imgvec gives export files."""


@dataclass(frozen=True)
class Stored:
    """What a library holds of a model's export."""

    data: bytes | None = None
    """The file's bytes (their size checked); None: there is no usable export."""
    problem: str | None = None
    """Why a recorded export is not usable (its file is missing or damaged)."""
    failed: str | None = None
    """Why the model could not be exported (recorded; not tried again)."""
    path: str | None = None
    sha256: str | None = None
    """The recorded sha256 of ``data``: :func:`verified` compares them (None: just made)."""
    exporter: str | None = None
    """What made the export, or failed to (``torch <version>, opset <n>``)."""


class Record(Protocol):
    """What a ``model_exports`` row has (the ORM row, or the cold query's)."""

    path: str | None
    size_bytes: int | None
    sha256: str | None
    error: str | None
    exporter: str


def load(root: Path, session: Session, model_id: int, verify: bool = True) -> Stored:
    """The model's export as recorded, read and checked (see :func:`read`)."""
    from imgvec.storage import store

    return read(root, store.model_export(session, model_id), verify)


def read(root: Path, row: Record | None, verify: bool = True) -> Stored:
    """The export a record names, read and checked: its size, and with ``verify`` its sha256
    (else the caller calls :func:`verified` before it trusts the vectors: 0.2 s for vit_b_16's
    343 MB, which can run beside the runtime's loading)."""
    if row is None:
        return Stored()
    if row.path is None:
        return Stored(failed=row.error or "unknown reason", exporter=row.exporter)
    try:
        data = (root / row.path).read_bytes()
    except OSError as error:
        return Stored(problem=f"its file {row.path} cannot be read ({error.strerror or error})")
    if len(data) != row.size_bytes:
        return Stored(problem=f"its file {row.path} is damaged (its size does not match)")
    stored = Stored(data, path=row.path, sha256=row.sha256)
    return verified(stored) if verify else stored


def verified(stored: Stored) -> Stored:
    """``stored``, or why its bytes are not the recorded ones (sha256)."""
    if stored.data is None or stored.sha256 is None:
        return stored
    if hashlib.sha256(stored.data).hexdigest() == stored.sha256:
        return stored
    return Stored(problem=f"its file {stored.path} is damaged (its sha256 does not match)")


def describe(row: ModelExport) -> dict[str, Any]:
    """What ``status`` and ``model list`` show of an export record."""
    return {
        "path": row.path,
        "size_bytes": row.size_bytes,
        "sha256": row.sha256,
        "exporter": row.exporter,
        "error": row.error,
    }


def present(root: Path, row: ModelExport) -> bool:
    """The recorded file is there at its recorded size (a stat: no hashing)."""
    if row.path is None:
        return False
    try:
        return (root / row.path).stat().st_size == row.size_bytes
    except OSError:
        return False


def save(root: Path, session: Session, model_id: int, data: bytes, exporter: str) -> str | None:
    """Write the export (atomically) and record it in ``session``. Returns the file (relative
    to ``root``) of the export it replaced, if another: the caller commits, then deletes it. The
    caller holds the library's write lock."""
    from imgvec.storage import store

    digest = hashlib.sha256(data).hexdigest()
    path = root / EXPORT_DIR / f"m{model_id}-{digest[:12]}.onnx"
    atomic_write(path, lambda temp: temp.write_bytes(data))
    old = store.set_model_export(
        session,
        model_id,
        path=relative(path),
        sha256=digest,
        size_bytes=len(data),
        exporter=exporter,
    )
    return None if old == relative(path) else old


def record_failure(session: Session, model_id: int, reason: str, exporter: str) -> str | None:
    """Record that the model cannot be exported. Returns an earlier export's file, if any (the
    caller commits, then deletes it)."""
    from imgvec.storage import store

    return store.set_model_export(session, model_id, exporter=exporter, error=reason)


def unwritable(root: Path) -> str | None:
    """Why an export cannot be written into the library's export folder now (it is not a
    folder, or not writable), before seconds go into making one; None: it can."""
    directory = root / EXPORT_DIR
    try:
        directory.mkdir(exist_ok=True)
        probe = directory / f"{TEMP_PREFIX}probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        return f"{EXPORT_DIR}/: {error.strerror or error}"
    return None


def relative(path: Path) -> str:
    """How ``model_exports.path`` names a file of the export folder."""
    return f"{EXPORT_DIR}/{path.name}"


def remove_orphans(root: Path, known: set[str]) -> int:
    """Delete imgvec's files in the export folder that no record names (left by a killed
    writer, or replaced); how many. The caller holds the write lock."""
    directory = root / EXPORT_DIR
    if not directory.is_dir():
        return 0
    removed = 0
    for path in directory.iterdir():
        ours = path.name.startswith(TEMP_PREFIX) or OUR_FILE.fullmatch(path.name) is not None
        if ours and path.is_file() and relative(path) not in known:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
