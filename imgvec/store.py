"""Every query the library makes, in one place. Functions take a Session and never commit."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, delete, func, or_, select, update
from sqlalchemy.orm import Session

from imgvec.schema import Embedding, EmbeddingModel, Image, IndexArtifact, LibraryState

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
        row = LibraryState(id=STATE_ID, generation=0)
        session.add(row)
        session.flush()
    return row


def bump_generation(session: Session) -> None:
    state(session)
    session.execute(
        update(LibraryState)
        .where(LibraryState.id == STATE_ID)
        .values(generation=LibraryState.generation + 1)
    )


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


def models(session: Session) -> list[EmbeddingModel]:
    return list(session.scalars(select(EmbeddingModel).order_by(EmbeddingModel.id)))


def set_active_model(session: Session, model: EmbeddingModel) -> None:
    state(session).active_model_id = model.id


# --- images --------------------------------------------------------------------------------------


def _under(paths: Iterable[str]) -> ColumnElement[bool]:
    """Rows at these paths or inside these folders (substr: SQLite's LIKE ignores case)."""
    clauses: list[ColumnElement[bool]] = []
    for path in paths:
        prefix = path.rstrip("/") + "/"
        clauses.append(Image.path == path)
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
        .where(_under(roots))
    )
    return {row.path: KnownImage(*row) for row in session.execute(query)}


def image_ids_under(session: Session, paths: Sequence[str]) -> list[int]:
    return list(session.scalars(select(Image.id).where(_under(paths))))


def hashes_with_vectors(session: Session, model_id: int) -> set[str]:
    query = (
        select(Image.content_hash)
        .join(Embedding, Embedding.image_id == Image.id)
        .where(Embedding.model_id == model_id, Image.content_hash.is_not(None))
        .distinct()
    )
    return set(session.scalars(query))


def images_with_hash(session: Session, content_hash: str, model_id: int) -> list[Image]:
    """Readable images with this content that have a vector for the model, oldest first."""
    query = (
        select(Image)
        .join(Embedding, Embedding.image_id == Image.id)
        .where(Image.content_hash == content_hash, Embedding.model_id == model_id)
        .order_by(Image.id)
    )
    return list(session.scalars(query))


def delete_images(session: Session, ids: Sequence[int]) -> int:
    removed = 0
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        session.execute(delete(Embedding).where(Embedding.image_id.in_(chunk)))
        removed += session.execute(delete(Image).where(Image.id.in_(chunk))).rowcount or 0
    return removed


def paths_of(session: Session, ids: Iterable[int]) -> dict[int, str]:
    ids = list(ids)
    if not ids:
        return {}
    return dict(session.execute(select(Image.id, Image.path).where(Image.id.in_(ids))).all())


def image_by_path(session: Session, path: str) -> Image | None:
    return session.scalars(select(Image).where(Image.path == path)).one_or_none()


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


def bytes_to_vector(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4")


def put_vector(session: Session, image_id: int, model_id: int, vector: bytes) -> None:
    row = session.get(Embedding, (image_id, model_id))
    if row is None:
        session.add(Embedding(image_id=image_id, model_id=model_id, vector=vector))
    else:
        row.vector = vector


def drop_vectors(session: Session, image_id: int) -> None:
    session.execute(delete(Embedding).where(Embedding.image_id == image_id))


def stored_vector(session: Session, image_id: int, model_id: int) -> bytes | None:
    return session.scalar(
        select(Embedding.vector).where(
            Embedding.image_id == image_id, Embedding.model_id == model_id
        )
    )


def count_vectors(session: Session, model_id: int) -> int:
    return session.scalar(select(func.count()).where(Embedding.model_id == model_id)) or 0


def iter_vectors(
    session: Session, model_id: int, dim: int, chunk: int = 10_000
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, vectors) of every readable image's vector for the model, in chunks, by image id."""
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
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype="<f4").reshape(-1, dim)
        yield ids, vectors
        last_id = int(ids[-1])


# --- index artifacts -----------------------------------------------------------------------------


def active_artifact(session: Session, model_id: int) -> IndexArtifact | None:
    return session.scalars(
        select(IndexArtifact)
        .where(IndexArtifact.model_id == model_id, IndexArtifact.status == "active")
        .order_by(IndexArtifact.id.desc())
    ).first()


def record_artifact(
    session: Session,
    model_id: int,
    kind: str,
    params: dict[str, Any],
    n_vectors: int,
    generation: int,
    path: str,
    sha256: str,
    size_bytes: int,
) -> IndexArtifact:
    """Add an artifact and make it the model's active one (the others are retired)."""
    session.execute(
        update(IndexArtifact)
        .where(IndexArtifact.model_id == model_id, IndexArtifact.status == "active")
        .values(status="retired")
    )
    artifact = IndexArtifact(
        model_id=model_id,
        kind=kind,
        params=json.dumps(params, sort_keys=True),
        n_vectors=n_vectors,
        generation=generation,
        path=path,
        sha256=sha256,
        size_bytes=size_bytes,
        status="active",
    )
    session.add(artifact)
    session.flush()
    return artifact


def retired_artifacts(session: Session) -> list[IndexArtifact]:
    return list(session.scalars(select(IndexArtifact).where(IndexArtifact.status == "retired")))


def artifact_paths(session: Session) -> set[str]:
    return set(session.scalars(select(IndexArtifact.path)))
