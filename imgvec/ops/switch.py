"""Embedding-model migration: embed every image with another model beside the current one, build
its index, and only then make it the active model (not to be confused with schema migrations,
which live in ``migrations/``).

Queries keep using the old model until the switch, which is one transaction. Vectors are committed
batch by batch, so an interrupted run continues where it stopped; switching back to a model whose
vectors are all still stored embeds nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from imgvec.embed.batches import Loaded, embedded_batches, load_file
from imgvec.embed.ray_workers import Cluster, Job
from imgvec.ops.parts import Parts
from imgvec.reporting import progress
from imgvec.storage import store
from imgvec.storage.schema import EmbeddingModel
from imgvec.types import SwitchReport

if TYPE_CHECKING:
    import numpy as np


@dataclass
class _Todo:
    image_id: int
    path: str
    loaded: Loaded = field(default_factory=Loaded)


def use_model(
    parts: Parts, row: EmbeddingModel, batch_size: int, cluster: Cluster | None = None
) -> SwitchReport:
    """Embed what the model lacks, build its index, switch. The caller holds the write lock.
    With a ``cluster``, its workers read, decode and embed the images (this process writes)."""
    report = SwitchReport(model=row.name, ray=cluster.info if cluster is not None else None)
    with parts.sessions() as session:
        todo = [_Todo(i, p) for i, p in store.images_missing_vectors(session, row.id)]
        reusable = store.hashes_with_vectors(session, row.id)
        report.already = store.count_vectors(session, row.id)
    prepare_input = parts.models.preparer(row)

    def prepare(todo: _Todo) -> _Todo:
        # A new record: the to-do list must not keep every tensor alive.
        return replace(todo, loaded=load_file(todo.path, prepare_input, reusable.__contains__))

    if cluster is not None:
        batches = _on_ray(parts, cluster, row, todo, batch_size, reusable, report)
    else:
        batches = embedded_batches(
            todo,
            prepare,
            lambda item: item.loaded,
            lambda batch: _embed(parts, row, batch, report),
            batch_size,
            reusable,
        )
    try:
        with progress(parts.reporter, f"Embedding with {row.name}", len(todo)) as advance:
            for batch, embedded in batches:
                _commit(parts, row, batch, embedded, report)
                reusable.update(embedded)
                advance(len(batch))
    except KeyboardInterrupt:
        report.interrupted = True
        return report
    if report.failed:
        parts.reporter.notice(
            f"{report.failed} images could not be embedded, so the library "
            f"keeps its current model; fix them (or imgvec remove them) "
            f"and run this again"
        )
        return report
    parts.indexes.of(row).update()
    with parts.sessions() as session, session.begin():
        store.set_active_model(session, row)
    report.switched = True
    return report


def _commit(
    parts: Parts,
    row: EmbeddingModel,
    batch: list[_Todo],
    embedded: dict[str, np.ndarray],
    report: SwitchReport,
) -> None:
    with parts.sessions() as session, session.begin():
        for item in batch:
            loaded = item.loaded
            if loaded.error is not None:
                report.failed += 1
                parts.fail(report.errors, item.path, loaded.error)
                continue
            assert loaded.content_hash is not None
            fresh = embedded.get(loaded.content_hash)
            if fresh is None:
                vector = store.vector_for_content(session, loaded.content_hash, row.id)[1]
                report.reused += 1
            else:
                vector = store.vector_to_bytes(fresh)
                report.embedded += 1
            if vector is None:  # its donor went away meanwhile: embed it on the next run
                report.failed += 1
                continue
            store.put_vector(session, item.image_id, row.id, vector)


def _on_ray(
    parts: Parts,
    cluster: Cluster,
    row: EmbeddingModel,
    todo: list[_Todo],
    batch_size: int,
    reusable: set[str],
    report: SwitchReport,
) -> Iterator[tuple[list[_Todo], dict[str, np.ndarray]]]:
    """What :func:`embedded_batches` gives, made by the cluster's workers."""
    batches = cluster.embedded_batches(
        parts.models, row, todo, lambda item: Job(item.path), batch_size, reusable
    )
    for batch, done, vectors, runtime in batches:
        report.runtime = runtime or report.runtime
        yield [replace(t, loaded=d.loaded) for t, d in zip(batch, done, strict=True)], vectors


def _embed(
    parts: Parts, row: EmbeddingModel, batch: np.ndarray, report: SwitchReport
) -> np.ndarray:
    vectors = parts.models.embed(row, batch, bulk=True)
    report.runtime = parts.models.runtime_of(row, bulk=True)
    return vectors
