"""The index folder's files: which names are imgvec's, deleting what a crashed writer left,
and whether a model's index is current.

Light on purpose (no FAISS import): every writing command goes through it, and a no-op ``add``
must not pay for FAISS.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from imgvec.atomic import TEMP_PREFIX
from imgvec.reporting import Reporter
from imgvec.storage import store
from imgvec.storage.schema import EmbeddingModel, IndexVersion
from imgvec.types import IndexVersionInfo

INDEX_DIR = "index"
MILVUS_KIND = "milvus"
"""The kind of an index version that is a Milvus collection (:mod:`imgvec.index.milvus`)."""
OUR_FILE = re.compile(r"m\d+-(base|delta)-[0-9a-f]{12}\.faiss|model\d+-g\d+-[0-9a-f]{8}\.faiss")
"""Names imgvec gives index files (the second: revision 0001's single artifacts)."""


def index_files(root: Path) -> list[Path]:
    """The files in a library's index folder, by name."""
    directory = root / INDEX_DIR
    return sorted(p for p in directory.iterdir() if p.is_file()) if directory.is_dir() else []


def is_ours(path: Path) -> bool:
    """A temporary file or a segment file by imgvec's naming."""
    return path.name.startswith(TEMP_PREFIX) or OUR_FILE.fullmatch(path.name) is not None


def relative(path: Path) -> str:
    """How ``index_segments.path`` names a file of the index folder."""
    return f"{INDEX_DIR}/{path.name}"


def remove_orphans(root: Path, known: set[str]) -> tuple[int, int]:
    """Delete imgvec's files in the index folder that no row in ``known`` names (left by a
    killed writer); (files, bytes) deleted. The caller holds the write lock."""
    removed = freed = 0
    for path in index_files(root):
        if is_ours(path) and relative(path) not in known:
            freed += path.stat().st_size
            path.unlink(missing_ok=True)
            removed += 1
    return removed, freed


def is_current(root: Path, session: Session, model_id: int, milvus: bool = False) -> bool:
    """THE "is the index current" check: the model's active version is in the library's store
    (a Milvus collection with ``milvus``, FAISS files without: a move between them that was
    cut short left the other kind, which the next update rebuilds), covers every change to its
    vectors, and its files are all there at their recorded sizes (SQL and stat only)."""
    version = store.active_version(session, model_id)
    if version is None or version.change_seq != store.last_change(session, model_id):
        return False
    if (version.kind == MILVUS_KIND) != milvus:
        return False
    return intact(root, session, version.id)


def intact(root: Path, session: Session, version_id: int) -> bool:
    """Every file of the version is there with its recorded size (a stat each)."""
    segments = store.segments_of(session, version_id)
    return all(_file_size(root / s.path) == s.size_bytes for s in segments)


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def params(version: IndexVersion) -> dict[str, Any]:
    """A version's search parameters (nlist, nprobe, m), stored as JSON."""
    return json.loads(version.params)


def version_info(session: Session, version: IndexVersion) -> IndexVersionInfo:
    """THE shape of an index version handed out (status, index list, build results)."""
    segments = [
        {
            "role": s.role,
            "path": s.path,
            "n_vectors": s.n_vectors,
            "size_bytes": s.size_bytes,
            "sha256": s.sha256,
            "created_seq": s.created_seq,
        }
        for s in store.segments_of(session, version.id)
    ]
    return IndexVersionInfo(
        version.id,
        version.kind,
        params(version),
        version.n_vectors,
        version.change_seq,
        version.train_size,
        version.recall,
        version.operation,
        version.status,
        version.created_at,
        segments,
        behind=version.change_seq != store.last_change(session, version.model_id),
    )


def versions(session: Session, model_id: int) -> list[IndexVersionInfo]:
    """A model's kept index versions, newest first."""
    return [version_info(session, v) for v in store.versions(session, model_id)]


class ModelIndex:
    """What a model's index has wherever it lives (FAISS files:
    :class:`imgvec.index.segments.IndexStore`; a Milvus collection:
    :class:`imgvec.index.milvus.MilvusIndex`): its library, its model, and reading its active
    version (SQL only)."""

    def __init__(
        self, root: Path, sessions: sessionmaker[Session], model: EmbeddingModel, reporter: Reporter
    ) -> None:
        self.root = root
        self.sessions = sessions
        self.model = model
        self.reporter = reporter
        self.notice = reporter.notice

    def active(self) -> tuple[IndexVersion | None, int]:
        """The active version and the newest change seq (a version behind it is stale)."""
        with self.sessions() as session:
            return (
                store.active_version(session, self.model.id),
                store.last_change(session, self.model.id),
            )

    def info(self, version: IndexVersion) -> IndexVersionInfo:
        with self.sessions() as session:
            return version_info(session, version)
