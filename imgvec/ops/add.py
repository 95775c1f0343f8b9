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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from imgvec import scan
from imgvec.config import DEFAULT_BATCH_SIZE
from imgvec.decode import fingerprint
from imgvec.embed.batches import Loaded, embedded_batches, load_file
from imgvec.embed.loader import Prepare
from imgvec.embed.ray_workers import Cluster, Job
from imgvec.errors import storage_problem
from imgvec.ops.parts import Parts
from imgvec.reporting import progress
from imgvec.storage import store
from imgvec.storage.schema import EmbeddingModel, Image
from imgvec.types import AddReport

if TYPE_CHECKING:
    import numpy as np


@dataclass
class _Prepared:
    found: scan.FoundFile
    known: store.KnownImage | None
    loaded: Loaded = field(default_factory=Loaded)
    phash: int | None = None


def add_paths(
    parts: Parts,
    model: EmbeddingModel,
    roots: Sequence[str],
    batch_size: int = DEFAULT_BATCH_SIZE,
    prune: bool = False,
    cluster: Cluster | None = None,
) -> AddReport:
    """Add files and folders (recursively) with ``model``; the caller holds the write lock.
    With a ``cluster``, its workers read, decode and embed the files (this process writes)."""
    report = AddReport(ray=cluster.info if cluster is not None else None)
    reporter = parts.reporter
    roots = list(dict.fromkeys(scan.normalize(root) for root in roots))
    with parts.sessions() as session:
        known = store.known_images(session, roots, model.id)
    reusable = KnownContents(parts.sessions, model.id)

    pending: list[_Prepared] = []
    seen: set[str] = set()
    problems: list[scan.PathProblem] = []

    def consider(item: scan.FoundFile) -> None:
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

    for item in scan.walk(roots, known=known.keys()):
        if isinstance(item, scan.Ignored):
            report.ignored += 1
            reporter.file_ignored(item.path, item.reason)
        elif isinstance(item, scan.PathProblem):
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
        _fail(parts, report, problem.path, problem.reason)
    for folder, ids in vanished.emptied.items():
        if prune:
            vanished.gone.extend(ids)
            continue
        report.kept += len(ids)
        state = "missing" if not os.path.isdir(folder) else "empty"
        _fail(
            parts,
            report,
            folder,
            f"folder is {state} but holds {len(ids)} library images (a drive not mounted?); "
            "kept them: to remove them, imgvec add --prune or imgvec remove",
        )
    report.kept += vanished.kept

    ingest = _Batches(parts, model, reusable, seen, report, cluster)
    try:
        ingest.run(pending, batch_size)
        gone = [i for i in vanished.gone if i not in ingest.claimed]
        if gone:
            with parts.sessions() as session, session.begin():
                report.removed = store.delete_images(session, gone)
            reporter.notice(f"Removed {report.removed} files that are gone from disk")
    except KeyboardInterrupt:
        report.interrupted = True
        return report
    parts.indexes.catch_up(model)  # a no-op add does not even import FAISS
    return report


class KnownContents:
    """The contents (sha256) that have a vector of the model: ``add`` reuses it for a moved
    file or a copy instead of decoding it. Asked of the database one hash at a time, as files
    are read, so that an ``add`` costs what its new files cost: a set of every hash read first
    took 1.9 s at 500k images on every ``add``, even one that found nothing new. Answers are
    kept; :meth:`update` adds the contents this run embedded. Safe across the decode threads
    (each asks through its own session)."""

    def __init__(self, sessions: sessionmaker[Session], model_id: int) -> None:
        self._sessions = sessions
        self._model_id = model_id
        self._answers: dict[str, bool] = {}

    def __contains__(self, content_hash: object) -> bool:
        if not isinstance(content_hash, str):
            return False
        answer = self._answers.get(content_hash)
        if answer is None:
            with self._sessions() as session:
                answer = store.has_vector_for_content(session, content_hash, self._model_id)
            self._answers[content_hash] = answer
        return answer

    def update(self, content_hashes: Iterable[str]) -> None:
        self._answers.update(dict.fromkeys(content_hashes, True))

    def __iter__(self) -> Iterator[str]:
        """Every such content, read from the database at once (for workers that cannot ask)."""
        with self._sessions() as session:
            stored = store.hashes_with_vectors(session, self._model_id)
        return iter(stored | {h for h, known in self._answers.items() if known})


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
    problems: list[scan.PathProblem],
    consider: Callable[[scan.FoundFile], None],
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
        absence = scan.absence(row.path, roots)
        if absence.found is not None:
            consider(absence.found)
        elif absence.gone:
            result.gone.append(row.id)
        elif absence.emptied is not None:
            result.emptied.setdefault(absence.emptied, []).append(row.id)
        else:
            result.kept += 1
            problems.append(scan.PathProblem(row.path, f"{absence.reason}; kept as it was"))
    return result


