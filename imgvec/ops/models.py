"""A library's embedding models: which identity a request means, which model is active, how
complete each model's vectors and index are, and dropping one.

A model identity is (name, layer, weights); ``--weights`` resolves to a pretrained id, a seeded
random initialisation, or a file's SHA-256 (:func:`imgvec.embed.registry.resolve_weights`).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from imgvec.config import DEFAULT_MODEL
from imgvec.embed import exports
from imgvec.embed.registry import get_spec, resolve_weights
from imgvec.errors import ImgvecError, ModelError
from imgvec.ops.parts import Parts
from imgvec.storage import store
from imgvec.storage.schema import EmbeddingModel
from imgvec.types import ModelInfo, ModelStatus


def model_row(
    session: Session, name: str, weights: str | None, layer: str | None
) -> EmbeddingModel:
    """The row of a model identity, created if new (the active model is not changed). Raises
    ModelError for an unknown model or layer, WeightsUnavailable for unusable weights."""
    spec = get_spec(name)
    layer_name, layer_spec = spec.layer(layer)
    choice = resolve_weights(spec, weights or "default")
    return store.model_row(
        session,
        spec.name,
        layer_name,
        choice.identity,
        preprocessing=spec.preprocess.describe(),
        dim=layer_spec.dim,
        weights_path=choice.path,
    )[0]


def ensure_model(
    parts: Parts, name: str | None, weights: str | None, layer: str | None
) -> EmbeddingModel:
    """The model an ``add`` embeds with: the active one (a new library takes the request, or
    :data:`DEFAULT_MODEL`, as its model). Raises ModelError when the request names another."""
    with parts.sessions() as session, session.begin():
        active = store.active_model(session)
        if active is not None and name in (None, active.name):
            if weights is None and layer is None:
                return active
            weights = weights or active.weights_path or _weights_option(active.weights)
            layer = layer or active.layer
        row = model_row(session, name or (active.name if active else DEFAULT_MODEL), weights, layer)
        if active is None:
            store.set_active_model(session, row)
        elif row.id != active.id and _never_used(session, active):
            # A first add that failed (weights not downloadable, a bad file) fixed a model and
            # embedded nothing: the next add may choose again, as its error message suggests.
            store.set_active_model(session, row)
            session.flush()
            store.drop_model(session, active.id)  # its files, if any, are orphans now
            parts.reporter.notice(
                f"The library held no vectors of {ModelInfo.of(active).label()}: it embeds with "
                f"{ModelInfo.of(row).label()} now"
            )
        elif row.id != active.id:
            raise ModelError(
                f"this library embeds with {ModelInfo.of(active).label()}, not "
                f"{ModelInfo.of(row).label()}; to switch: {use_command(row)}"
            )
        return row


def _never_used(session: Session, row: EmbeddingModel) -> bool:
    """No vector and no index of the model was ever kept (its changes log is empty)."""
    return store.count_vectors(session, row.id) == 0 and store.last_change(session, row.id) == 0


def use_command(row: EmbeddingModel) -> str:
    """The ``imgvec model use`` line that switches to exactly this identity."""
    command = f"imgvec model use {row.name} --layer {row.layer}"
    if row.weights_path:
        return f"{command} --weights {row.weights_path}"
    return f"{command} --weights none" if row.weights.startswith("none:") else command


def switch_target(
    parts: Parts, name: str, weights: str | None, layer: str | None
) -> EmbeddingModel:
    """The model ``imgvec model use NAME`` means: the one stored under that name, else the
    identity the options give (created)."""
    with parts.sessions() as session, session.begin():
        stored = [r for r in store.models(session) if r.name == name]
        if weights is None and layer is None and len(stored) == 1:
            return stored[0]
        return model_row(session, name, weights, layer)


def active_model(parts: Parts) -> EmbeddingModel:
    """Raises ImgvecError when the library has no model yet."""
    with parts.sessions() as session:
        row = store.active_model(session)
    if row is None:
        raise ImgvecError("the library has no model yet; add images first: imgvec add PATH")
    return row


def statuses(parts: Parts) -> list[ModelStatus]:
    """Every model the library knows, with how complete its vectors and index are."""
    with parts.sessions() as session:
        active = store.active_model(session)
        images, counts = store.vector_counts(session)
        exported = store.model_exports(session)
        result = []
        for row in store.models(session):
            vectors = counts.get(row.id, 0)
            version = store.active_version(session, row.id)
            export = exported.get(row.id)
            result.append(
                ModelStatus(
                    ModelInfo.of(row),
                    vectors,
                    active is not None and row.id == active.id,
                    images=images,
                    complete=vectors == images,
                    indexed=version is not None,
                    export=None if export is None else exports.describe(export),
                    query_runtime="onnxruntime"
                    if export is not None and exports.present(parts.root, export)
                    else "torch",
                )
            )
    return result


def find_model(parts: Parts, name: str) -> EmbeddingModel:
    """A stored model by ``name`` or ``name/layer``; ModelError when none or several match."""
    wanted_name, _, wanted_layer = name.partition("/")
    with parts.sessions() as session:
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


def searchable_model(parts: Parts, name: str) -> EmbeddingModel:
    """A stored model that every readable image has a vector for, and that has an index."""
    row = find_model(parts, name)
    status = next(s for s in statuses(parts) if s.model == ModelInfo.of(row))
    if not status.complete:
        raise ModelError(
            f"model {name} has vectors for {status.embeddings} of {status.images} images: "
            f"its index is incomplete; finish it with imgvec model use {name}"
        )
    if not status.indexed:
        raise ModelError(f"model {name} has no index yet; imgvec model use {name} builds it")
    return row


def drop_model(parts: Parts, name: str) -> int:
    """Delete a model that is not active: its vectors, index files and rows; how many vectors.
    The caller holds the write lock."""
    row = find_model(parts, name)
    if row.id == active_model(parts).id:
        raise ModelError(f"{name} is the active model; switch first (imgvec model use)")
    with parts.sessions() as session, session.begin():
        vectors = store.count_vectors(session, row.id)
        paths = store.drop_model(session, row.id)
    for relative in paths:
        (parts.root / relative).unlink(missing_ok=True)
    if parts.indexes.vector_store() is not None:  # its collection: no version names it now
        parts.indexes.of(row).remove_orphans()
    parts.indexes.forget(row.id)
    parts.models.forget(row.id)
    return vectors


def _weights_option(identity: str) -> str:
    """The ``--weights`` value that gives a stored identity back (for non-file weights)."""
    return "none" if identity.startswith("none:") else "default"
