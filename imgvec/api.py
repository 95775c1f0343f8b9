"""The Python API: everything the CLI does, on a :class:`Library` object.

lib = Library.open("~/photos-library")
lib.add(["~/Pictures"])
for hit in lib.query(["query.jpg"], k=5)[0].hits:
    print(hit.score, hit.path)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from imgvec import scan
from imgvec.config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_K,
    DEFAULT_MODEL,
    PRECISIONS,
    LibraryPaths,
    resolve_paths,
)
from imgvec.decode.images import MAX_PIXELS, probe
from imgvec.embed import exports, ray_workers
from imgvec.embed.loader import Models
from imgvec.embed.registry import available
from imgvec.errors import (
    ClusterError,
    ImageNotFound,
    ImgvecError,
    LibraryLocked,
    StorageError,
    cannot_write,
    storage_problem,
)
from imgvec.index import artifacts
from imgvec.index.indexes import Indexes
from imgvec.ops import backfill as backfill_op
from imgvec.ops import dupes as dupes_op
from imgvec.ops import exchange, models, moves, thumbnails
from imgvec.ops import query as query_op
from imgvec.ops import vectors as vectors_op
from imgvec.ops.add import add_paths
from imgvec.ops.parts import Parts
from imgvec.ops.query import combine, text_label
from imgvec.ops.switch import use_model
from imgvec.reporting import Reporter, SilentReporter, Stopwatch
from imgvec.storage import store
from imgvec.storage.engine import make_engine, sqlite_file, upgrade_schema
from imgvec.storage.lock import database_no_writer, database_write_lock, no_writer, write_lock
from imgvec.storage.schema import EmbeddingModel, IndexVersion
from imgvec.storage.snapshot import bytes_to_vector
from imgvec.types import (
    AddReport,
    BackfillReport,
    DupesReport,
    ExportInfo,
    FileError,
    GcReport,
    ImportInfo,
    IndexVersionInfo,
    ModelInfo,
    ModelStatus,
    MoveReport,
    PairSignals,
    QueryHit,
    QueryResult,
    RemoveReport,
    Status,
    SwitchReport,
    VerifyReport,
)

if TYPE_CHECKING:
    from imgvec.decode.images import Picture
    from imgvec.embed.runtime import Embedder
    from imgvec.embed.spec import ModelSpec
    from imgvec.index.segments import IndexStore
    from imgvec.storage.user_sql import SqlResult


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MODEL",
    "PRECISIONS",
    "AddReport",
    "FileError",
    "Library",
    "ModelInfo",
    "QueryHit",
    "QueryResult",
    "combine",
    "text_label",
]


class Library:
    """A library: metadata in a SQL database, index artifacts in a directory."""

    @property
    def precision(self) -> str:
        """Arithmetic of the models this object runs: ``fp32``, ``bf16`` (bfloat16 autocast) or
        ``auto`` (bf16 where the hardware has it, see :func:`imgvec.embed.runtime.auto_precision`);
        vectors stay float32. Not part of a model's identity: bf16 and fp32 vectors of an image
        agree to a cosine of 0.99+ and rank alike (BENCHMARKS.md, precision section), so they mix
        in one index."""
        return self.parts.models.precision

    @precision.setter
    def precision(self, value: str) -> None:
        self.parts.models.precision = value

    read_only = False
    """The library's files cannot be written here (a backup, a read-only mount, a full disk):
    reading commands work, searching the index as it is; writing ones raise
    :class:`StorageError`."""
    read_only_reason: str | None = None

    def __init__(self, paths: LibraryPaths, engine: Engine, reporter: Reporter) -> None:
        self.paths = paths
        self.engine = engine
        self.reporter = reporter
        self._sessions = store.sessions(engine)
        self._query_rows: list[EmbeddingModel] = []
        """The models queries ran here (:meth:`make_exports`)."""
        self.stopwatch = Stopwatch()
        """Time spent loading models, embedding, opening indexes and searching."""
        self.parts = Parts(
            paths.root,
            self._sessions,
            reporter,
            Models(reporter, self.stopwatch, paths.root, self._sessions),
            Indexes(paths.root, self._sessions, reporter, self.stopwatch),
        )
        """What the operations (:mod:`imgvec.ops`) get of this library."""

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
        self,
        model: str | None = None,
        weights: str | None = None,
        layer: str | None = None,
        vectors: str | None = None,
    ) -> ModelInfo:
        """Fix the library's model; with the model already fixed, check that the request matches.
        ``vectors``: where the indexes live (see :meth:`use_vectors`)."""
        with self.writing():
            vectors_op.choose(self.parts, vectors)
            return ModelInfo.of(models.ensure_model(self.parts, model, weights, layer))

    @staticmethod
    def check_vector_store(url: str) -> None:
        """Raise ImgvecError (one line) unless ``url`` is a Milvus store that can be used (or
        ``files``): checked before a library is made for it."""
        vectors_op.check(vectors_op.normalise(url))

    def vector_store(self) -> str | None:
        """The URL of the Milvus store that holds the library's indexes, or None: versioned
        FAISS files in the library folder."""
        return self.parts.indexes.vector_store()

    def use_vectors(self, url: str | None) -> None:
        """Keep a new library's indexes in a Milvus server (``milvus://HOST:PORT[/DB]``) or a
        Milvus Lite store (``milvus-lite://PATH.db``) instead of FAISS files; recorded in the
        library, so later commands (and other machines sharing its database) use it too. None:
        ``IMGVEC_VECTORS``, if set. See :func:`imgvec.ops.vectors.choose` (a library with an
        index keeps its store: :meth:`move_vectors` moves it). Raises ImgvecError for a bad URL
        or a store that cannot be reached (:class:`imgvec.index.milvus.VectorStoreError`)."""
        with self.writing():
            vectors_op.choose(self.parts, url)

    def move_vectors(self, url: str) -> list[str]:
        """Move the indexes to the store ``url`` (a Milvus URL, or ``files`` for FAISS files in
        the library folder): each indexed model's index is built there from the stored vectors
        (nothing is re-embedded), then recorded, then the old one deleted; the models moved.
        Safe to interrupt (see :mod:`imgvec.ops.vectors`)."""
        with self.writing():
            return vectors_op.move(self.parts, url)

    # --- embedding models ------------------------------------------------------------------------

    def models(self) -> list[ModelStatus]:
        """Every model the library knows, with how complete its vectors and index are."""
        return models.statuses(self.parts)

    def find_model(self, name: str) -> EmbeddingModel:
        """A stored model by ``name`` or ``name/layer``."""
        return models.find_model(self.parts, name)

    def searchable_model(self, name: str) -> EmbeddingModel:
        """A stored model that every readable image has a vector for, and that has an index."""
        return models.searchable_model(self.parts, name)

    def use_model(
        self,
        name: str,
        weights: str | None = None,
        layer: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        ray: str | None = None,
        ship_bytes: bool = False,
    ) -> SwitchReport:
        """Embed every image with this model beside the current one, build its index, switch.

        Resumable: vectors already stored are not computed again. ``ray`` and ``ship_bytes``:
        as in :meth:`add`.
        """
        with _cluster(ray, ship_bytes, self.reporter) as cluster, self.writing():
            self.parts.indexes.ready()
            row = models.switch_target(self.parts, name, weights, layer)
            return use_model(self.parts, row, batch_size, cluster)

    def drop_model(self, name: str) -> int:
        """Delete a model that is not active: its vectors, index files and rows."""
        with self.writing():
            return models.drop_model(self.parts, name)

    def active_model_row(self) -> EmbeddingModel:
        return models.active_model(self.parts)

    def preparer(
        self, row: EmbeddingModel | None = None
    ) -> Callable[[bytes], tuple[Picture, np.ndarray]]:
        """Image bytes -> (picture, model input (3, crop, crop) float32) for a model (the active
        one by default), without loading the model (see :func:`imgvec.embed.pixels.prepare`)."""
        return self.parts.models.preparer(row or self.active_model_row())

    def embedder(self, row: EmbeddingModel | None = None) -> Embedder:
        """A model of the library (the active one by default), loaded on first use."""
        return self.parts.models.embedder(row or self.active_model_row())

    # --- adding and removing ---------------------------------------------------------------------

    def add(
        self,
        paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
        *,
        model: str | None = None,
        weights: str | None = None,
        layer: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        prune: bool = False,
        ray: str | None = None,
        ship_bytes: bool = False,
        vectors: str | None = None,
    ) -> AddReport:
        """Add files and folders (recursively); :mod:`imgvec.ops.add` says what happens to each.

        ``prune`` also removes the images of folders that now read as empty or are missing
        (without it they are kept, since that is what an unmounted drive looks like).
        ``ray``: the address of a Ray cluster (``host:port``, ``ray://host:port`` or ``auto``)
        whose workers read, decode and embed the files; this process stays the only writer
        (:mod:`imgvec.embed.ray_workers`). ``ship_bytes``: the files are read here and their
        bytes sent, for workers that do not share the files' storage. Raises
        :class:`ClusterError` when the cluster cannot be used, before anything is written.
        ``vectors``: where a new library keeps its indexes (:meth:`use_vectors`)."""
        with _cluster(ray, ship_bytes, self.reporter) as cluster, self.writing():
            vectors_op.choose(self.parts, vectors)
            self.parts.indexes.ready()  # a Milvus store that is down: refused before any change
            model_row = models.ensure_model(self.parts, model, weights, layer)
            return add_paths(self.parts, model_row, _paths(paths), batch_size, prune, cluster)

    def remove(
        self, paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str]
    ) -> RemoveReport:
        """Remove files, or whole folders, from the library (the files themselves are untouched)."""
        errors: list[FileError] = []
        with self.writing():
            self.parts.indexes.ready()  # a Milvus store that is down: refused before any change
            with self.session() as session, session.begin():
                ids: set[int] = set()
                for path in _paths(paths):
                    normal = scan.normalize(path)
                    storable = scan.is_utf8(normal)
                    found = store.image_ids_under(session, [normal]) if storable else []
                    if not found:
                        self.parts.fail(errors, os.fspath(path), "not in the library")
                    ids.update(found)
                removed = store.delete_images(session, sorted(ids))
            if self.model() is not None:  # also when a killed run committed the removal
                self.parts.indexes.catch_up(self.active_model_row())
        return RemoveReport(removed, errors)

    # --- the index -------------------------------------------------------------------------------

    def index(self, model: EmbeddingModel | None = None) -> IndexStore:
        """A model's versioned index (default: the active model's); writes need :meth:`writing`."""
        return self.parts.indexes.of(model or self.active_model_row())

    def index_versions(self) -> list[IndexVersionInfo]:
        """The active model's kept index versions, newest first."""
        return self.parts.indexes.versions(self.active_model_row())

    def index_status(self) -> IndexVersionInfo | None:
        """The active model's active index version (``behind``: changes not yet applied)."""
        return next((v for v in self.index_versions() if v.status == "active"), None)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the library's write lock (one writer at a time, also across library folders
        sharing one PostgreSQL database; readers are never blocked), and
        first delete what a killed writer left in the index folder. Raises
        :class:`StorageError` on a read-only library, :class:`LibraryLocked` while another
        process writes."""
        if self.read_only and self.read_only_reason is not None:
            raise StorageError(cannot_write(self.read_only_reason))
        if self.read_only:
            raise StorageError(
                f"the library at {self.paths.root} is read-only here; this command writes to it"
            )
        with write_lock(self.paths.lock_file), database_write_lock(self.engine):
            with self.session() as session:
                known, exported = store.segment_paths(session), store.export_paths(session)
            artifacts.remove_orphans(self.paths.root, known)
            exports.remove_orphans(self.paths.root, exported)
            moves.settle_interrupted(self.parts)
            self.parts.models.may_export = True
            try:
                yield
            finally:
                self.parts.models.may_export = False

    def build_index(
        self, kind: str | None = None, nlist: int | None = None, nprobe: int | None = None
    ) -> IndexVersionInfo:
        """A fresh index version from the stored vectors (no model is loaded)."""
        with self.writing():
            return self.index().info(self.index().build(kind, nlist, nprobe))

    def compact_index(self) -> IndexVersionInfo:
        """Fold delta segments and tombstones into a new base version now."""
        with self.writing():
            self.index().update()
            return self.index().info(self.index().compact())

    def rollback_index(self, version_id: int) -> IndexVersionInfo:
        """Make an earlier version active again, then apply the later changes to it."""
        with self.writing():
            return self.index().info(self.index().rollback(version_id))

    def gc_index(self, keep: int = 2) -> GcReport:
        """Delete retired versions beyond the ``keep`` newest (>= 0) and unused index files."""
        if keep < 0:
            raise ImgvecError(f"keep must be 0 or more, not {keep}")
        with self.writing():
            return self.index().gc(keep)

    def verify_index(self) -> VerifyReport:
        """Check the active index (see :meth:`IndexStore.verify`); writes nothing, so it works on
        a full disk or a read-only library."""
        with no_writer(self.paths.lock_file) as alone, database_no_writer(self.engine) as none:
            return self.index().verify(writer_active=not (alone and none))

    def current_index_version(self, model: EmbeddingModel) -> IndexVersion:
        """The version to search: caught up first, unless another process is writing or the
        library is read-only here (see :func:`imgvec.ops.query.version_to_search`)."""
        why = None
        if self.read_only:
            why = self.read_only_reason or "the library is read-only here"
        return query_op.version_to_search(self.parts, model, self.writing, why)

    # --- querying --------------------------------------------------------------------------------

    def query(
        self,
        images: Sequence[str | os.PathLike[str]] | str | os.PathLike[str] = (),
        k: int = DEFAULT_K,
        where: str | None = None,
        model: str | None = None,
        text: Sequence[str] | str = (),
    ) -> list[QueryResult]:
        """For each image, the k most similar library images, best first, with cosine scores.

        ``where`` is an SQL condition on the ``photos`` view (e.g. ``"camera_make = 'Canon'"``):
        only matching images are returned, still k of them when k match. ``model`` queries
        another stored model with a complete index (see :meth:`models`) instead of the active one.
        ``text``: words, for a model with a text tower (see :meth:`embed_texts`): each image's
        vector is combined with theirs (:func:`imgvec.ops.query.combine`: each part normalised,
        summed, normalised); without images, one result answers the words alone.
        """
        row = self._query_model(k, model)
        texts = [text] if isinstance(text, str) else list(text)
        paths = _paths(images) if images else []
        if not paths and not texts:
            raise ImgvecError("nothing to search for: give query images, words, or both")
        words = (texts, self._embed_texts(row, texts)) if texts else None
        return query_op.query(
            self.parts, self.engine, row, paths, k, where, self.current_index_version, words
        )

    def embed_texts(self, texts: Sequence[str], model: str | None = None) -> np.ndarray:
        """The vectors ((N, dim) float32, L2-normalised) of texts, by the text tower of a joint
        image-text model of the library (the active one by default; see ``imgvec models``, the
        ``text`` column), in its images' space. Raises :class:`ModelError` for a model without
        a text tower, naming those with one, and :class:`ImgvecError` for an empty text."""
        row = self.searchable_model(model) if model else self.active_model_row()
        return self._embed_texts(row, texts)

    def _embed_texts(self, row: EmbeddingModel, texts: Sequence[str]) -> np.ndarray:
        if not texts or any(not t.strip() for t in texts):
            raise ImgvecError("a text to search for must not be empty")
        return self.parts.models.embed_texts(row, texts)

    def make_exports(self) -> None:
        """Make the ONNX export of each model that a query here ran on torch for want of one
        (a library made before exports existed, or whose export was lost), so that the next
        query runs without torch. Best effort, after the answers (``imgvec query`` calls it
        once it has printed them): nothing happens on a read-only library or while another
        process writes; a later command makes it then."""
        if self.read_only:
            return
        pending = [r for r in self._query_rows if self.parts.models.needs_export(r)]
        if not pending:
            return
        try:
            with self.writing():
                for row in pending:
                    self.parts.models.export(row)
        except Exception as error:  # another writer, or no room: a later command makes it
            if not isinstance(error, LibraryLocked | StorageError) and not storage_problem(error):
                raise

    def query_image(
        self,
        data: bytes,
        name: str = "upload",
        k: int = DEFAULT_K,
        where: str | None = None,
        model: str | None = None,
        max_pixels: int = MAX_PIXELS,
    ) -> QueryResult:
        """Like :meth:`query` for an image given as bytes (an upload): the k most similar library
        images. ``name`` only labels the result; nothing is written. Raises as
        :meth:`embed_image` does."""
        _check_k(k)  # before the model runs
        return self.query_vector(self.embed_image(data, model, max_pixels), name, k, where, model)

    def embed_image(
        self, data: bytes, model: str | None = None, max_pixels: int = MAX_PIXELS
    ) -> np.ndarray:
        """The vector ((dim,) float32, L2-normalised) of an image given as bytes, by a model of
        the library (the active one by default), loaded on first use. Raises
        :class:`NotAnImage`, :class:`ImageTooLarge` (over ``max_pixels``, read from the header
        before decoding) or :class:`ImageError` (the reason in one line)."""
        row = self.searchable_model(model) if model else self.active_model_row()
        probe(data, max_pixels)
        _picture, inputs = self.parts.models.preparer(row)(data)
        return self.parts.models.embed(row, inputs[None])[0]

    def query_vector(
        self,
        vector: np.ndarray,
        name: str = "vector",
        k: int = DEFAULT_K,
        where: str | None = None,
        model: str | None = None,
    ) -> QueryResult:
        """The k library images most similar to a vector ((dim,) float32, L2-normalised, of
        ``model``, the active one by default); ``name`` labels the result."""
        row = self._query_model(k, model)
        if vector.shape != (row.dim,):
            raise ImgvecError(f"a {row.name} vector has {row.dim} dimensions, not {vector.shape}")
        return self._search_one(QueryResult(name), row, vector, k, where)

    def query_id(
        self,
        image_id: int,
        k: int = DEFAULT_K,
        where: str | None = None,
        model: str | None = None,
        words: np.ndarray | None = None,
    ) -> QueryResult:
        """Like :meth:`query` for a library image by id, from its stored vector (no model runs;
        "more like this"); ``words`` ((N, dim), from :meth:`embed_texts`) are combined with it as
        :meth:`query` does. Raises :class:`ImageNotFound` when no image has that id and a vector
        of the model."""
        row = self._query_model(k, model)
        with self.session() as session:
            image = store.image(session, image_id)
            data = None if image is None else store.stored_vector(session, image_id, row.id)
        if image is None or data is None:
            raise ImageNotFound(f"no image with id {image_id} and a vector of {row.name}")
        result = QueryResult(image.path, vector_source="stored")
        vector = bytes_to_vector(data)
        if words is not None:
            vector = query_op.combine([vector, *words])
        return self._search_one(result, row, vector, k, where)

    def _query_model(self, k: int, model: str | None) -> EmbeddingModel:
        _check_k(k)
        row = self.searchable_model(model) if model else self.active_model_row()
        if all(r.id != row.id for r in self._query_rows):
            self._query_rows.append(row)
        return row

    def _search_one(
        self,
        result: QueryResult,
        row: EmbeddingModel,
        vector: np.ndarray,
        k: int,
        where: str | None,
    ) -> QueryResult:
        [(result.hits, result.filter)] = query_op.search(
            self.parts, self.engine, row, vector[None, :], k, where, self.current_index_version
        )
        return result

    def image(self, image_id: int) -> dict[str, Any] | None:
        """A readable library image's row of the ``photos`` view (path, folder, width, height,
        format, taken_at, camera_make, ...), or None."""
        from imgvec.storage import user_sql

        found = user_sql.run(self.engine, f"SELECT * FROM photos WHERE id = {int(image_id)}")
        return found.to_json()[0] if found.rows else None

    def thumbnail(self, image_id: int, size: int = 256) -> bytes:
        """A JPEG thumbnail of a library image, longest side ``size`` px (one of
        :data:`imgvec.ops.thumbnails.SIZES`), cached on disk by content hash (see
        :mod:`imgvec.ops.thumbnails`)."""
        return thumbnails.thumbnail(self.parts, image_id, size)

    # --- duplicates -------------------------------------------------------------------------------

    def dupes(
        self,
        *,
        threshold: float | None = None,
        keep: str = "best",
        where: str | None = None,
        new: bool = False,
        since_seq: int | None = None,
    ) -> DupesReport:
        """Groups of exact and near-duplicate images (see :mod:`imgvec.ops.dupes`).

        ``threshold``: the cosine cut for candidates (default: the model's calibrated one);
        ``keep``: which member is kept (:data:`imgvec.ops.grouping.KEEP_POLICIES`); ``where``:
        an SQL condition on the ``photos`` view restricting both sides; ``new``: only images
        added since the last run, checked against the whole library; ``since_seq``: only images
        changed after that change seq (:meth:`last_change`; ``add --dupes``), without moving
        the mark ``new`` starts from.
        """
        row = self.active_model_row()
        where_ids = None
        if where is not None:
            from imgvec.storage import user_sql

            where_ids = user_sql.matching_ids(self.engine, where)
        with self._maybe_writing() as holding:
            since = since_seq
            if new and since_seq is None:
                with self.session() as session:
                    since = store.state(session).dupes_seq
                if since is None:
                    self.reporter.notice("No earlier `imgvec dupes` run: checking every image")
            version = (
                query_op.version_to_search(self.parts, row, nullcontext)
                if holding
                else self.current_index_version(row)
            )
            return dupes_op.find(
                self.parts,
                row,
                version,
                threshold=threshold,
                keep=keep,
                where_ids=where_ids,
                since_seq=since,
                record=since_seq is None,
                write=holding,
            )

    def last_change(self) -> int:
        """The newest change seq of the active model's vectors (0 without a model)."""
        if self.model() is None:
            return 0
        with self.session() as session:
            return store.last_change(session, self.active_model_row().id)

    def explain_dupes(
        self, a: str | os.PathLike[str], b: str | os.PathLike[str], threshold: float | None = None
    ) -> PairSignals:
        """Every duplicate signal of two library images, the cuts, and the verdict."""
        row = self.active_model_row()
        return dupes_op.explain(self.parts, row, scan.normalize(a), scan.normalize(b), threshold)

    def check_move_target(self, target: str | os.PathLike[str]) -> None:
        """Raise ImgvecError (one line naming it) unless ``target`` is a folder outside the
        library that can take files (made if missing)."""
        if not os.fspath(target).strip():
            raise ImgvecError("--move-to needs a folder to move the duplicates into")
        moves.check_target(self.parts, scan.normalize(target))

    def move_dupes(self, report: DupesReport, target: str | os.PathLike[str]) -> MoveReport:
        """Move every non-keeper of ``report`` into ``target`` (see :mod:`imgvec.ops.moves`);
        raises as :meth:`check_move_target` first."""
        self.check_move_target(target)
        with self.writing():
            return moves.move_aside(self.parts, report, scan.normalize(target))

    def undo_dupes(self, every_run: bool = False) -> MoveReport:
        """Put back what the latest ``move_dupes`` moved (``every_run``: all of them)."""
        with self.writing():
            return moves.undo(self.parts, every_run)

    @contextmanager
    def _maybe_writing(self) -> Iterator[bool]:
        """The write lock where the library can be written (what is learnt is then kept);
        yields whether it is held."""
        if self.read_only:
            yield False
        else:
            with self.writing():
                yield True

    def vectors(self, model: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Every stored vector of a model (the active one by default): ids (N,) int64 and
        vectors (N, dim) float32, L2-normalised, in id order."""
        row = self.find_model(model) if model else self.active_model_row()
        with self.session() as session:
            return store.all_vectors(session, row.id, row.dim)

    def vector_lookup(self, model: EmbeddingModel) -> Callable[[np.ndarray], np.ndarray]:
        """Stored vectors by image id, for exact re-ranking (see
        :func:`imgvec.storage.store.vector_lookup`)."""
        return store.vector_lookup(self._sessions, model.id, model.dim)

    # --- metadata ---------------------------------------------------------------------------------

    def limit_sql(self, seconds: float | None) -> None:
        """Stop users' SQL (:meth:`sql`, and ``where`` conditions) that runs longer than
        ``seconds`` (None: no limit, the default) with an :class:`ImgvecError`."""
        from imgvec.storage import user_sql

        self.engine = self.engine.execution_options(**{user_sql.TIMEOUT_OPTION: seconds})

    def sql(self, statement: str) -> SqlResult:
        """Run one read-only SQL statement on the library database (writes are refused)."""
        from imgvec.storage import user_sql

        return user_sql.run(self.engine, statement)

    def backfill(self) -> BackfillReport:
        """Read EXIF and pixel size of images added before imgvec recorded them (no decoding)."""
        with self.writing():
            return backfill_op.backfill(self.parts)

    # --- status ----------------------------------------------------------------------------------

    def status(self, failure_limit: int = 20) -> Status:
        """What the library holds: images, failures (up to ``failure_limit``), models, index."""
        with self.session() as session:
            images, failed = store.count_images(session)
            active = store.active_model(session)
            failures = [FileError(p, r) for p, r in store.failures(session, failure_limit)]
        index = None if active is None else self.index_status()
        database = make_url(self.paths.db_url).render_as_string(hide_password=True)
        return Status(
            str(self.paths.root),
            database,
            images,
            failed,
            self.models(),
            index,
            failures,
            self.vector_store(),
        )

    # --- vectors in and out -----------------------------------------------------------------------

    def export_vectors(
        self, out: str | os.PathLike[str], fmt: str | None = None, model: str | None = None
    ) -> ExportInfo:
        """Write a model's vectors (the active one's by default) with image ids, paths and
        content hashes to ``out`` (.npz, .parquet, .h5), atomically."""
        row = self.find_model(model) if model else self.active_model_row()
        return exchange.export_vectors(self.parts, row, Path(out), fmt)

    def import_vectors(self, path: str | os.PathLike[str]) -> ImportInfo:
        """Store an export's vectors for the images of this library (matched by content hash,
        else path), then bring that model's index up to date. No model runs."""
        with self.writing():
            return exchange.import_vectors(self.parts, Path(path))

    # --- what imgvec can do ----------------------------------------------------------------------

    @staticmethod
    def available_models() -> dict[str, ModelSpec]:
        """Every model imgvec can embed with (built-in and plugins), by name."""
        return available()