def _fail(parts: Parts, report: AddReport, path: str, reason: str) -> None:
    report.failed += 1
    parts.fail(report.errors, path, reason)


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
        self,
        parts: Parts,
        model: EmbeddingModel,
        reusable: KnownContents,
        seen: set[str],
        report: AddReport,
        cluster: Cluster | None = None,
    ) -> None:
        self.parts = parts
        self.cluster = cluster
        self.model = model
        self.model_id = model.id
        self.reusable = reusable
        self.seen = seen
        self.report = report
        self.claimed: set[int] = set()
        self.prepare: Prepare | None = None

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        vectors = self.parts.models.embed(self.model, batch, bulk=True)
        self.report.runtime = self.parts.models.runtime_of(self.model, bulk=True)
        return vectors

    def run(self, pending: list[_Prepared], batch_size: int) -> None:
        if not pending:
            return
        if self.cluster is not None:
            batches = self._on_ray(self.cluster, pending, batch_size)
        else:
            self.prepare = self.parts.models.preparer(self.model)
            batches = embedded_batches(
                pending,
                self._prepare,
                lambda item: item.loaded,
                self._embed,
                batch_size,
                self.reusable,
            )
        with progress(self.parts.reporter, "Adding", len(pending)) as advance:
            for ready, embedded in batches:
                self._commit(ready, embedded)
                advance(len(ready))

    def _on_ray(
        self, cluster: Cluster, pending: list[_Prepared], batch_size: int
    ) -> Iterator[tuple[list[_Prepared], dict[str, np.ndarray]]]:
        """What :func:`embedded_batches` gives, made by the cluster's workers (no pixels here)."""
        batches = cluster.embedded_batches(
            self.parts.models,
            self.model,
            pending,
            _job,
            batch_size,
            self.reusable,
            fingerprints=True,
        )
        for batch, done, vectors, runtime in batches:
            self.report.runtime = runtime or self.report.runtime
            pairs = zip(batch, done, strict=True)
            yield [replace(p, loaded=d.loaded, phash=d.phash) for p, d in pairs], vectors

    def _prepare(self, pending: _Prepared) -> _Prepared:
        """Read, hash, decode and preprocess a file into a new record: the list of every pending
        file must not keep each picture and tensor alive once its batch is committed."""
        assert self.prepare is not None
        kept = _kept_hash(pending)

        def skip_decode(content_hash: str) -> bool:
            return content_hash == kept or content_hash in self.reusable

        loaded = load_file(pending.found.path, self.prepare, skip_decode)
        picture = loaded.picture
        phash = fingerprint.stored_phash(picture.image if picture is not None else None)
        return replace(pending, loaded=loaded, phash=phash)

    def _commit(self, batch: list[_Prepared], embedded: dict[str, np.ndarray]) -> None:
        """Write the batch in one transaction; if that fails for a reason that is not the
        storage's (full, read-only), write file by file, so only the culprit fails."""
        vectors = {h: store.vector_to_bytes(v) for h, v in embedded.items()}
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
                _fail(self.parts, self.report, outcome.path, outcome.reason)
            else:
                setattr(self.report, outcome.kind, getattr(self.report, outcome.kind) + 1)
            if outcome.claimed is not None:
                self.claimed.add(outcome.claimed)
        self.reusable.update(vectors)

    def _write(self, batch: list[_Prepared], vectors: dict[str, bytes]) -> list[_Outcome]:
        claimed: set[int] = set()
        with self.parts.sessions() as session, session.begin():
            outcomes = [self._apply(session, item, vectors, claimed) for item in batch]
        return outcomes

    def _apply(
        self, session: Session, item: _Prepared, vectors: dict[str, bytes], claimed: set[int]
    ) -> _Outcome:
        """Write one file's outcome (vector writes log themselves in the change log)."""
        found, known, loaded = item.found, item.known, item.loaded
        path = found.path
        row = store.image(session, known.id) if known else None
        if loaded.error is not None:
            if loaded.access_error and row is not None and row.error is None:
                return _Outcome(path, "failed", loaded.error)  # keeps its row and vector
            if row is None:
                row = store.new_image(session, path)
            _set_file(row, found, loaded.content_hash, loaded.error)
            store.copy_picture(row, None)
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
        donor = None
        if vector is None:
            donor, vector = store.vector_for_content(session, content_hash, self.model_id)
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
            row = store.new_image(session, path)
            kind = "added"
        _set_file(row, found, content_hash, None)
        if loaded.picture is not None:
            picture = loaded.picture
            columns = picture.metadata.columns()
            store.set_picture(
                row, picture.width, picture.height, picture.format, columns, item.phash
            )
        else:
            store.copy_picture(row, donor)
        session.flush()
        store.put_vector(session, row.id, self.model_id, vector)
        return _Outcome(path, kind)

    def _moved_from(self, session: Session, content_hash: str, claimed: set[int]) -> Image | None:
        """An image row with this content whose file is gone: the file was moved or renamed."""
        for candidate in store.images_with_hash(session, content_hash, self.model_id):
            gone = candidate.path not in self.seen and scan.is_gone(candidate.path)
            if gone and candidate.id not in self.claimed | claimed:
                return candidate
        return None


def _kept_hash(pending: _Prepared) -> str | None:
    """The content hash whose vector the library holds for this very file: if the file still
    has it, it is not decoded again."""
    known = pending.known
    keeps = known is not None and known.has_vector and known.error is None
    return known.content_hash if keeps and known is not None else None


def _job(pending: _Prepared) -> Job:
    """A file for a Ray worker."""
    return Job(pending.found.path, _kept_hash(pending))


def _set_file(
    row: Image, found: scan.FoundFile, content_hash: str | None, error: str | None
) -> None:
    store.set_file(row, found.path, found.size, found.mtime_ns, content_hash, error)
