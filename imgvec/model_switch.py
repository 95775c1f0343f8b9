"""Embedding-model migration: embed every image with another model beside the current one, build
its index, and only then make it the active model (not to be confused with schema migrations,
which live in ``migrations/``).

Queries keep using the old model until the switch, which is one transaction. Vectors are committed
batch by batch, so an interrupted run continues where it stopped; switching back to a model whose
vectors are all still stored embeds nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from imgvec import store
from imgvec.ingest import FileError, embed_new_contents
from imgvec.pipeline import load_file, prefetched_batches
from imgvec.reporting import progress
from imgvec.schema import EmbeddingModel

if TYPE_CHECKING:
    import torch

    from imgvec.library import Library


@dataclass
class SwitchReport:
    model: str
    embedded: int = 0
    reused: int = 0
    already: int = 0
    failed: int = 0
    errors: list[FileError] = field(default_factory=list)
    switched: bool = False
    interrupted: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Todo:
    image_id: int
    path: str
    content_hash: str | None = None
    tensor: torch.Tensor | None = None
    error: str | None = None


def use_model(library: Library, row: EmbeddingModel, batch_size: int) -> SwitchReport:
    """Embed what the model lacks, build its index, switch. The caller holds the write lock."""
    report = SwitchReport(model=row.name)
    with library.session() as session:
        todo = [_Todo(i, p) for i, p in store.images_missing_vectors(session, row.id)]
        reusable = store.hashes_with_vectors(session, row.id)
        report.already = store.count_vectors(session, row.id)
    prepare_input = library.preparer(row)

    def prepare(todo: _Todo) -> _Todo:
        # A new record: the to-do list must not keep every tensor alive.
        loaded = load_file(todo.path, prepare_input, reusable.__contains__)
        return replace(
            todo, content_hash=loaded.content_hash, tensor=loaded.tensor, error=loaded.error
        )

    try:
        with progress(library.reporter, f"Embedding with {row.name}", len(todo)) as advance:
            for batch in prefetched_batches(todo, prepare, batch_size):
                _commit(library, row, batch, reusable, report)
                advance(len(batch))
    except KeyboardInterrupt:
        report.interrupted = True
        return report
    if report.failed:
        library.reporter.notice(
            f"{report.failed} images could not be embedded, so the library "
            f"keeps its current model; fix them (or imgvec remove them) "
            f"and run this again"
        )
        return report
    library.index(row).update()
    with library.session() as session, session.begin():
        store.set_active_model(session, session.merge(row))
    report.switched = True
    return report


def _commit(
    library: Library,
    row: EmbeddingModel,
    batch: list[_Todo],
    reusable: set[str],
    report: SwitchReport,
) -> None:
    vectors = embed_new_contents(
        lambda: library.embedder(row), ((i.content_hash, i.tensor) for i in batch), reusable
    )
    with library.session() as session, session.begin():
        for item in batch:
            if item.error is not None:
                report.failed += 1
                report.errors.append(FileError(item.path, item.error))
                library.reporter.file_error(item.path, item.error)
                continue
            assert item.content_hash is not None
            vector = vectors.get(item.content_hash)
            if vector is None:
                donors = store.images_with_hash(session, item.content_hash, row.id)
                vector = store.stored_vector(session, donors[0].id, row.id) if donors else None
                report.reused += 1
            else:
                report.embedded += 1
            if vector is None:  # its donor went away meanwhile: embed it on the next run
                report.failed += 1
                continue
            store.put_vector(session, item.image_id, row.id, vector)
    reusable.update(vectors)
