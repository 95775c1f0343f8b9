"""Searching a model's index beyond plain top-k (:meth:`IndexStore.search`): top-k among the
images an SQL condition selects. FAISS is imported only when an index is searched."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from imgvec.index import recall, rules
from imgvec.storage import store, user_sql
from imgvec.storage.schema import EmbeddingModel, IndexVersion

if TYPE_CHECKING:
    from imgvec.index.segments import IndexStore


def filtered_search(
    engine: Engine,
    sessions: sessionmaker[Session],
    model: EmbeddingModel,
    queries: np.ndarray,
    k: int,
    where: str,
    index: Callable[[], tuple[IndexStore, IndexVersion]],
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Top-k among the images matching ``where`` (an SQL condition on the ``photos`` view), and
    the plan: the condition, how many matched, the strategy (see ``rules.filter_strategy``) and,
    for an index search, how many candidates were fetched. ``index()`` gives the index to search
    (only called when the strategy needs it). Raises ImgvecError for a bad condition."""
    allowed = user_sql.matching_ids(engine, where)
    with sessions() as session:
        total = store.count_vectors(session, model.id)
    strategy = rules.filter_strategy(len(allowed))
    plan: dict[str, Any] = {"where": where, "matches": len(allowed), "strategy": strategy}
    if strategy == "exact":
        with sessions() as session:
            ids, vectors = store.vectors_of(session, model.id, model.dim, allowed)
        scores, rows = recall.exact_top_k(vectors, queries, k)
        return scores, np.where(rows >= 0, ids[np.maximum(rows, 0)] if len(ids) else -1, -1), plan
    store_, version = index()
    lookup = store.vector_lookup(sessions, model.id, model.dim)
    fetch = rules.overfetch(k, len(allowed), total)
    allowed_array = np.fromiter(allowed, np.int64, len(allowed))
    while True:
        scores, ids = store_.search(version, queries, fetch, lookup)
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
