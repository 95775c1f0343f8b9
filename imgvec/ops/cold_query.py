"""``imgvec query`` from a cold start, answered without SQLAlchemy where nothing needs writing.

A fresh ``imgvec query PHOTO`` pays for every import before its answer, and SQLAlchemy's alone
is about a third of a one-photo query (BENCHMARKS.md, "A cold query"). So when the library is
its default SQLite file with a current schema, its index is FAISS files that cover every change,
and each query image is either in the library unchanged (its stored vector) or can be embedded
by the model's ONNX export, :func:`answer` answers from one :class:`Snapshot` of the database,
with the pieces the ordinary path uses (:func:`imgvec.embed.batches.embedded_batches`,
:func:`imgvec.embed.loader.open_export`, :func:`imgvec.index.faiss_ops.tombstones`,
:func:`imgvec.index.faiss_ops.search`). Anything else (an index to catch up, an export to make,
a photo that cannot be read, PostgreSQL, Milvus, ``--where``, words) returns None, and the caller
takes :meth:`imgvec.api.Library.query`, which does those steps and gives the same answer.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from imgvec import scan
from imgvec.config import DB_FILENAME, DEFAULT_BATCH_SIZE, LibraryPaths
from imgvec.reporting import Stopwatch
from imgvec.storage.snapshot import ModelRecord, Snapshot, bytes_to_vector, newest_revision
from imgvec.types import ModelInfo, QueryHit, QueryResult


class ImageRow(Protocol):
    """What an ``images`` row has for :func:`stored_vector` (the ORM row, or a snapshot's)."""

    id: int
    size: int
    mtime_ns: int
    error: str | None


class NotHere(Exception):
    """This query needs the ordinary path (a step that writes, or that reports a failure)."""


def answer(
    paths: LibraryPaths,
    images: Sequence[str],
    k: int,
    notice: Callable[[str], None],
    stopwatch: Stopwatch,
) -> list[QueryResult] | None:
    """One :class:`QueryResult` per image, in order, as :meth:`imgvec.api.Library.query` gives
    them (``k`` best hits, cosine scores, best first), or None when this query needs the
    ordinary path. ``notice`` gets the notices the ordinary path gives (the model loading);
    ``stopwatch`` the stages ``query --timings`` shows. Raises nothing but KeyboardInterrupt:
    a database, file or model it cannot read also means None."""
    database = paths.root / DB_FILENAME
    if not images or k < 1 or not paths.uses_default_sqlite or not database.is_file():
        return None
    queries = [scan.normalize(os.path.expanduser(image)) for image in images]
    try:
        with stopwatch("snapshot"):
            snapshot = Snapshot(database)
        with snapshot:
            return _answer(paths.root, snapshot, queries, k, notice, stopwatch)
    except Exception:  # whatever the quick path cannot do, the ordinary one does, or reports
        return None  # in one line (tests/test_cold_query.py checks the quick path does answer)


def _answer(
    root: Path,
    snapshot: Snapshot,
    queries: list[str],
    k: int,
    notice: Callable[[str], None],
    stopwatch: Stopwatch,
) -> list[QueryResult]:
    if snapshot.revision() != newest_revision():
        raise NotHere  # the ordinary path upgrades it, or says why not
    model_id, vector_store = snapshot.state()
    model = None if model_id is None else snapshot.model(model_id)
    if model is None or vector_store is not None:
        raise NotHere
    version = snapshot.active_version(model.id)
    # imgvec.index.artifacts.is_current, read here: a version of FAISS files covering every
    # change, all of them at their recorded sizes.
    if version is None or version.change_seq != snapshot.last_change(model.id):
        raise NotHere
    segments = snapshot.segments(version.id)
    if not segments or any(_size(root / s.path) != s.size_bytes for s in segments):
        raise NotHere
    results = [QueryResult(query) for query in queries]
    vectors: dict[int, np.ndarray] = {}
    for position, result in enumerate(results):
        stored = stored_vector(result.query, snapshot.image, lambda i: snapshot.vector(i, model.id))
        if stored is not None:
            vectors[position] = stored
            result.vector_source = "stored"
    missing = [p for p in range(len(results)) if p not in vectors]
    if missing:
        vectors.update(_embed(root, snapshot, model, queries, missing, notice, stopwatch))

    with stopwatch("import faiss"):
        from imgvec.index import faiss_ops
    with stopwatch("index load"):
        if version.kind not in faiss_ops.KINDS:
            raise NotHere
        changed = snapshot.changed_since(model.id, min(s.created_seq for s in segments))
        loaded = []
        for segment in segments:
            kind = version.kind if segment.role == "base" else "flat"
            index = faiss_ops.load(root / segment.path, kind)
            dead = faiss_ops.tombstones(
                changed,
                segment.created_seq,
                lambda index=index: np.sort(faiss_ops.stored_ids(index)),  # type: ignore[misc]
            )
            loaded.append(faiss_ops.Segment(index, kind, json.loads(version.params), dead))
    order = sorted(vectors)
    with stopwatch("search"):

        def lookup(ids: np.ndarray) -> np.ndarray:  # store.vector_lookup's rule
            found = snapshot.vectors(model.id, [int(i) for i in ids])
            zero = np.zeros(model.dim, np.float32)
            return np.stack(
                [bytes_to_vector(found[int(i)]) if int(i) in found else zero for i in ids]
            )

        queries_ = np.stack([vectors[p] for p in order])
        scores, ids = faiss_ops.search(loaded, queries_, capped(k, model.vector_count), lookup)
    found = snapshot.paths(sorted({int(i) for i in ids.ravel() if i >= 0}))
    for row, position in enumerate(order):
        results[position].hits = hits(scores[row], ids[row], found)
    return results


def _embed(
    root: Path,
    snapshot: Snapshot,
    model: ModelRecord,
    queries: list[str],
    positions: list[int],
    notice: Callable[[str], None],
    stopwatch: Stopwatch,
) -> dict[int, np.ndarray]:
    """The vectors of the query files at ``positions``, by the model's ONNX export, as
    :func:`imgvec.ops.query._embed` makes them. Raises NotHere for a file that cannot be read
    (the ordinary path reports it) or an export that is missing or damaged (it is made again)."""
    # Imported here: a query answered from stored vectors needs neither Pillow nor the models.
    from imgvec.embed import exports
    from imgvec.embed.batches import Loaded, embedded_batches, load_file
    from imgvec.embed.loader import open_export
    from imgvec.embed.pixels import prepare
    from imgvec.embed.registry import get_spec

    stored = exports.read(root, snapshot.export(model.id), verify=False)
    if stored.source is None:
        raise NotHere
    prep = functools.partial(prepare, prep=get_spec(model.name).preprocess)
    runner = None

    def embed(batch: np.ndarray) -> np.ndarray:
        nonlocal runner
        if runner is None:  # the first batch runs while the export's sha256 is checked
            runner, _problem, vectors = open_export(
                stored, model.dim, False, None, stopwatch, batch
            )
            if runner is None or vectors is None:
                raise NotHere
            notice(f"Loading model {ModelInfo.of(model).label()} (ONNX Runtime)")
            return vectors
        with stopwatch("embed"):
            return runner.embed_inputs(batch)

    def load(position: int) -> tuple[int, Loaded]:
        loaded = load_file(queries[position], prep)
        if loaded.error is not None:  # before the model loads: the ordinary path reports it
            raise NotHere
        return position, loaded

    vectors: dict[int, np.ndarray] = {}
    batches = embedded_batches(positions, load, lambda item: item[1], embed, DEFAULT_BATCH_SIZE)
    for batch, embedded in batches:
        for position, loaded in batch:
            if loaded.error is not None or loaded.content_hash is None:
                raise NotHere
            vectors[position] = embedded[loaded.content_hash]
    return vectors


def capped(k: int, stored: int) -> int:
    """THE number of results a search is asked for: ``k``, but never more than the model's
    stored vectors (``-k 99999999999`` would allocate its padding; no more hits exist)."""
    return max(1, min(k, stored))


def stored_vector(
    path: str,
    image_at: Callable[[str], ImageRow | None],
    vector_of: Callable[[int], bytes | None],
) -> np.ndarray | None:
    """THE rule for answering a query image from its stored vector ((dim,) float32): the image
    is in the library (``image_at(path)``, a row with ``id``, ``size``, ``mtime_ns``, ``error``)
    and unchanged on disk (its size and mtime in nanoseconds); ``vector_of(image id)`` gives the
    model's vector bytes, if any."""
    if not scan.is_utf8(path):  # never stored: the database holds UTF-8 text
        return None
    row = image_at(path)
    if row is None or row.error is not None:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None
    if (info.st_size, info.st_mtime_ns) != (row.size, row.mtime_ns):
        return None
    data = vector_of(row.id)
    return None if data is None else bytes_to_vector(data)


def hits(scores: np.ndarray, ids: np.ndarray, paths: dict[int, str]) -> list[QueryHit]:
    """One query's hits from a search's row (scores and ids, -1 padded), best first; an id
    without a path (removed meanwhile) is left out."""
    return [
        QueryHit(int(i), paths[int(i)], float(s))
        for s, i in zip(scores, ids, strict=True)
        if i >= 0 and int(i) in paths
    ]


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None
