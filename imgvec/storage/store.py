"""Every query the library makes, in one place. Functions take a Session and never commit.

Every function that writes or deletes a vector also appends to the change log (``changes``), so
that index updates can apply exactly what changed.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
from sqlalchemy import (
    ColumnElement,
    Engine,
    and_,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from imgvec.storage.schema import (
    Change,
    DupeMove,
    Embedding,
    EmbeddingModel,
    Image,
    IndexSegment,
    IndexVersion,
    IndexVersionSegment,
    LibraryState,
    ModelExport,
    utcnow,
)

STATE_ID = 1


@dataclass(frozen=True)
class KnownImage:
    """What ``add`` needs to know of an existing row to decide what to do with a file."""

    id: int
    path: str
    size: int
    mtime_ns: int
    content_hash: str | None
    error: str | None
    has_vector: bool


# --- library state -------------------------------------------------------------------------------


def state(session: Session) -> LibraryState:
    row = session.get(LibraryState, STATE_ID)
    if row is None:
        row = LibraryState(id=STATE_ID)
        session.add(row)
        session.flush()
    return row


# --- models --------------------------------------------------------------------------------------


def active_model(session: Session) -> EmbeddingModel | None:
    model_id = state(session).active_model_id
    return None if model_id is None else session.get(EmbeddingModel, model_id)


def find_model(session: Session, name: str, layer: str, weights: str) -> EmbeddingModel | None:
    return session.scalars(
        select(EmbeddingModel).where(
            EmbeddingModel.name == name,
            EmbeddingModel.layer == layer,
            EmbeddingModel.weights == weights,
        )
    ).one_or_none()


def model_row(
    session: Session,
    name: str,
    layer: str,
    weights: str,
    *,
    preprocessing: str,
    dim: int,
    weights_path: str | None = None,
) -> tuple[EmbeddingModel, bool]:
    """THE model row of an identity (name, layer, weights), created if absent; and whether it was
    created. An existing row takes a new ``weights_path`` (the same weights, found elsewhere).
    The active model is not changed."""
    row = find_model(session, name, layer, weights)
    if row is not None:
        if weights_path and weights_path != row.weights_path:
            row.weights_path = weights_path
        return row, False
    row = EmbeddingModel(
        name=name,
        layer=layer,
        weights=weights,
        weights_path=weights_path,
        preprocessing=preprocessing,
        dim=dim,
    )
    session.add(row)
    session.flush()
    return row, True


def bulk_load(session: Session, model_id: int, first_id: int, vectors: np.ndarray) -> None:
    """Synthetic images ``/bulk/<id>.jpg`` with ids from ``first_id``, each with its vector
    (float32, (N, d)), in multi-row inserts and without change-log rows: the next index build
    covers them. For benchmarks that need a library of millions of vectors quickly."""
    now = utcnow()
    ids = range(first_id, first_id + len(vectors))
    session.execute(
        insert(Image),
        [
            {
                "id": i,
                "path": f"/bulk/{i:08d}.jpg",
                "size": 1,
                "mtime_ns": 0,
                "added_at": now,
                "updated_at": now,
            }
            for i in ids
        ],
    )
    session.execute(
        insert(Embedding),
        [
            {"image_id": i, "model_id": model_id, "vector": vector_to_bytes(v), "created_at": now}
            for i, v in zip(ids, vectors, strict=True)
        ],
    )
    _count_vectors(session, model_id, len(vectors))


def models(session: Session) -> list[EmbeddingModel]:
    return list(session.scalars(select(EmbeddingModel).order_by(EmbeddingModel.id)))


def set_active_model(session: Session, model: EmbeddingModel) -> None:
    state(session).active_model_id = model.id


def image(session: Session, image_id: int) -> Image | None:
    return session.get(Image, image_id)


def new_image(session: Session, path: str) -> Image:
    """A new image row (its file and content are set with :func:`set_file`, :func:`set_picture`)."""
    row = Image(path=path, size=0, mtime_ns=0)
    session.add(row)
    return row


def set_file(
    row: Image, path: str, size: int, mtime_ns: int, content_hash: str | None, error: str | None
) -> None:
    """What the file system says: path, folder, size, modification time; and the outcome."""
    row.path = path
    row.folder = os.path.dirname(path)
    row.size = size
    row.mtime_ns = mtime_ns
    row.modified_at = datetime.fromtimestamp(mtime_ns / 1e9, timezone.utc)
    row.content_hash = content_hash
    row.error = error


PICTURE_COLUMNS = (
    "width",
    "height",
    "format",
    "metadata_at",
    "phash",
    *("taken_at", "camera_make", "camera_model", "lens", "orientation", "gps_lat", "gps_lon"),
)
"""What the content decides: copied from a same-content row. The EXIF ones are
``imgvec.decode.exif.METADATA_COLUMNS`` (a test checks that they agree)."""


def set_picture(
    row: Image,
    width: int,
    height: int,
    format: str | None,
    metadata: dict[str, Any],
    phash: int | None = None,
) -> None:
    """What a decode says of the content: pixel size, format, EXIF columns (now read), and the
    perceptual hash (``imgvec.decode.fingerprint.phash``)."""
    row.width, row.height, row.format, row.phash = width, height, format, phash
    for name, value in metadata.items():
        setattr(row, name, value)
    row.metadata_at = utcnow()


def copy_picture(row: Image, source: Image | None) -> None:
    """The picture columns of a same-content row (or none, with ``source`` None)."""
    for name in PICTURE_COLUMNS:
        setattr(row, name, getattr(source, name) if source is not None else None)


# --- images --------------------------------------------------------------------------------------


def _under(session: Session, paths: Iterable[str]) -> ColumnElement[bool]:
    """Rows at these paths or inside these folders.

    On SQLite, a folder is a range of the unique index on ``path`` (TEXT compares bytewise
    there, and every path that starts with ``folder/`` sorts between ``folder/`` and
    ``folder0``, "0" following "/"): a search of the index, where a ``substr`` test read every
    row (0.15 s at 500k images, on each ``add`` and ``remove``). PostgreSQL orders text by the
    database's collation, which need not be bytewise, so it keeps the exact ``substr`` test.
    SQLite's LIKE would ignore case.
    """
    bytewise = session.get_bind().dialect.name == "sqlite"
    clauses: list[ColumnElement[bool]] = []
    for path in paths:
        prefix = path.rstrip("/") + "/"
        clauses.append(Image.path == path)
        if bytewise:
            clauses.append(and_(Image.path >= prefix, Image.path < prefix[:-1] + "0"))
        else:
            clauses.append(func.substr(Image.path, 1, len(prefix)) == prefix)
    return or_(*clauses)


def known_images(
    session: Session, roots: Sequence[str], model_id: int | None
) -> dict[str, KnownImage]:
    has_vector = Embedding.image_id.is_not(None)
    query = (
        select(
            Image.id,
            Image.path,
            Image.size,
            Image.mtime_ns,
            Image.content_hash,
            Image.error,
            has_vector,
        )
        .outerjoin(Embedding, (Embedding.image_id == Image.id) & (Embedding.model_id == model_id))
        .where(_under(session, roots))
    )
    return {row.path: KnownImage(*row) for row in session.execute(query)}


def image_ids_under(session: Session, paths: Sequence[str]) -> list[int]:
    return list(session.scalars(select(Image.id).where(_under(session, paths))))


def images_missing_vectors(session: Session, model_id: int) -> list[tuple[int, str]]:
    """Readable images without a vector for the model: (id, path), by id."""
    has = select(Embedding.image_id).where(Embedding.model_id == model_id)
    query = select(Image.id, Image.path).where(Image.error.is_(None), Image.id.not_in(has))
    return [(image_id, path) for image_id, path in session.execute(query.order_by(Image.id))]


def drop_model(session: Session, model_id: int) -> list[str]:
    """Delete a model with its vectors, change log, index and export rows; returns their files."""
    versions = select(IndexVersion.id).where(IndexVersion.model_id == model_id)
    session.execute(delete(IndexVersionSegment).where(IndexVersionSegment.version_id.in_(versions)))
    session.execute(delete(IndexVersion).where(IndexVersion.model_id == model_id))
    paths = list(
        session.scalars(select(IndexSegment.path).where(IndexSegment.model_id == model_id))
    )
    session.execute(delete(IndexSegment).where(IndexSegment.model_id == model_id))
    export = session.get(ModelExport, model_id)
    if export is not None:
        paths += [export.path] if export.path else []
        session.delete(export)
    session.execute(delete(Change).where(Change.model_id == model_id))
    session.execute(delete(Embedding).where(Embedding.model_id == model_id))
    session.execute(delete(EmbeddingModel).where(EmbeddingModel.id == model_id))
    return paths


def has_vector_for_content(session: Session, content_hash: str, model_id: int) -> bool:
    """Whether some image with this content (sha256) has a vector of the model (two index
    lookups: ``images.content_hash``, then the embeddings' key)."""
    query = (
        select(Image.id)
        .join(Embedding, Embedding.image_id == Image.id)
        .where(Image.content_hash == content_hash, Embedding.model_id == model_id)
        .limit(1)
    )
    return session.execute(query).first() is not None


def hashes_with_vectors(session: Session, model_id: int) -> set[str]:
    query = (
        select(Image.content_hash)
        .join(Embedding, Embedding.image_id == Image.id)
        .where(Embedding.model_id == model_id, Image.content_hash.is_not(None))
        .distinct()
    )
    return set(session.scalars(query))


def image_identities(session: Session, ids: Sequence[int]) -> dict[int, tuple[str, str | None]]:
    """image id -> (path, content hash)."""
    found: dict[int, tuple[str, str | None]] = {}
    for start in range(0, len(ids), 500):
        query = select(Image.id, Image.path, Image.content_hash).where(
            Image.id.in_(ids[start : start + 500])
        )
        found.update({i: (p, h) for i, p, h in session.execute(query)})
    return found


def readable_images(session: Session) -> list[tuple[int, str, str | None]]:
    """(id, path, content hash) of every image that could be read."""
    query = select(Image.id, Image.path, Image.content_hash).where(Image.error.is_(None))
    return [(i, p, h) for i, p, h in session.execute(query)]


def images_with_hash(session: Session, content_hash: str, model_id: int) -> list[Image]:
    """Readable images with this content that have a vector for the model, oldest first."""
    query = (
        select(Image)
        .join(Embedding, Embedding.image_id == Image.id)
        .where(Image.content_hash == content_hash, Embedding.model_id == model_id)
        .order_by(Image.id)
    )
    return list(session.scalars(query))


def vector_for_content(
    session: Session, content_hash: str, model_id: int
) -> tuple[Image | None, bytes | None]:
    """THE reuse of a stored vector for identical content: the oldest readable image with this
    content that has a vector for the model, and that vector; ``(None, None)`` when none has."""
    rows = images_with_hash(session, content_hash, model_id)
    if not rows:
        return None, None
    return rows[0], stored_vector(session, rows[0].id, model_id)


def delete_images(session: Session, ids: Sequence[int]) -> int:
    removed = 0
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        _drop_vectors(session, Embedding.image_id.in_(chunk))
        removed += session.execute(delete(Image).where(Image.id.in_(chunk))).rowcount or 0
    return removed


def paths_of(session: Session, ids: Iterable[int]) -> dict[int, str]:
    ids = list(ids)
    if not ids:
        return {}
    return dict(session.execute(select(Image.id, Image.path).where(Image.id.in_(ids))).all())


def image_by_path(session: Session, path: str) -> Image | None:
    return session.scalars(select(Image).where(Image.path == path)).one_or_none()


def images_without_metadata(session: Session) -> list[tuple[int, str]]:
    query = select(Image.id, Image.path).where(Image.error.is_(None), Image.metadata_at.is_(None))
    return [(image_id, path) for image_id, path in session.execute(query.order_by(Image.id))]


def set_metadata(session: Session, image_id: int, **columns: Any) -> None:
    session.execute(
        update(Image).where(Image.id == image_id).values(metadata_at=utcnow(), **columns)
    )


def failures(session: Session, limit: int | None = None) -> list[tuple[str, str]]:
    query = select(Image.path, Image.error).where(Image.error.is_not(None)).order_by(Image.path)
    return [(path, error) for path, error in session.execute(query.limit(limit))]


def count_images(session: Session) -> tuple[int, int]:
    """(readable images, files that could not be read)."""
    ok = session.scalar(select(func.count()).where(Image.error.is_(None))) or 0
    bad = session.scalar(select(func.count()).where(Image.error.is_not(None))) or 0
    return ok, bad


# --- embeddings ----------------------------------------------------------------------------------


def vector_to_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def put_vector(session: Session, image_id: int, model_id: int, vector: bytes) -> None:
    row = session.get(Embedding, (image_id, model_id))
    if row is None:
        session.add(Embedding(image_id=image_id, model_id=model_id, vector=vector))
        _count_vectors(session, model_id, 1)
    else:
        row.vector = vector
    session.add(Change(model_id=model_id, image_id=image_id))


def drop_vectors(session: Session, image_id: int) -> None:
    _drop_vectors(session, Embedding.image_id == image_id)


def _drop_vectors(session: Session, where: ColumnElement[bool]) -> None:
    """Delete vectors, logging a change for each (so indexes drop them too)."""
    dropped = session.execute(select(Embedding.model_id, Embedding.image_id).where(where)).all()
    if dropped:
        session.execute(insert(Change), [{"model_id": m, "image_id": i} for m, i in dropped])
        session.execute(delete(Embedding).where(where))
        for model_id, n in Counter(m for m, _ in dropped).items():
            _count_vectors(session, model_id, -n)


_PENDING_COUNTS = "imgvec.vector_counts"


def _count_vectors(session: Session, model_id: int, change: int) -> None:
    """Note a change of a model's vector count; :func:`write_vector_counts` writes it to
    ``models.vector_count`` when the transaction commits (one UPDATE per model, not one per
    vector: that doubled the cost of writing 1,000 vectors)."""
    session.info.setdefault(_PENDING_COUNTS, Counter())[model_id] += change


def write_vector_counts(session: Session) -> None:
    """Before a commit (a ``before_commit`` listener of the library's sessions): the noted
    count changes, in the same transaction."""
    for model_id, change in session.info.pop(_PENDING_COUNTS, Counter()).items():
        if change:
            session.execute(
                update(EmbeddingModel)
                .where(EmbeddingModel.id == model_id)
                .values(vector_count=EmbeddingModel.vector_count + change)
                .execution_options(synchronize_session=False)
            )


def forget_vector_counts(session: Session, *_: object) -> None:
    """After a rollback (an ``after_rollback`` listener): the noted changes never happened."""
    session.info.pop(_PENDING_COUNTS, None)


def sessions(engine: Engine) -> sessionmaker[Session]:
    """THE session factory of a library: objects stay readable after a commit, and the vector
    counts noted by this module's writes are written with each commit."""
    factory = sessionmaker(engine, expire_on_commit=False)
    event.listen(factory, "before_commit", write_vector_counts)
    event.listen(factory, "after_rollback", forget_vector_counts)
    return factory


def stored_vector(session: Session, image_id: int, model_id: int) -> bytes | None:
    return session.scalar(
        select(Embedding.vector).where(
            Embedding.image_id == image_id, Embedding.model_id == model_id
        )
    )


def vector_ids(session: Session, model_id: int) -> list[int]:
    return list(session.scalars(select(Embedding.image_id).where(Embedding.model_id == model_id)))


def vector_counts(session: Session) -> tuple[int, dict[int, int]]:
    """(readable images, stored vectors by model id), read by ONE statement: each statement sees
    one snapshot, so the counts agree while a writer commits images with their vectors (two
    statements could count a batch's vectors but not its images)."""
    images = select(func.count()).select_from(Image).where(Image.error.is_(None)).scalar_subquery()
    rows = session.execute(
        select(images, EmbeddingModel.id, EmbeddingModel.vector_count).where(
            EmbeddingModel.vector_count > 0
        )
    ).all()
    if not rows:
        return count_images(session)[0], {}
    return int(rows[0][0]), {int(model_id): int(n) for _, model_id, n in rows}


def count_vectors(session: Session, model_id: int) -> int:
    """The model's stored vectors: one row read (``models.vector_count``), not a count."""
    return (
        session.scalar(select(EmbeddingModel.vector_count).where(EmbeddingModel.id == model_id))
        or 0
    )


def iter_vectors(
    session: Session, model_id: int, dim: int, chunk: int = 10_000
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, vectors) of every stored vector of the model, in chunks, by image id."""
    last_id = -1
    while True:
        rows = session.execute(
            select(Embedding.image_id, Embedding.vector)
            .where(Embedding.model_id == model_id, Embedding.image_id > last_id)
            .order_by(Embedding.image_id)
            .limit(chunk)
        ).all()
        if not rows:
            return
        ids, vectors = _unpack(rows, dim)
        yield ids, vectors
        last_id = int(ids[-1])


def all_vectors(session: Session, model_id: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    chunks = list(iter_vectors(session, model_id, dim))
    if not chunks:
        return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
    return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])


def vectors_of(
    session: Session, model_id: int, dim: int, image_ids: Iterable[int]
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of those images that have a vector for the model, by image id."""
    wanted = sorted(set(image_ids))
    rows: list[Any] = []
    for start in range(0, len(wanted), 500):
        rows += session.execute(
            select(Embedding.image_id, Embedding.vector).where(
                Embedding.model_id == model_id,
                Embedding.image_id.in_(wanted[start : start + 500]),
            )
        ).all()
    rows.sort(key=lambda row: row[0])
    return _unpack(rows, dim)


def vector_lookup(
    sessions: sessionmaker[Session], model_id: int, dim: int
) -> Callable[[np.ndarray], np.ndarray]:
    """Stored vectors by image id (int64 (n,) -> float32 (n, dim)), for exact re-ranking of
    compressed-index candidates; an id removed meanwhile gets a zero vector (ranks last)."""

    def lookup(ids: np.ndarray) -> np.ndarray:
        with sessions() as session:
            found_ids, found = vectors_of(session, model_id, dim, ids.tolist())
        position = {int(i): p for p, i in enumerate(found_ids)}
        zero = np.zeros(dim, np.float32)
        return np.stack([found[position[int(i)]] if int(i) in position else zero for i in ids])

    return lookup


def _unpack(rows: Sequence[Any], dim: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype="<f4").reshape(-1, dim)
    return ids, vectors


# --- the change log ------------------------------------------------------------------------------


def last_change(session: Session, model_id: int) -> int:
    """The newest change seq of the model's vectors (0 when none)."""
    return session.scalar(select(func.max(Change.seq)).where(Change.model_id == model_id)) or 0


def changed_since(session: Session, model_id: int, seq: int) -> dict[int, int]:
    """image id -> its latest change seq, for the model's changes after ``seq``."""
    query = (
        select(Change.image_id, func.max(Change.seq))
        .where(Change.model_id == model_id, Change.seq > seq)
        .group_by(Change.image_id)
    )
    return {image_id: last for image_id, last in session.execute(query)}


def prune_changes(session: Session, model_id: int, before_seq: int) -> int:
    """Forget changes no kept index version needs: those before ``before_seq``. The row at
    ``before_seq`` stays, so :func:`last_change` never goes back."""
    result = session.execute(
        delete(Change).where(Change.model_id == model_id, Change.seq < before_seq)
    )
    return result.rowcount or 0


# --- index versions and segments -----------------------------------------------------------------


def active_version(session: Session, model_id: int) -> IndexVersion | None:
    return session.scalars(
        select(IndexVersion).where(
            IndexVersion.model_id == model_id, IndexVersion.status == "active"
        )
    ).one_or_none()


def versions(session: Session, model_id: int) -> list[IndexVersion]:
    return list(
        session.scalars(
            select(IndexVersion)
            .where(IndexVersion.model_id == model_id)
            .order_by(IndexVersion.id.desc())
        )
    )


def segments_of(session: Session, version_id: int) -> list[IndexSegment]:
    return list(
        session.scalars(
            select(IndexSegment)
            .join(IndexVersionSegment, IndexVersionSegment.segment_id == IndexSegment.id)
            .where(IndexVersionSegment.version_id == version_id)
            .order_by(IndexVersionSegment.position)
        )
    )


def add_segment(session: Session, **fields: Any) -> IndexSegment:
    segment = IndexSegment(**fields)
    session.add(segment)
    session.flush()
    return segment


def add_version(
    session: Session,
    segments: Sequence[IndexSegment],
    params: dict[str, Any],
    activate: bool = True,
    **fields: Any,
) -> IndexVersion:
    """Record a version made of ``segments`` and (with ``activate``) make it the model's
    active one; otherwise it is recorded retired (``imgvec index move`` activates it)."""
    segments = [session.merge(s) for s in segments]
    row = IndexVersion(params=json.dumps(params, sort_keys=True), status="retired", **fields)
    session.add(row)
    session.flush()
    for position, segment in enumerate(segments):
        session.add(
            IndexVersionSegment(version_id=row.id, segment_id=segment.id, position=position)
        )
    if activate:
        activate_version(session, row)
    session.flush()
    return row


def activate_version(session: Session, target: IndexVersion) -> None:
    session.execute(
        update(IndexVersion)
        .where(
            IndexVersion.model_id == target.model_id,
            IndexVersion.status == "active",
            IndexVersion.id != target.id,
        )
        .values(status="retired")
    )
    target.status = "active"


def delete_versions(session: Session, ids: Sequence[int]) -> None:
    if ids:
        session.execute(delete(IndexVersionSegment).where(IndexVersionSegment.version_id.in_(ids)))
        session.execute(delete(IndexVersion).where(IndexVersion.id.in_(ids)))


def unreferenced_segments(session: Session) -> list[IndexSegment]:
    used = select(IndexVersionSegment.segment_id)
    return list(session.scalars(select(IndexSegment).where(IndexSegment.id.not_in(used))))


def delete_segments(session: Session, segments: Sequence[IndexSegment]) -> None:
    for segment in segments:
        session.delete(segment)


def version(session: Session, version_id: int) -> IndexVersion | None:
    return session.get(IndexVersion, version_id)


def segment_paths(session: Session) -> set[str]:
    return set(session.scalars(select(IndexSegment.path)))


def has_versions(session: Session) -> bool:
    """Whether any model has an index version (built, or kept retired)."""
    return session.scalars(select(IndexVersion.id).limit(1)).first() is not None


def set_version_seq(session: Session, version_id: int, seq: int, n_vectors: int) -> None:
    """Move a version that is updated in place (a Milvus collection) to change ``seq``."""
    session.execute(
        update(IndexVersion)
        .where(IndexVersion.id == version_id)
        .values(change_seq=seq, n_vectors=n_vectors)
    )


def collections(session: Session) -> set[str]:
    """The Milvus collections that index versions name (``params["collection"]``)."""
    rows = session.scalars(select(IndexVersion.params).where(IndexVersion.kind == "milvus"))
    return {json.loads(p)["collection"] for p in rows}


# --- where the indexes live ----------------------------------------------------------------------


def vector_store(session: Session) -> str | None:
    """The URL of the library's Milvus store, or None for FAISS files (the default)."""
    row = session.get(LibraryState, STATE_ID)
    return None if row is None else row.vectors


def set_vector_store(session: Session, url: str | None) -> None:
    """Record the library's Milvus store (None: FAISS files), and name the library."""
    state(session).vectors = url
    name_library(session)


def name_library(session: Session) -> str:
    """Give the library its random name if it has none yet (the caller commits); the name."""
    row = state(session)
    if row.library_id is None:
        row.library_id = uuid.uuid4().hex[:12]
    return row.library_id


def library_id(session: Session) -> str | None:
    """This library's random name (given with its Milvus store)."""
    row = session.get(LibraryState, STATE_ID)
    return None if row is None else row.library_id


# --- model exports -------------------------------------------------------------------------------


def model_export(session: Session, model_id: int) -> ModelExport | None:
    return session.get(ModelExport, model_id)


def model_exports(session: Session) -> dict[int, ModelExport]:
    return {e.model_id: e for e in session.scalars(select(ModelExport))}


def set_model_export(session: Session, model_id: int, **fields: Any) -> str | None:
    """Record the model's export (replacing the one before); returns the file it replaced."""
    previous = session.get(ModelExport, model_id)
    old = None if previous is None else previous.path
    if previous is not None:
        session.delete(previous)
        session.flush()
    session.add(ModelExport(model_id=model_id, **fields))
    return old


def export_paths(session: Session) -> set[str]:
    return {p for p in session.scalars(select(ModelExport.path)) if p is not None}


# --- duplicates ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DupeFacts:
    """What ``dupes`` weighs of an image: the keep rule's facts and the pixel fingerprint."""

    id: int
    path: str
    content_hash: str | None
    width: int | None
    height: int | None
    size: int
    mtime_ns: int
    taken_at: datetime | None
    exif_fields: int
    """How many EXIF columns are set (taken time, camera, lens, orientation, GPS)."""
    phash: int | None


_EXIF = ("taken_at", "camera_make", "camera_model", "lens", "orientation", "gps_lat", "gps_lon")


def dupe_facts(session: Session, ids: Iterable[int]) -> dict[int, DupeFacts]:
    """image id -> :class:`DupeFacts`, for those of ``ids`` that are readable."""
    wanted = sorted(set(ids))
    exif = [getattr(Image, name) for name in _EXIF]
    found: dict[int, DupeFacts] = {}
    for start in range(0, len(wanted), 500):
        query = select(
            Image.id,
            Image.path,
            Image.content_hash,
            Image.width,
            Image.height,
            Image.size,
            Image.mtime_ns,
            Image.taken_at,
            Image.phash,
            *exif,
        ).where(Image.id.in_(wanted[start : start + 500]), Image.error.is_(None))
        for row in session.execute(query):
            count = sum(value is not None for value in row[9:])
            found[row[0]] = DupeFacts(*row[:8], exif_fields=count, phash=row[8])
    return found


def set_phash(session: Session, image_id: int, value: int) -> None:
    session.execute(update(Image).where(Image.id == image_id).values(phash=value))


def same_content(
    session: Session, model_id: int, among: Iterable[int] | None = None
) -> list[list[int]]:
    """Images with a vector of the model that share their content hash with another: the ids
    of each such content, by id (exact copies; the content hash column is indexed). With
    ``among``, only the contents of those images (``dupes --new``: the cost of the change)."""
    with_vector = select(Embedding.image_id).where(Embedding.model_id == model_id)
    known = Image.content_hash.is_not(None)
    if among is None:
        query = select(Image.content_hash).where(Image.id.in_(with_vector), known)
        contents = list(
            session.scalars(query.group_by(Image.content_hash).having(func.count() > 1))
        )
    else:
        contents = sorted(
            {
                content
                for chunk in _chunks(sorted(set(among)))
                for content in session.scalars(
                    select(Image.content_hash).where(Image.id.in_(chunk), known)
                )
            }
        )
    groups: dict[str, list[int]] = {}
    for chunk in _chunks(contents):
        rows = session.execute(
            select(Image.content_hash, Image.id)
            .where(Image.content_hash.in_(chunk), Image.id.in_(with_vector))
            .order_by(Image.id)
        )
        for content, image_id in rows:
            groups.setdefault(content, []).append(image_id)
    return [ids for ids in groups.values() if len(ids) > 1]


def _chunks(items: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    """``items`` in slices of ``size`` (an IN list stays within every database's limits)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def moved_aside(session: Session) -> set[int]:
    """Images that ``dupes --move-to`` moved aside (or is moving): left out of ``dupes``."""
    query = select(DupeMove.image_id).where(DupeMove.state.in_(("moving", "moved")))
    return set(session.scalars(query))


def last_move_run(session: Session, state: str | None = None) -> int:
    """The newest ``--move-to`` run (with ``state``: the newest with a move in that state)."""
    query = select(func.max(DupeMove.run))
    if state is not None:
        query = query.where(DupeMove.state == state)
    return session.scalar(query) or 0


def record_move(
    session: Session, run: int, image_id: int, keeper_id: int, from_path: str, to_path: str
) -> DupeMove:
    """A move about to happen (state ``moving``): flushed, so its id is known."""
    move = DupeMove(
        run=run,
        image_id=image_id,
        keeper_id=keeper_id,
        from_path=from_path,
        to_path=to_path,
        state="moving",
    )
    session.add(move)
    session.flush()
    return move


def moves(session: Session, states: Sequence[str], run: int | None = None) -> list[DupeMove]:
    """Recorded moves in these states (of one run, or all), newest first."""
    query = select(DupeMove).where(DupeMove.state.in_(states))
    if run is not None:
        query = query.where(DupeMove.run == run)
    return list(session.scalars(query.order_by(DupeMove.id.desc())))


def settle_move(session: Session, move_id: int, state: str, image_path: str | None) -> None:
    """A move's new state, and the image's path where its file now is (None: unchanged)."""
    move = session.get(DupeMove, move_id)
    assert move is not None
    move.state = state
    if image_path is not None:
        session.execute(
            update(Image)
            .where(Image.id == move.image_id)
            .values(path=image_path, folder=os.path.dirname(image_path))
        )
