"""``add``: bring the library in line with files and folders, embedding only what is new.

Decisions per file, cheapest first:
- same size and mtime as its row: unchanged (one stat, nothing read);
- same content hash as before: unchanged (the stat is refreshed);
- content already embedded elsewhere: the vector is reused (a moved file keeps its row);
- otherwise: decoded and embedded.

A row is removed only for a file known to be gone: its own ``stat`` says it does not exist, and
the folder above it is not one that now reads as empty (an unmounted drive looks like that:
``prune`` removes those too). A folder that cannot be listed, and a file that cannot be read,
keep what the library holds of them, are reported, and are tried again next time.
Work is committed in batches, so an interrupted run keeps every finished batch; a file whose row
cannot be written fails alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from imgvec import files, store
from imgvec.errors import storage_problem
from imgvec.images import Picture
from imgvec.metadata import METADATA_COLUMNS
from imgvec.pipeline import Loaded, load_file, prefetched_batches
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
    ignored: int = 0
    """Files in the folders that are not images (or are hidden); ``--verbose`` lists them."""
    kept: int = 0
    """Library images that could not be checked (unreadable or emptied folder): left as they
    were, not removed."""
    errors: list[FileError] = field(default_factory=list)
    known_failures: int = 0
    """Unchanged files that earlier runs could not read (counted in ``unchanged``)."""
    interrupted: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        text = (
            f"added {self.added}, updated {self.updated}, moved {self.moved}, "
            f"unchanged {self.unchanged}, removed {self.removed}, failed {self.failed}, "
            f"ignored {self.ignored}"
        )
        if self.kept:
            text += f", kept {self.kept} not seen"
        if self.known_failures:
            text += f" ({self.known_failures} unchanged files still unreadable: imgvec status)"
        return text


@dataclass
class _Prepared:
    found: files.FoundFile
    known: store.KnownImage | None
    loaded: Loaded = field(default_factory=Loaded)


def add_paths(
    library: Library,
    roots: Sequence[str],
    batch_size: int = DEFAULT_BATCH_SIZE,
    prune: bool = False,
) -> AddReport:
    report = AddReport()
    reporter = library.reporter
    roots = list(dict.fromkeys(files.normalize(root) for root in roots))
    model = library.active_model_row()
    with library.session() as session:
        known = store.known_images(session, roots, model.id)
        reusable = store.hashes_with_vectors(session, model.id)

    pending: list[_Prepared] = []
    seen: set[str] = set()
    problems: list[files.PathProblem] = []

    def consider(item: files.FoundFile) -> None:
        seen.add(item.path)
        row = known.get(item.path)
        if (
            row
            and row.size == item.size
            and row.mtime_ns == item.mtime_ns
            and ((row.error is not None and not is_access_error(row.error)) or row.has_vector)
        ):
            report.unchanged += 1
            report.known_failures += row.error is not None
        else:
            pending.append(_Prepared(item, row))

    for item in files.walk(roots, known=known.keys()):
        if isinstance(item, files.Ignored):
            report.ignored += 1
            reporter.file_ignored(item.path, item.reason)
        elif isinstance(item, files.PathProblem):
            seen.add(item.path)
            problems.append(item)
        else:
            consider(item)
    vanished = _classify_unseen(
        [row for path, row in known.items() if path not in seen], roots, problems, consider
    )
    for problem in problems:
        if problem.path in vanished.emptied and not prune:
            continue  # reported with its count below
        _fail(report, reporter, problem.path, problem.reason)
    for folder, ids in vanished.emptied.items():
        if prune:
            vanished.gone.extend(ids)
            continue
        report.kept += len(ids)
        state = "missing" if not os.path.isdir(folder) else "empty"
        _fail(
            report,
            reporter,
            folder,
            f"folder is {state} but holds {len(ids)} library images (a drive not mounted?); "
            "kept them: to remove them, imgvec add --prune or imgvec remove",
        )
    report.kept += vanished.kept

    ingest = _Batches(library, model.id, reusable, seen, report)
    try:
        ingest.run(pending, batch_size)
        gone = [i for i in vanished.gone if i not in ingest.claimed]
        if gone:
            with library.session() as session, session.begin():
                report.removed = store.delete_images(session, gone)
            reporter.notice(f"Removed {report.removed} files that are gone from disk")
    except KeyboardInterrupt:
        report.interrupted = True
        return report
    if not library.index_is_current(model):  # a no-op add does not even import FAISS
        library.index(model).update()
    return report


ACCESS_ERROR = "cannot read file"
"""How the reason of a file that could not be read starts (see ``images.read_file``)."""


def is_access_error(reason: str) -> bool:
    """A stored failure that says nothing of the content: tried again on every run."""
    return reason.startswith(ACCESS_ERROR)


@dataclass
class _Unseen:
    gone: list[int] = field(default_factory=list)
    emptied: dict[str, list[int]] = field(default_factory=dict)
    kept: int = 0


def _classify_unseen(
    rows: list[store.KnownImage],
    roots: list[str],
    problems: list[files.PathProblem],
    consider: Callable[[files.FoundFile], None],
) -> _Unseen:
    """Sort the library rows the walk did not meet: found after all (handed to ``consider``),
    gone, hidden by an emptied folder, or unknowable (kept; reported once per problem folder,
    else once per file)."""
    result = _Unseen()
    blind = [p.path for p in problems if p.folder]
    for row in rows:
        if any(row.path.startswith(folder.rstrip("/") + "/") for folder in blind):
            result.kept += 1  # its folder is reported already
            continue
        absence = files.absence(row.path, roots)
        if absence.found is not None:
            consider(absence.found)
        elif absence.gone:
            result.gone.append(row.id)
        elif absence.emptied is not None:
            result.emptied.setdefault(absence.emptied, []).append(row.id)
        else:
            result.kept += 1
            problems.append(files.PathProblem(row.path, f"{absence.reason}; kept as it was"))
    return result


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


@dataclass(frozen=True)
class _Outcome:
    """What writing one file did: ``kind`` is an :class:`AddReport` counter."""

    path: str
    kind: str
    reason: str | None = None
    claimed: int | None = None
    """The row of a moved file, taken over by this one."""


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
        assert self.prepare is not None
        known = pending.known

        def skip_decode(content_hash: str) -> bool:
            same = known is not None and known.content_hash == content_hash
            return (same and known.has_vector and known.error is None) or (
                content_hash in self.reusable
            )

        return replace(pending, loaded=load_file(pending.found.path, self.prepare, skip_decode))

    def _commit(self, batch: list[_Prepared]) -> None:
        """Write the batch in one transaction; if that fails for a reason that is not the
        storage's (full, read-only), write file by file, so only the culprit fails."""
        vectors = embed_new_contents(
            self.library.embedder,
            ((i.loaded.content_hash, i.loaded.tensor) for i in batch),
            self.reusable,
        )
        try:
            outcomes = self._write(batch, vectors)
        except Exception as error:
            if storage_problem(error):
                raise
            outcomes = []
            for item in batch:
                try:
                    outcomes += self._write([item], vectors)
                except Exception as single:
                    if storage_problem(single):
                        raise
                    reason = f"cannot record: {type(single).__name__}: {single}"
                    outcomes.append(_Outcome(item.found.path, "failed", reason.splitlines()[0]))
        for outcome in outcomes:
            if outcome.kind == "failed":
                assert outcome.reason is not None
                _fail(self.report, self.library.reporter, outcome.path, outcome.reason)
            else:
                setattr(self.report, outcome.kind, getattr(self.report, outcome.kind) + 1)
            if outcome.claimed is not None:
                self.claimed.add(outcome.claimed)
        self.reusable.update(vectors)

    def _write(self, batch: list[_Prepared], vectors: dict[str, bytes]) -> list[_Outcome]:
        claimed: set[int] = set()
        with self.library.session() as session, session.begin():
            outcomes = [self._apply(session, item, vectors, claimed) for item in batch]
        return outcomes

    def _apply(
        self, session: Session, item: _Prepared, vectors: dict[str, bytes], claimed: set[int]
    ) -> _Outcome:
        """Write one file's outcome (vector writes log themselves in the change log)."""
        found, known, loaded = item.found, item.known, item.loaded
        path = found.path
        row = session.get(Image, known.id) if known else None
        if loaded.error is not None:
            if loaded.access_error and row is not None and row.error is None:
                return _Outcome(path, "failed", loaded.error)  # keeps its row and vector
            if row is None:
                row = Image(path=path, size=found.size, mtime_ns=found.mtime_ns)
                session.add(row)
            _set_file(row, found, loaded.content_hash, loaded.error)
            _set_picture(row, None)
            if known is not None:
                store.drop_vectors(session, known.id)
            return _Outcome(path, "failed", loaded.error)
        content_hash = loaded.content_hash
        assert content_hash is not None
        if (
            row is not None
            and known is not None
            and known.has_vector
            and (known.content_hash == content_hash and known.error is None)
        ):
            _set_file(row, found, content_hash, None)
            return _Outcome(path, "unchanged")
        vector = vectors.get(content_hash)
        donor = None if vector is not None else self._donor(session, content_hash)
        if donor is not None:
            vector = store.stored_vector(session, donor.id, self.model_id)
        if vector is None:  # only when the donor vanished mid-run; embed it next time
            return _Outcome(path, "failed", "content changed while adding")
        if row is None and donor is not None:  # known content at a new path: moved or copied
            moved = self._moved_from(session, content_hash, claimed)
            if moved is not None:
                claimed.add(moved.id)
                _set_file(moved, found, content_hash, None)
                return _Outcome(path, "moved", claimed=moved.id)
        kind = "updated"
        if row is None:
            row = Image(path=path, size=found.size, mtime_ns=found.mtime_ns)
            session.add(row)
            kind = "added"
        _set_file(row, found, content_hash, None)
        _set_picture(row, loaded.picture or donor)
        session.flush()
        store.put_vector(session, row.id, self.model_id, vector)
        return _Outcome(path, kind)

    def _donor(self, session: Session, content_hash: str) -> Image | None:
        rows = store.images_with_hash(session, content_hash, self.model_id)
        return rows[0] if rows else None

    def _moved_from(self, session: Session, content_hash: str, claimed: set[int]) -> Image | None:
        """An image row with this content whose file is gone: the file was moved or renamed."""
        for candidate in store.images_with_hash(session, content_hash, self.model_id):
            gone = candidate.path not in self.seen and files.is_gone(candidate.path)
            if gone and candidate.id not in self.claimed | claimed:
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