def _check_k(k: int) -> None:
    if k < 1:
        raise ImgvecError("k must be at least 1")


def _paths(paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str]) -> list[str]:
    """The API's path arguments as the user means them: one path or several, ``~`` expanded
    (a bare string is one path, never a sequence of one-letter paths)."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    return [os.path.expanduser(os.fspath(path)) for path in paths]


def _open_database(url: str, reporter: Reporter, read_only: bool, frozen: bool = False) -> Engine:
    """An engine whose schema is current (upgraded unless ``read_only``); see ``make_engine``.
    Raises ImgvecError, one line without the password, for a URL SQLAlchemy cannot use or a
    server database that cannot be reached (a full or read-only disk is left to the caller)."""
    from sqlalchemy.exc import ArgumentError, DBAPIError

    shown = make_url(url).render_as_string(hide_password=True) if "://" in url else url
    try:
        engine = make_engine(url, read_only=read_only, frozen=frozen)
    except ArgumentError as error:
        raise ImgvecError(f"cannot use the database URL {shown}: {error}") from None
    try:
        upgrade_schema(engine, reporter.notice, read_only=read_only)
    except DBAPIError as error:
        engine.dispose()
        if sqlite_file(url) is not None or storage_problem(error) is not None:
            raise
        reason = " ".join(str(error.orig).split()) if error.orig else type(error).__name__
        raise ImgvecError(f"cannot open the database {shown}: {reason}") from None
    except BaseException:
        engine.dispose()
        raise
    return engine


@contextmanager
def _cluster(
    address: str | None, ship_bytes: bool, reporter: Reporter
) -> Iterator[ray_workers.Cluster | None]:
    """The Ray cluster at ``address``, joined for one command (None: no ``--ray``); the
    reporter is told where the work goes."""
    if address is None:
        if ship_bytes:
            raise ClusterError("--ship-bytes sends files to Ray workers: give --ray ADDRESS too")
        yield None
        return
    cluster = ray_workers.connect(address, ship_bytes)
    way = "sending the files' bytes" if ship_bytes else "reading the files by path"
    reporter.notice(
        f"Working on the Ray cluster at {address}: {cluster.info.workers} workers, {way}"
    )
    try:
        yield cluster
    finally:
        cluster.close()
