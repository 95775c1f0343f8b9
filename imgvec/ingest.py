"""``add``: bring the library in line with files and folders, embedding only what is new.

Decisions per file, cheapest first:
- same size and mtime as its row: unchanged (one stat, nothing read);
- same content hash as before: unchanged (the stat is refreshed);
- content already embedded elsewhere: the vector is reused (a moved file keeps its row);
- otherwise: decoded and embedded.
Work is committed in batches, so an interrupted run keeps every finished batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from imgvec import files, store
from imgvec.errors import ImageError
from imgvec.images import Picture, read_file
from imgvec.metadata import METADATA_COLUMNS
from imgvec.pipeline import prefetched_batches
from imgvec.reporting import progress
from imgvec.schema import Image, utcnow

if TYPE_CHECKING:
    import torch

    from imgvec.embed import Embedder
    from imgvec.library import Library

DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class FileError:
    path: str
    reason: str


@dataclass
class AddReport:
    added: int = 0
    updated: int = 0
    moved: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: int = 0
    errors: list[FileError] = field(default_factory=list)
    known_failures: int = 0
    """Unchanged files that earlier runs could not read (counted in ``unchanged``)."""
    interrupted: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        text = (
            f"added {self.added}, updated {self.updated}, moved {self.moved}, "
            f"unchanged {self.unchanged}, removed {self.removed}, failed {self.failed}"
        )
        if self.known_failures:
            text += f" ({self.known_failures} unchanged files still unreadable: imgvec status)"
        return text


@dataclass
class _Prepared:
    found: files.FoundFile
    known: store.KnownImage | None
    content_hash: str | None = None
    picture: Picture | None = None
    tensor: torch.Tensor | None = None
    error: str | None = None


def add_paths(
    library: Library, roots: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE
) -> AddReport:
    report = AddReport()
    reporter = library.reporter
    roots = [files.normalize(root) for root in roots]
    model = library.active_model_row()
    with library.session() as session:
        known = store.known_images(session, roots, model.id)
        reusable = store.hashes_with_vectors(session, model.id)

    pending: list[_Prepared] = []
    seen: set[str] = set()
    for item in files.walk(roots, known=known.keys()):
        if isinstance(item, files.PathProblem):
            _fail(report, reporter, item.path, item.reason)
            continue
        seen.add(item.path)
        row = known.get(item.path)
        if (
            row
            and row.size == item.size
            and row.mtime_ns == item.mtime_ns
            and (row.error is not None or row.has_vector)
        ):
            report.unchanged += 1
            report.known_failures += row.error is not None
        else:
            pending.append(_Prepared(item, row))

    ingest = _Batches(library, model.id, reusable, seen, report)
    try:
        ingest.run(pending, batch_size)
        vanished = [
            row.id
            for path, row in known.items()
            if path not in seen and row.id not in ingest.claimed
        ]
        if vanished:
            with library.session() as session, session.begin():
                report.removed = store.delete_images(session, vanished)
            reporter.notice(f"Removed {report.removed} files that are gone from disk")
    except KeyboardInterrupt:
        report.interrupted = True
        return report
    if not library.index_is_current(model):  # a no-op add does not even import FAISS
        library.index(model).update()
    return report


def embed_new_contents(
    embedder: Callable[[], Embedder],
    items: Iterable[tuple[str | None, torch.Tensor | None]],
    known: set[str],
) -> dict[str, bytes]:
    """Vectors of the contents (by hash) not in ``known``, each embedded once: copies in a
    batch share one forward pass. The model is only loaded when there is something to embed."""
    fresh: dict[str, torch.Tensor] = {}
    for content_hash, tensor in items:
        if tensor is not None and content_hash is not None and content_hash not in known:
            fresh.setdefault(content_hash, tensor)
    if not fresh:
        return {}
    import torch

    embedded = embedder().embed_tensors(torch.stack(list(fresh.values())))
    return {h: store.vector_to_bytes(v) for h, v in zip(fresh, embedded, strict=True)}


def _fail(report: AddReport, reporter: Any, path: str, reason: str) -> None:
    report.failed += 1
    report.errors.append(FileError(path, reason))
    reporter.file_error(path, reason)


class _Batches:
    """Prepares files on worker threads (read, hash, decode, preprocess) one batch ahead of the
    model, and commits each batch in its own transaction."""

    def __init__(
        self, library: Library, model_id: int, reusable: set[str], seen: set[str], report: AddReport
    ) -> None:
        self.library = library
        self.model_id = model_id
        self.reusable = reusable
        self.seen = seen
        self.report = report
        self.claimed: set[int] = set()
        self.prepare: Callable[[bytes], tuple[Picture, torch.Tensor]] | None = None

    def run(self, pending: list[_Prepared], batch_size: int) -> None:
        if not pending:
            return
        self.prepare = self.library.preparer()  # imports torch: only when there is work
        with progress(self.library.reporter, "Adding", len(pending)) as advance:
            for ready in prefetched_batches(pending, self._prepare, batch_size):
                self._commit(ready)
                advance(len(ready))

    def _prepare(self, pending: _Prepared) -> _Prepared:
        """Read, hash, decode and preprocess a file into a new record: the list of every pending
        file must not keep each picture and tensor alive once its batch is committed."""
        item = replace(pending)
        try:
            data = read_file(item.found.path)
            item.content_hash = files.sha256_bytes(data)
            if self._can_skip_decode(item):
                return item
            assert self.prepare is not None
            item.picture, item.tensor = self.prepare(data)
        except ImageError as error:
            item.error = str(error)
        return item

    def _can_skip_decode(self, item: _Prepared) -> bool:
        known = item.known
        same = known is not None and known.content_hash == item.content_hash and known.error is None
        return (same and known.has_vector) or item.content_hash in self.reusable

    def _commit(self, batch: list[_Prepared]) -> None:
        vectors = embed_new_contents(
            self.library.embedder, ((i.content_hash, i.tensor) for i in batch), self.reusable
        )
        with self.library.session() as session, session.begin():
            for item in batch:
                self._apply(session, item, vectors)
        self.reusable.update(vectors)

    def _apply(self, session: Session, item: _Prepared, vectors: dict[str, bytes]) -> None:
        """Write one file's outcome (vector writes log themselves in the change log)."""
        found, known, report = item.found, item.known, self.report
        row = session.get(Image, known.id) if known else None
        if item.error is not None:
            _fail(report, self.library.reporter, found.path, item.error)
            if row is None:
                row = Image(path=found.path, size=found.size, mtime_ns=found.mtime_ns)
                session.add(row)
            _set_file(row, found, item.content_hash, item.error)
            _set_picture(row, None)
            if known is not None:
                store.drop_vectors(session, known.id)
            return
        assert item.content_hash is not None
        if (
            row is not None
            and known is not None
            and known.has_vector
            and (known.content_hash == item.content_hash and known.error is None)
        ):
            _set_file(row, found, item.content_hash, None)
            report.unchanged += 1
            return
        vector = vectors.get(item.content_hash)
        donor = None if vector is not None else self._donor(session, item.content_hash)
        if donor is not None:
            vector = store.stored_vector(session, donor.id, self.model_id)
        if vector is None:  # only when the donor vanished mid-run; embed it next time
            _fail(report, self.library.reporter, found.path, "content changed while adding")
            return
        if row is None and donor is not None:  # known content at a new path: moved or copied
            moved = self._moved_from(session, item.content_hash)
            if moved is not None:
                self.claimed.add(moved.id)
                _set_file(moved, found, item.content_hash, None)
                report.moved += 1
                return
        if row is None:
            row = Image(path=found.path, size=found.size, mtime_ns=found.mtime_ns)
            session.add(row)
            report.added += 1
        else:
            report.updated += 1
        _set_file(row, found, item.content_hash, None)
        _set_picture(row, item.picture or donor)
        session.flush()
        store.put_vector(session, row.id, self.model_id, vector)

    def _donor(self, session: Session, content_hash: str) -> Image | None:
        rows = store.images_with_hash(session, content_hash, self.model_id)
        return rows[0] if rows else None

    def _moved_from(self, session: Session, content_hash: str) -> Image | None:
        """An image row with this content whose file is gone: the file was moved or renamed."""
        for candidate in store.images_with_hash(session, content_hash, self.model_id):
            gone = candidate.path not in self.seen and not os.path.exists(candidate.path)
            if gone and candidate.id not in self.claimed:
                return candidate
        return None


def _set_file(
    row: Image, found: files.FoundFile, content_hash: str | None, error: str | None
) -> None:
    """What the file system says: path, folder, size, modification time; and the outcome."""
    row.path = found.path
    row.folder = os.path.dirname(found.path)
    row.size = found.size
    row.mtime_ns = found.mtime_ns
    row.modified_at = datetime.fromtimestamp(found.mtime_ns / 1e9, timezone.utc)
    row.content_hash = content_hash
    row.error = error


def _set_picture(row: Image, source: Picture | Image | None) -> None:
    """What the content says: pixel size, format, EXIF (from a decode, or a same-content row)."""
    if isinstance(source, Picture):
        row.width, row.height, row.format = source.width, source.height, source.format
        for name, value in source.metadata.columns().items():
            setattr(row, name, value)
        row.metadata_at = utcnow()
        return
    for name in ("width", "height", "format", "metadata_at", *METADATA_COLUMNS):
        setattr(row, name, getattr(source, name) if source is not None else None)
