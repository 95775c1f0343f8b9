"""``imgvec query``: for each query image, the k most similar library images, best first.

A query image that is in the library, unchanged on disk, is answered from its stored vector (no
model runs); the others are embedded in batches (:func:`imgvec.embed.batches.embedded_batches`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
from sqlalchemy import Engine

from imgvec import scan
from imgvec.config import DEFAULT_BATCH_SIZE
from imgvec.embed.batches import Loaded, embedded_batches, load_file
from imgvec.errors import ImgvecError, LibraryLocked, storage_problem
from imgvec.index.search import filtered_search
from imgvec.ops.cold_query import capped, hits, stored_vector
from imgvec.ops.parts import Parts
from imgvec.storage import store
from imgvec.storage.schema import EmbeddingModel, IndexVersion
from imgvec.types import QueryHit, QueryResult


def combine(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """THE combination of a query's parts (an image's vector, each text's): each L2-normalised,
    summed with equal weight, the sum L2-normalised. (dim,) float32. An image and one text pull
    equally; two texts pull twice as hard as the image."""
    total = np.zeros_like(vectors[0], dtype=np.float32)
    for vector in vectors:
        total += vector / max(float(np.linalg.norm(vector)), 1e-12)
    return total / max(float(np.linalg.norm(total)), 1e-12)


LABEL_CHARS = 80
"""Characters of each text in a result's name (the model reads 77 tokens at most anyway)."""


def text_label(texts: Sequence[str]) -> str:
    """How a query by words is named in its result: ``text: "a" + "b"`` (JSON strings, each
    cut to :data:`LABEL_CHARS` characters)."""
    cut = [t if len(t) <= LABEL_CHARS else t[: LABEL_CHARS - 1] + "…" for t in texts]
    return "text: " + " + ".join(json.dumps(t, ensure_ascii=False) for t in cut)


def query(
    parts: Parts,
    engine: Engine,
    model: EmbeddingModel,
    images: Sequence[str | os.PathLike[str]],
    k: int,
    where: str | None,
    version_of: Callable[[EmbeddingModel], IndexVersion],
    words: tuple[Sequence[str], np.ndarray] | None = None,
) -> list[QueryResult]:
    """One :class:`QueryResult` per image, in order; a file that cannot be read gets its error.

    ``words``: texts and their vectors ((N, dim) float32): each image's vector is combined with
    them (:func:`combine`); without images, one result answers the words alone.
    ``version_of(model)`` gives the index version to search (the caller decides whether it may
    catch the index up first). Raises ImgvecError for k < 1 or a bad ``where``.
    """
    if k < 1:
        raise ImgvecError("k must be at least 1")
    results = [QueryResult(scan.normalize(image)) for image in images]
    vectors: dict[int, np.ndarray] = {}
    for position, result in enumerate(results):
        stored = _stored_vector(parts, result.query, model)
        if stored is not None:
            vectors[position] = stored
            result.vector_source = "stored"
    missing = [p for p in range(len(results)) if p not in vectors]
    vectors.update(_embed(parts, model, results, missing))
    if words is not None:
        texts, text_vectors = words
        vectors = {p: combine([v, *text_vectors]) for p, v in vectors.items()}
        if not results:
            results = [QueryResult(text_label(texts), vector_source="text")]
            vectors = {0: combine(list(text_vectors))}
    if not vectors:
        return results
    order = sorted(vectors)
    found = search(
        parts, engine, model, np.stack([vectors[p] for p in order]), k, where, version_of
    )
    for position, (found_hits, plan) in zip(order, found, strict=True):
        results[position].hits, results[position].filter = found_hits, plan
    return results


def search(
    parts: Parts,
    engine: Engine,
    model: EmbeddingModel,
    queries: np.ndarray,
    k: int,
    where: str | None,
    version_of: Callable[[EmbeddingModel], IndexVersion],
) -> list[tuple[list[QueryHit], dict[str, Any] | None]]:
    """For each query vector (``queries``: (Q, dim) float32, L2-normalised), its k best hits and,
    with ``where``, the filter plan; hits whose image was removed meanwhile are left out."""
    stopwatch = parts.models.stopwatch
    plan = None
    k = capped(k, model.vector_count)
    if where is None:
        version = version_of(model)
        index = parts.indexes.of(model)
        with stopwatch("index load"):
            index.load(version)
        with stopwatch("search"):
            lookup = store.vector_lookup(parts.sessions, model.id, model.dim)
            scores, ids = index.search(version, queries, k, lookup)
    else:
        scores, ids, plan = filtered_search(
            engine,
            parts.sessions,
            model,
            queries,
            k,
            where,
            lambda: (parts.indexes.of(model), version_of(model)),
        )
    with parts.sessions() as session:
        paths = store.paths_of(session, {int(i) for i in ids.ravel() if i >= 0})
    return [(hits(scores[row], ids[row], paths), plan) for row in range(len(queries))]


def _embed(
    parts: Parts, model: EmbeddingModel, results: list[QueryResult], positions: list[int]
) -> dict[int, np.ndarray]:
    """Vectors of the query files at ``positions``; a file that cannot be read gets its error
    and no vector."""
    if not positions:
        return {}
    prepare = parts.models.preparer(model)

    def load(position: int) -> tuple[int, Loaded]:
        return position, load_file(results[position].query, prepare)

    vectors: dict[int, np.ndarray] = {}
    batches = embedded_batches(
        positions,
        load,
        lambda item: item[1],
        lambda batch: parts.models.embed(model, batch),
        DEFAULT_BATCH_SIZE,
    )
    for batch, embedded in batches:
        for position, loaded in batch:
            if loaded.error is not None:
                results[position].error = loaded.error
                parts.fail([], results[position].query, loaded.error)
            else:
                assert loaded.content_hash is not None
                vectors[position] = embedded[loaded.content_hash]
    return vectors


def _stored_vector(parts: Parts, path: str, model: EmbeddingModel) -> np.ndarray | None:
    """The stored vector of a query image that is in the library and unchanged on disk."""
    with parts.sessions() as session:
        return stored_vector(
            path,
            lambda p: store.image_by_path(session, p),
            lambda i: store.stored_vector(session, i, model.id),
        )


def version_to_search(
    parts: Parts,
    model: EmbeddingModel,
    writing: Callable[[], AbstractContextManager[None]],
    read_only_reason: str | None = None,
) -> IndexVersion:
    """The index version to search: caught up first (under ``writing()``, the write lock),
    unless another process holds the lock, the library is read-only here (``read_only_reason``)
    or the storage refuses writes; then the active version as it is, with a notice. Raises
    ImgvecError when there is no usable version at all.
    """
    index = parts.indexes.of(model)
    version, _ = index.active()
    if version is not None and parts.indexes.is_current(model):
        return version
    if read_only_reason is not None:
        why = read_only_reason
        if version is None or not index.intact(version):
            raise ImgvecError(f"the library has no usable index, and it cannot be built ({why})")
        parts.reporter.notice(
            f"The index cannot be brought up to date ({why}): searching version "
            f"{version.id}; removals show, the newest additions do not"
        )
        return version
    try:
        with writing():
            return index.update()
    except LibraryLocked:
        if version is None:
            raise ImgvecError(
                "the index is being built by another imgvec process; try again when it has finished"
            ) from None
        parts.reporter.notice(
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
        parts.reporter.notice(
            f"The index cannot be brought up to date ({problem}): searching version "
            f"{version.id}; removals show, the newest additions do not"
        )
        return version
