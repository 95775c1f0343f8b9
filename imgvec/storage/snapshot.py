"""The reads of a cold ``imgvec query`` on a SQLite library, by the standard library's sqlite3.

SQLAlchemy's import alone is about a third of a one-photo query from a cold start (BENCHMARKS.md,
"A cold query"), so the query that needs only these reads makes them here
(:mod:`imgvec.ops.cold_query`); every other command, and every query this cannot answer, reads
through :mod:`imgvec.storage.store`. Each method names the store function whose rows it returns;
``tests/test_cold_query.py`` checks that they agree. All reads share one read transaction, so
they see one state of the library while a writer commits.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

from imgvec import migrations
from imgvec.types import ModelIdentity

MIGRATIONS_DIR = Path(migrations.__file__).parent
STATE_ID = 1
"""The one row of ``library_state`` (:data:`imgvec.storage.store.STATE_ID`)."""


def newest_revision() -> str:
    """The head revision, read from the migration files' names (``NNNN_title.py``, one chain,
    revision ``NNNN``) without importing Alembic: opening a library whose schema is current then
    costs one SELECT, not Alembic's import and script parsing (about 0.2 s of a cold query).
    ``tests/test_migrations.py`` checks it against Alembic's own head."""
    names = sorted(p.name for p in (MIGRATIONS_DIR / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))
    return names[-1].split("_", 1)[0]


def bytes_to_vector(data: bytes) -> np.ndarray:
    """A stored vector's bytes as (dim,) float32 (little-endian, as ``embeddings.vector``;
    the inverse of :func:`imgvec.storage.store.vector_to_bytes`)."""
    return np.frombuffer(data, dtype="<f4")


def read_only_flag(database: Path, frozen: bool = False) -> str:
    """How to open a SQLite file that must not be written, as a URI parameter: ``mode=ro``, or
    ``immutable=1`` where WAL's ``-shm`` file cannot be made either (its folder is read-only,
    or ``frozen``: the disk is full) and no ``-wal`` file holds commits
    (https://www.sqlite.org/wal.html#readonly)."""
    wal = Path(f"{database}-wal")
    settled = not wal.exists() or wal.stat().st_size == 0
    if settled and (frozen or not os.access(database.parent, os.W_OK)):
        return "immutable=1"
    return "mode=ro"


@dataclass(frozen=True)
class ModelRecord(ModelIdentity):
    """A stored model: its identity, and how many vectors it has stored."""

    vector_count: int = 0


@dataclass(frozen=True)
class VersionRecord:
    """An index version: the columns a search needs."""

    id: int
    kind: str
    params: str
    change_seq: int


@dataclass(frozen=True)
class SegmentRecord:
    id: int
    path: str
    role: str
    size_bytes: int
    created_seq: int


@dataclass(frozen=True)
class ImageRecord:
    id: int
    size: int
    mtime_ns: int
    error: str | None


@dataclass(frozen=True)
class ExportRecord:
    """A model's export (satisfies :class:`imgvec.embed.exports.Record`)."""

    path: str | None
    size_bytes: int | None
    sha256: str | None
    error: str | None
    exporter: str


