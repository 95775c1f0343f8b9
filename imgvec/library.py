"""The Python API: everything the CLI does, on a :class:`Library` object.

lib = Library.open("~/photos-library")
lib.add(["~/Pictures"])
for hit in lib.query(["query.jpg"], k=5)[0].hits:
    print(hit.score, hit.path)
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from imgvec import files, index_files, store
from imgvec.config import LibraryPaths, resolve_paths
from imgvec.db import make_engine, sqlite_file, upgrade_schema
from imgvec.embedders.registry import WeightsChoice, get_spec, resolve_weights
from imgvec.errors import (
    ImgvecError,
    LibraryLocked,
    ModelError,
    StorageError,
    WeightsUnavailable,
    cannot_write,
    storage_problem,
)
from imgvec.images import Picture
from imgvec.ingest import DEFAULT_BATCH_SIZE, AddReport, FileError, add_paths
from imgvec.lock import no_writer, write_lock
from imgvec.pipeline import Loaded, load_file, prefetched_batches
from imgvec.reporting import Reporter, SilentReporter, Stopwatch
from imgvec.schema import EmbeddingModel, IndexVersion

if TYPE_CHECKING:
    from torch import Tensor

    from imgvec.embed import Embedder
    from imgvec.index_store import GcReport, IndexStore, VerifyReport
    from imgvec.model_switch import SwitchReport
    from imgvec.user_sql import SqlResult

DEFAULT_MODEL = "vit_b_16"
DEFAULT_K = 10

__all__ = ["DEFAULT_MODEL", "AddReport", "FileError", "Library", "QueryHit", "QueryResult"]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    layer: str
    weights: str
    weights_path: str | None
    preprocessing: str
    dim: int

    @classmethod
    def of(cls, row: EmbeddingModel) -> ModelInfo:
        return cls(row.name, row.layer, row.weights, row.weights_path, row.preprocessing, row.dim)

    def short_weights(self) -> str:
        return self.weights[:19] + "…" if self.weights.startswith("sha256:") else self.weights

    def label(self) -> str:
        return f"{self.name}/{self.layer} ({self.short_weights()}, {self.dim}-d)"


@dataclass(frozen=True)
class QueryHit:
    id: int
    path: str
    score: float


@dataclass
class QueryResult:
    query: str
    hits: list[QueryHit] = field(default_factory=list)
    error: str | None = None
    filter: dict[str, Any] | None = None
    """With ``where``: the condition, how many images matched, and the strategy used."""
    vector_source: str = "embedded"
    """``stored`` when the query image is in the library and its stored vector was used."""


@dataclass(frozen=True)
class BackfillReport:
    updated: int
    errors: list[FileError]


@dataclass(frozen=True)
class RemoveReport:
    removed: int
    errors: list[FileError]


@dataclass(frozen=True)
class IndexInfo:
    version: int
    kind: str
    params: dict[str, Any]
    n_vectors: int
    segments: int
    size_bytes: int
    recall: float | None
    created_at: datetime
    stale: bool


@dataclass(frozen=True)
class ModelStatus:
    model: ModelInfo
    embeddings: int
    active: bool
    images: int = 0
    complete: bool = False
    """Every readable image has a vector for this model."""
    indexed: bool = False


@dataclass(frozen=True)
class Status:
    library: str
    database: str
    images: int
    failed: int
    models: list[ModelStatus]
    index: IndexInfo | None
    failures: list[FileError]


class Library:
    """A library: metadata in a SQL database, index artifacts in a directory."""

    precision = "auto"
    """Arithmetic of the models this object runs: ``fp32``, ``bf16`` (bfloat16 autocast) or
    ``auto`` (bf16 where the hardware has it, see :func:`imgvec.embed.auto_precision`); vectors
    stay float32. Not part of a model's identity: bf16 and fp32 vectors of an image agree to a
    cosine of 0.99+ and rank alike (BENCHMARKS.md, precision section), so they mix in one index."""

    read_only = False
    """The library's files cannot be written here (a backup, a read-only mount, a full disk):
    reading commands work, searching the index as it is; writing ones raise
    :class:`StorageError`."""
    read_only_reason: str | None = None

    def __init__(self, paths: LibraryPaths, engine: Engine, reporter: Reporter) -> None:
        self.paths = paths
        self.engine = engine
        self.reporter = reporter
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._embedders: dict[int, Embedder] = {}
        self._indexes: dict[int, IndexStore] = {}
        self.stopwatch = Stopwatch()
        """Time spent loading models, embedding, opening indexes and searching."""

    @classmethod
    def open(
        cls,
        library: str | os.PathLike[str] | None = None,
        db: str | None = None,
        *,
        reporter: Reporter | None = None,
        create: bool = True,
    ) -> Library:
        """Open (or with ``create``, make) a library, upgrading its schema if it is older."""
        paths = resolve_paths(library, db)
        if not create and paths.uses_default_sqlite and not (paths.root / "imgvec.db").exists():
            raise ImgvecError(f"no library at {paths.root}; add images first: imgvec add PATH")
        reporter = reporter or SilentReporter()
        if not paths.root.exists():
            paths.root.mkdir(parents=True)
        database = sqlite_file(paths.db_url)
        read_only = not os.access(paths.root, os.W_OK) or (
            database is not None and os.path.exists(database) and not os.access(database, os.W_OK)
        )
        why = None
        try:
            engine = _open_database(paths.db_url, reporter, read_only and database is not None)
        except Exception as error:
            # A full disk cannot even hold SQLite's WAL index (-shm): read without it.
            problem = storage_problem(error)
            if problem is None or database is None or read_only:
                raise
            engine = _open_database(paths.db_url, reporter, True, frozen=True)
            read_only, why = True, problem
        lib = cls(paths, engine, reporter)
        lib.read_only, lib.read_only_reason = read_only, why
        return lib

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def session(self) -> Session:
        """A new ORM session on the library's database (the caller manages transactions)."""
        return self._sessions()

    # --- models ----------------------------------------------------------------------------------

    def model(self) -> ModelInfo | None:
        with self.session() as session:
            row = store.active_model(session)
            return None if row is None else ModelInfo.of(row)

    def init(
        self, model: str | None = None, weights: str | None = None, layer: str | None = None
    ) -> ModelInfo:
        """Fix the library's model; with the model already fixed, check that the request matches."""
        with self.writing():
            return ModelInfo.of(self._ensure_model(model, weights, layer))

    def _ensure_model(
        self, name: str | None, weights: str | None, layer: str | None
    ) -> EmbeddingModel:
        with self.session() as session, session.begin():
            active = store.active_model(session)
            if active is not None and name in (None, active.name):
                if weights is None and layer is None:
                    return active
                weights = weights or active.weights_path or _weights_option(active.weights)
                layer = layer or active.layer
            row = self._model_row(
                session, name or (active.name if active else DEFAULT_MODEL), weights, layer
            )
            if active is None:
                store.set_active_model(session, row)
            elif row.id != active.id:
                raise ModelError(
                    f"this library embeds with {ModelInfo.of(active).label()}, not "
                    f"{ModelInfo.of(row).label()}; to switch: imgvec model use {row.name}"
                )
            return row

    def _model_row(
        self, session: Session, name: str, weights: str | None, layer: str | None
    ) -> EmbeddingModel:
        """The row of a model identity, created if new (the active model is not changed)."""
        spec = get_spec(name)
        layer_name, layer_spec = spec.layer(layer)
        choice = resolve_weights(spec, weights or "default")
        row = store.find_model(session, spec.name, layer_name, choice.identity)
        if row is None:
            row = EmbeddingModel(
                name=spec.name,
                layer=layer_name,
                weights=choice.identity,
                weights_path=choice.path,
                preprocessing=spec.preprocess.describe(),
                dim=layer_spec.dim,
            )
            session.add(row)
            session.flush()
        elif choice.path and choice.path != row.weights_path:
            row.weights_path = choice.path  # the same weights, found somewhere else
        return row

    # --- embedding models ------------------------------------------------------------------------

    def models(self) -> list[ModelStatus]:
        """Every model the library knows, with how complete its vectors and index are."""
        with self.session() as session:
            active = store.active_model(session)
            images, _ = store.count_images(session)
            result = []
            for row in store.models(session):
                vectors = store.count_vectors(session, row.id)
                version = store.active_version(session, row.id)
                result.append(
                    ModelStatus(
                        ModelInfo.of(row),
                        vectors,
                        active is not None and row.id == active.id,
                        images=images,
                        complete=vectors == images,
                        indexed=version is not None,
                    )
                )
        return result

    def find_model(self, name: str) -> EmbeddingModel:
        """A stored model by ``name`` or ``name/layer``."""
        wanted_name, _, wanted_layer = name.partition("/")
        with self.session() as session:
            rows = [
                r
                for r in store.models(session)
                if r.name == wanted_name and wanted_layer in ("", r.layer)
            ]
        if not rows:
            raise ModelError(f"the library has no model {name!r} (see imgvec model list)")
        if len(rows) > 1:
            labels = ", ".join(ModelInfo.of(r).label() for r in rows)
            raise ModelError(f"{name!r} is ambiguous: {labels}; say name/layer")
        return rows[0]

    def searchable_model(self, name: str) -> EmbeddingModel:
        """A stored model that every readable image has a vector for, and that has an index."""
        row = self.find_model(name)
        status = next(s for s in self.models() if s.model == ModelInfo.of(row))
        if not status.complete:
            raise ModelError(
                f"model {name} has vectors for {status.embeddings} of {status.images} images: "
                f"its index is incomplete; finish it with imgvec model use {name}"
            )
        if not status.indexed:
            raise ModelError(f"model {name} has no index yet; imgvec model use {name} builds it")
        return row

    def use_model(
        self, name: str, weights: str | None = None, layer: str | None = None, batch_size: int = 32
    ) -> SwitchReport:
        """Embed every image with this model beside the current one, build its index, switch.

        Resumable: vectors already stored are not computed again.
        """
        from imgvec.model_switch import use_model

        with self.writing():
            with self.session() as session, session.begin():
                stored = [r for r in store.models(session) if r.name == name]
                if weights is None and layer is None and len(stored) == 1:
                    row = stored[0]
                else:
                    row = self._model_row(session, name, weights, layer)
            return use_model(self, row, batch_size)

    def drop_model(self, name: str) -> int:
        """Delete a model that is not active: its vectors, index files and rows."""
        with self.writing():
            row = self.find_model(name)
            if row.id == self.active_model_row().id:
                raise ModelError(f"{name} is the active model; switch first (imgvec model use)")
            with self.session() as session, session.begin():
                vectors = store.count_vectors(session, row.id)
                paths = store.drop_model(session, row.id)
            for relative in paths:
                (self.paths.root / relative).unlink(missing_ok=True)
            self._indexes.pop(row.id, None)
            self._embedders.pop(row.id, None)
        return vectors

    def active_model_row(self) -> EmbeddingModel:
        with self.session() as session:
            row = store.active_model(session)
        if row is None:
            raise ImgvecError("the library has no model yet; add images first: imgvec add PATH")
        return row

    def preparer(
        self, row: EmbeddingModel | None = None
    ) -> Callable[[bytes], tuple[Picture, Tensor]]:
        """Image bytes -> (picture, input tensor) for a model (the active one by default), without
        loading the model (see :func:`imgvec.embed.prepare`)."""
        with self.stopwatch("import torch"):  # the first time: seconds, often more than the model
            from imgvec.embed import prepare

        prep = get_spec((row or self.active_model_row()).name).preprocess
        return functools.partial(prepare, prep=prep)

    def embedder(self, row: EmbeddingModel | None = None) -> Embedder:
        """A model of the library (the active one by default), loaded on first use."""
        row = row or self.active_model_row()
        if row.id not in self._embedders:
            from imgvec.embed import Embedder
            from imgvec.files import sha256_file

            spec = get_spec(row.name)
            if row.weights_path is not None:
                try:
                    found = "sha256:" + sha256_file(row.weights_path)
                except OSError:
                    found = None
                if found != row.weights:
                    raise WeightsUnavailable(
                        f"the weights file {row.weights_path} is missing or has changed; pass the "
                        f"original file again with --weights PATH ({row.weights})"
                    )
            self.reporter.notice(f"Loading model {ModelInfo.of(row).label()}")
            with self.stopwatch("model load"):
                self._embedders[row.id] = Embedder(
                    spec,
                    row.layer,
                    WeightsChoice(row.weights, row.weights_path),
                    precision=self.precision,
                )
        return self._embedders[row.id]

    # --- adding and removing ---------------------------------------------------------------------

    def add(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        model: str | None = None,
        weights: str | None = None,
        layer: str | None = None,
        batch_size: int = 32,
        prune: bool = False,
    ) -> AddReport:
        """Add files and folders (recursively); :mod:`imgvec.ingest` says what happens to each.

        ``prune`` also removes the images of folders that now read as empty or are missing
        (without it they are kept, since that is what an unmounted drive looks like)."""
        with self.writing():
            self._ensure_model(model, weights, layer)
            return add_paths(self, [os.fspath(p) for p in paths], batch_size, prune)

    def remove(self, paths: Sequence[str | os.PathLike[str]]) -> RemoveReport:
        """Remove files, or whole folders, from the library (the files themselves are untouched)."""
        errors: list[FileError] = []
        with self.writing():
            with self.session() as session, session.begin():
                ids: set[int] = set()
                for path in paths:
                    normal = files.normalize(path)
                    storable = files.is_utf8(normal)
                    found = store.image_ids_under(session, [normal]) if storable else []
                    if not found:
                        errors.append(FileError(os.fspath(path), "not in the library"))
                        self.reporter.file_error(os.fspath(path), "not in the library")
                    ids.update(found)
                removed = store.delete_images(session, sorted(ids))
            model = self.model()
            if model is not None and not self.index_is_current(self.active_model_row()):
                self.index().update()  # also when a killed run committed the removal
        return RemoveReport(removed, errors)

    # --- the index -------------------------------------------------------------------------------

    def index(self, model: EmbeddingModel | None = None) -> IndexStore:
        """A model's versioned index (default: the active model's); writes need :meth:`writing`."""
        from imgvec.index_store import IndexStore

        model = model or self.active_model_row()
        if model.id not in self._indexes:
            self._indexes[model.id] = IndexStore(
                self.paths.root, self._sessions, model, self.reporter.notice
            )
        return self._indexes[model.id]

    def index_is_current(self, model: EmbeddingModel) -> bool:
        """The model's active index covers every change and its files are there (SQL and stats
        only: no FAISS)."""
        with self.session() as session:
            version = store.active_version(session, model.id)
            if version is None or version.change_seq != store.last_change(session, model.id):
                return False
            segments = store.segments_of(session, version.id)
        return all(_file_size(self.paths.root / s.path) == s.size_bytes for s in segments)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the library's write lock (one writer at a time; readers are never blocked), and
        first delete what a killed writer left in the index folder. Raises
        :class:`StorageError` on a read-only library, :class:`LibraryLocked` while another
        process writes."""
        if self.read_only and self.read_only_reason is not None:
            raise StorageError(cannot_write(self.read_only_reason))
        if self.read_only:
            raise StorageError(
                f"the library at {self.paths.root} is read-only here; this command writes to it"
            )
        with write_lock(self.paths.lock_file):
            with self.session() as session:
                known = store.segment_paths(session)
            index_files.remove_orphans(self.paths.root, known)
            yield

    def build_index(
        self, kind: str | None = None, nlist: int | None = None, nprobe: int | None = None
    ) -> IndexVersion:
        """A fresh index version from the stored vectors (no model is loaded)."""
        with self.writing():
            return self.index().build(kind, nlist, nprobe)

    def compact_index(self) -> IndexVersion:
        with self.writing():
            self.index().update()
            return self.index().compact()

    def rollback_index(self, version_id: int) -> IndexVersion:
        with self.writing():
            return self.index().rollback(version_id)

    def gc_index(self, keep: int = 2) -> GcReport:
        with self.writing():
            return self.index().gc(keep)

    def verify_index(self) -> VerifyReport:
        """Check the active index (see :meth:`IndexStore.verify`); writes nothing, so it works on
        a full disk or a read-only library."""
        with no_writer(self.paths.lock_file) as alone:
            return self.index().verify(writer_active=not alone)

    def _current_version(self, model: EmbeddingModel) -> IndexVersion:
        """The version to search: caught up first, unless another process is writing."""
        index = self.index(model)
        version, last = index.active()
        if version is not None and version.change_seq == last and index.intact(version):
            return version
        if self.read_only:
            why = self.read_only_reason or "the library is read-only here"
            if version is None or not index.intact(version):
                raise ImgvecError(
                    f"the library has no usable index, and it cannot be built ({why})"
                )
            self.reporter.notice(
                f"The index cannot be brought up to date ({why}): searching version "
                f"{version.id}; removals show, the newest additions do not"
            )
            return version
        try:
            with self.writing():
                return index.update()
        except LibraryLocked:
            if version is None:
                raise ImgvecError(
                    "the index is being built by another imgvec process; "
                    "try again when it has finished"
                ) from None
            self.reporter.notice(
                "Another process is updating the library: removals show, "
                "its newest additions will once it finishes"
            )
            return version
        except Exception as error:
            problem = storage_problem(error)
            if problem is not None and version is None:
                raise ImgvecError(
                    f"the library has no usable index, and it cannot be built ({problem})"
                ) from None
            if problem is None or version is None or not index.intact(version):
                raise
            self.reporter.notice(
                f"The index cannot be brought up to date ({problem}): searching version "
                f"{version.id}; removals show, the newest additions do not"
            )
            return version

    # --- querying --------------------------------------------------------------------------------

    def query(
        self,
        images: Sequence[str | os.PathLike[str]],
        k: int = DEFAULT_K,
        where: str | None = None,
        model: str | None = None,
    ) -> list[QueryResult]:
        """For each image, the k most similar library images, best first, with cosine scores.

        ``where`` is an SQL condition on the ``photos`` view (e.g. ``"camera_make = 'Canon'"``):
        only matching images are returned, still k of them when k match. ``model`` queries
        another stored model with a complete index (see :meth:`models`) instead of the active one.
        """
        if k < 1:
            raise ImgvecError("k must be at least 1")
        model = self.searchable_model(model) if model else self.active_model_row()
        results = [QueryResult(files.normalize(image)) for image in images]
        vectors: dict[int, np.ndarray] = {}
        for position, result in enumerate(results):
            stored = self._stored_query_vector(result.query, model)
            if stored is not None:
                vectors[position] = stored
                result.vector_source = "stored"
        vectors.update(
            self._embed_queries(model, results, sorted(set(range(len(results))) - set(vectors)))
        )
        if not vectors:
            return results
        order = sorted(vectors)
        queries = np.stack([vectors[p] for p in order])
        if where is None:
            version = self._current_version(model)
            with self.stopwatch("index load"):
                self.index(model).load(version)
            with self.stopwatch("search"):
                scores, ids = self.index(model).search(
                    version, queries, k, self._vector_lookup(model)
                )
        else:
            scores, ids, plan = self._filtered_search(model, queries, k, where)
            for position in order:
                results[position].filter = plan
        with self.session() as session:
            paths = store.paths_of(session, {int(i) for i in ids.ravel() if i >= 0})
        for row, position in enumerate(order):
            results[position].hits = [
                QueryHit(int(i), paths[int(i)], float(s))
                for s, i in zip(scores[row], ids[row], strict=True)
                if i >= 0 and int(i) in paths
            ]
        return results

    def _embed_queries(
        self, model: EmbeddingModel, results: list[QueryResult], positions: list[int]
    ) -> dict[int, np.ndarray]:
        """Vectors of the query files at ``positions``, embedded in batches while the next batch
        is decoded; a file that cannot be read gets its error and no vector."""
        if not positions:
            return {}
        prepare = self.preparer(model)  # imports torch (timed)
        import torch

        def load(position: int) -> tuple[int, Loaded]:
            return position, load_file(results[position].query, prepare)

        vectors: dict[int, np.ndarray] = {}
        for batch in prefetched_batches(positions, load, DEFAULT_BATCH_SIZE):
            ready: list[tuple[int, Tensor]] = []
            for position, loaded in batch:
                if loaded.tensor is None:
                    results[position].error = loaded.error
                    self.reporter.file_error(results[position].query, str(loaded.error))
                else:
                    ready.append((position, loaded.tensor))
            if ready:
                embedder = self.embedder(model)
                with self.stopwatch("embed"):
                    embedded = embedder.embed_tensors(torch.stack([t for _, t in ready]))
                vectors.update(zip((p for p, _ in ready), embedded, strict=True))
        return vectors

    def _filtered_search(
        self, model: EmbeddingModel, queries: np.ndarray, k: int, where: str
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Top-k among the images matching ``where`` (see ``index_rules.filter_strategy``)."""
        from imgvec import index_rules, user_sql

        allowed = user_sql.matching_ids(self.engine, where)
        with self.session() as session:
            total = store.count_vectors(session, model.id)
        strategy = index_rules.filter_strategy(len(allowed))
        plan: dict[str, Any] = {"where": where, "matches": len(allowed), "strategy": strategy}
        if strategy == "exact":
            with self.session() as session:
                ids, vectors = store.vectors_of(session, model.id, model.dim, allowed)
            scores = queries @ vectors.T if len(ids) else np.zeros((len(queries), 0), np.float32)
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            top = np.take_along_axis(scores, order, axis=1)
            return (*_pad(top, ids[order] if len(ids) else order, k), plan)
        version = self._current_version(model)
        fetch = index_rules.overfetch(k, len(allowed), total)
        allowed_array = np.fromiter(allowed, np.int64, len(allowed))
        while True:
            scores, ids = self.index(model).search(
                version, queries, fetch, self._vector_lookup(model)
            )
            keep = np.isin(ids, allowed_array)
            enough = (keep.sum(axis=1) >= min(k, len(allowed))).all()
            if enough or fetch >= total:
                break
            fetch = min(total, fetch * 2)
        plan["fetched"] = fetch
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # matches first, by score
        top_ids = np.where(
            np.take_along_axis(keep, order, axis=1), np.take_along_axis(ids, order, axis=1), -1
        )
        return np.take_along_axis(scores, order, axis=1), top_ids, plan

    def _vector_lookup(self, model: EmbeddingModel) -> Callable[[np.ndarray], np.ndarray]:
        """Stored vectors by image id, for exact re-ranking of compressed-index candidates."""

        def lookup(ids: np.ndarray) -> np.ndarray:
            with self.session() as session:
                found_ids, found = store.vectors_of(session, model.id, model.dim, ids.tolist())
            position = {int(i): p for p, i in enumerate(found_ids)}
            zero = np.zeros(model.dim, np.float32)  # removed meanwhile: ranks last
            return np.stack([found[position[int(i)]] if int(i) in position else zero for i in ids])

        return lookup

    def _stored_query_vector(self, path: str, model: EmbeddingModel) -> np.ndarray | None:
        """The stored vector of a query image that is in the library and unchanged on disk."""
        if not files.is_utf8(path):  # never stored: the database holds UTF-8 text
            return None
        with self.session() as session:
            row = store.image_by_path(session, path)
            if row is None or row.error is not None:
                return None
            try:
                info = os.stat(path)
            except OSError:
                return None
            if (info.st_size, info.st_mtime_ns) != (row.size, row.mtime_ns):
                return None
            data = store.stored_vector(session, row.id, model.id)
        return None if data is None else store.bytes_to_vector(data)

    # --- metadata ---------------------------------------------------------------------------------

    def sql(self, statement: str) -> SqlResult:
        """Run one read-only SQL statement on the library database (writes are refused)."""
        from imgvec import user_sql

        return user_sql.run(self.engine, statement)

    def backfill(self) -> BackfillReport:
        """Read EXIF and pixel size of images added before imgvec recorded them (no decoding)."""
        from imgvec.metadata import read_header

        errors: list[FileError] = []
        updated = 0
        with self.writing():
            with self.session() as session:
                pending = store.images_without_metadata(session)
            for start in range(0, len(pending), 256):
                with self.session() as session, session.begin():
                    for image_id, path in pending[start : start + 256]:
                        try:
                            with PILImage.open(path) as opened:
                                width, height, metadata = read_header(opened)
                                fmt = opened.format
                        except (OSError, ValueError) as error:
                            errors.append(FileError(path, f"cannot read metadata: {error}"))
                            self.reporter.file_error(path, errors[-1].reason)
                            continue
                        store.set_metadata(
                            session,
                            image_id,
                            width=width,
                            height=height,
                            format=fmt,
                            **metadata.columns(),
                        )
                        updated += 1
        return BackfillReport(updated, errors)

    # --- status ----------------------------------------------------------------------------------

    def status(self, failure_limit: int = 20) -> Status:
        with self.session() as session:
            images, failed = store.count_images(session)
            active = store.active_model(session)
            index = None
            if active is not None:
                version = store.active_version(session, active.id)
                if version is not None:
                    segments = store.segments_of(session, version.id)
                    index = IndexInfo(
                        version.id,
                        version.kind,
                        json.loads(version.params),
                        version.n_vectors,
                        len(segments),
                        sum(segment.size_bytes for segment in segments),
                        version.recall,
                        version.created_at,
                        stale=version.change_seq != store.last_change(session, active.id),
                    )
            failures = [FileError(p, r) for p, r in store.failures(session, failure_limit)]
        database = make_url(self.paths.db_url).render_as_string(hide_password=True)
        return Status(
            str(self.paths.root), database, images, failed, self.models(), index, failures
        )


def _open_database(url: str, reporter: Reporter, read_only: bool, frozen: bool = False) -> Engine:
    """An engine whose schema is current (upgraded unless ``read_only``); see ``make_engine``."""
    engine = make_engine(url, read_only=read_only, frozen=frozen)
    try:
        upgrade_schema(engine, reporter.notice, read_only=read_only)
    except BaseException:
        engine.dispose()
        raise
    return engine


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _pad(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    missing = k - ids.shape[1]
    if missing > 0:
        ids = np.hstack([ids, np.full((len(ids), missing), -1, np.int64)])
        scores = np.hstack([scores, np.full((len(scores), missing), -np.inf, np.float32)])
    return scores, ids


def _weights_option(identity: str) -> str:
    """The ``--weights`` value that gives a stored identity back (for non-file weights)."""
    return "none" if identity.startswith("none:") else "default"