class Snapshot:
    """One read transaction on a library's SQLite file, opened read-only (``mode=ro``: it never
    writes, not even a schema upgrade). Raises :class:`sqlite3.Error` when the file cannot be
    read; the caller then takes the ordinary path, which says why."""

    def __init__(self, database: Path) -> None:
        path = database.absolute()
        uri = f"file:{quote(os.fsencode(path))}?{read_only_flag(path)}"
        self.connection = sqlite3.connect(uri, uri=True, isolation_level=None)
        self.connection.execute("PRAGMA busy_timeout=30000")
        self.connection.execute("BEGIN")  # the snapshot starts at the first read

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _one(self, sql: str, *args: object) -> tuple | None:  # type: ignore[type-arg]
        row: tuple | None = self.connection.execute(sql, args).fetchone()  # type: ignore[type-arg]
        return row

    def revision(self) -> str | None:
        """:func:`imgvec.storage.engine.current_revision` (None: no imgvec schema)."""
        try:
            row = self._one("SELECT version_num FROM alembic_version")
        except sqlite3.OperationalError as error:
            if "no such table" not in str(error):
                raise
            return None
        return None if row is None else str(row[0])

    def state(self) -> tuple[int | None, str | None]:
        """(active model id, vector store URL): ``store.state``'s ``active_model_id`` and
        ``store.vector_store``."""
        row = self._one("SELECT active_model_id, vectors FROM library_state WHERE id = ?", STATE_ID)
        return (None, None) if row is None else (row[0], row[1])

    def model(self, model_id: int) -> ModelRecord | None:
        """``session.get(EmbeddingModel, model_id)``."""
        row = self._one(
            "SELECT name, layer, weights, weights_path, preprocessing, dim, id, vector_count "
            "FROM models "
            "WHERE id = ?",
            model_id,
        )
        return None if row is None else ModelRecord(*row)

    def export(self, model_id: int) -> ExportRecord | None:
        """``store.model_export``."""
        row = self._one(
            "SELECT path, size_bytes, sha256, error, exporter FROM model_exports "
            "WHERE model_id = ?",
            model_id,
        )
        return None if row is None else ExportRecord(*row)

    def active_version(self, model_id: int) -> VersionRecord | None:
        """``store.active_version``."""
        row = self._one(
            "SELECT id, kind, params, change_seq FROM index_versions "
            "WHERE model_id = ? AND status = 'active'",
            model_id,
        )
        return None if row is None else VersionRecord(*row)

    def last_change(self, model_id: int) -> int:
        """``store.last_change``."""
        row = self._one("SELECT max(seq) FROM changes WHERE model_id = ?", model_id)
        return int(row[0] or 0) if row is not None else 0

    def changed_since(self, model_id: int, seq: int) -> dict[int, int]:
        """``store.changed_since``: image id -> its latest change seq after ``seq``."""
        rows = self.connection.execute(
            "SELECT image_id, max(seq) FROM changes WHERE model_id = ? AND seq > ? "
            "GROUP BY image_id",
            (model_id, seq),
        )
        return {int(image_id): int(last) for image_id, last in rows}

    def segments(self, version_id: int) -> list[SegmentRecord]:
        """``store.segments_of``, in the version's order."""
        rows = self.connection.execute(
            "SELECT s.id, s.path, s.role, s.size_bytes, s.created_seq FROM index_segments s "
            "JOIN index_version_segments v ON v.segment_id = s.id "
            "WHERE v.version_id = ? ORDER BY v.position",
            (version_id,),
        )
        return [SegmentRecord(*row) for row in rows]

    def image(self, path: str) -> ImageRecord | None:
        """``store.image_by_path``."""
        row = self._one("SELECT id, size, mtime_ns, error FROM images WHERE path = ?", path)
        return None if row is None else ImageRecord(*row)

    def vector(self, image_id: int, model_id: int) -> bytes | None:
        """``store.stored_vector``."""
        row = self._one(
            "SELECT vector FROM embeddings WHERE image_id = ? AND model_id = ?", image_id, model_id
        )
        return None if row is None else bytes(row[0])

    def vectors(self, model_id: int, image_ids: list[int]) -> dict[int, bytes]:
        """``store.vectors_of``'s rows: image id -> vector bytes, for those that have one."""
        rows = self._in(
            "SELECT image_id, vector FROM embeddings WHERE model_id = ? AND image_id IN ({})",
            (model_id,),
            image_ids,
        )
        return {int(i): bytes(v) for i, v in rows}

    def paths(self, image_ids: list[int]) -> dict[int, str]:
        """``store.paths_of``."""
        rows = self._in("SELECT id, path FROM images WHERE id IN ({})", (), image_ids)
        return {int(i): str(p) for i, p in rows}

    def _in(self, sql: str, leading: tuple[object, ...], ids: list[int]) -> list[tuple]:  # type: ignore[type-arg]
        """The rows of ``sql`` (its ``IN ({})`` filled with ``ids``, 500 at a time, as the store
        reads them), after the ``leading`` parameters."""
        rows: list[tuple] = []  # type: ignore[type-arg]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows += self.connection.execute(sql.format(marks), (*leading, *chunk)).fetchall()
        return rows
