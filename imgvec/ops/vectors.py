"""Where a library's indexes live: FAISS files in its folder (the default), or a Milvus server
or Milvus Lite store (:mod:`imgvec.index.milvus`), recorded in the database.

``--vectors URL`` chooses for a new library (:func:`choose`); ``imgvec index move URL`` moves an
existing one (:func:`move`): each indexed model's index is built in the new store from the stored
vectors (the database holds every vector, so nothing is re-embedded), then the library records
the new store, then the old artifacts are deleted. A move cut short leaves some models' active
versions in the new store while the library still names the old one; the index check
(:func:`imgvec.index.artifacts.is_current`) sees the mismatch and the next writer rebuilds those
in the recorded store, and ``index move`` run again finishes the move.
"""

from __future__ import annotations

import os

from imgvec.config import VECTORS_ENV
from imgvec.errors import ImgvecError
from imgvec.index import artifacts
from imgvec.ops.parts import Parts
from imgvec.storage import store

FILES = "files"
"""``imgvec index move files``: back to FAISS files in the library folder."""


def label(url: str | None) -> str:
    return url or "FAISS files in the library folder"


def normalise(url: str) -> str | None:
    """The URL as recorded (None for :data:`FILES`); raises ImgvecError for a bad one."""
    if url == FILES:
        return None
    from imgvec.index import milvus

    return milvus.parse_url(url).url


def choose(parts: Parts, url: str | None) -> None:
    """Record where a new library keeps its indexes (``url``, else ``IMGVEC_VECTORS``). The
    recorded one again is a no-op. A library that has an index already keeps its store: an
    explicit ``url`` that differs is an ImgvecError (it names ``imgvec index move``); the
    environment's is ignored. The caller holds the write lock."""
    explicit = url is not None
    url = url or os.environ.get(VECTORS_ENV) or None
    if url is None:
        return
    wanted = normalise(url)
    with parts.sessions() as session:
        recorded, indexed = store.vector_store(session), store.has_versions(session)
    if wanted == recorded or (indexed and not explicit):
        return
    if indexed:
        raise ImgvecError(
            f"this library keeps its indexes in {label(recorded)}; "
            f"to move them: imgvec index move {url}"
        )
    _check(wanted)
    with parts.sessions() as session, session.begin():
        store.set_vector_store(session, wanted)


def move(parts: Parts, url: str) -> list[str]:
    """Build every indexed model's index in the store ``url`` (:data:`FILES` for FAISS files),
    record it, then delete the old indexes; the models moved (their names). The caller holds
    the write lock. Raises ImgvecError for a bad URL or a store that cannot be used (then the
    library is unchanged)."""
    wanted = normalise(url)
    with parts.sessions() as session:
        recorded = store.vector_store(session)
        indexed = [m for m in store.models(session) if store.active_version(session, m.id)]
    if wanted == recorded:
        parts.reporter.notice(f"The indexes are in {label(wanted)} already")
        return []
    _check(wanted)
    with parts.sessions() as session, session.begin():
        store.name_library(session)  # collections are named after it
    for model in indexed:
        parts.reporter.notice(f"Building the index of {model.name} in {label(wanted)}")
        parts.indexes.open(model, wanted).build()
    with parts.sessions() as session, session.begin():
        store.set_vector_store(session, wanted)
        stale = [
            v.id
            for m in store.models(session)
            for v in store.versions(session, m.id)
            if (v.kind == artifacts.MILVUS_KIND) != (wanted is not None)
        ]
        store.delete_versions(session, stale)
    parts.indexes.forget()
    _delete_old(parts, recorded, indexed)
    return [m.name for m in indexed]


def _check(url: str | None) -> None:
    if url is not None:
        from imgvec.index import milvus

        milvus.check(milvus.parse_url(url))


def _delete_old(parts: Parts, old: str | None, models: list) -> None:  # type: ignore[type-arg]
    """The old store's artifacts, now that no version names them: FAISS segment files, or
    this library's Milvus collections."""
    if old is None:
        with parts.sessions() as session, session.begin():
            unused = store.unreferenced_segments(session)
            paths = [s.path for s in unused]
            store.delete_segments(session, unused)
        for relative in paths:
            (parts.root / relative).unlink(missing_ok=True)
        return
    if models:
        parts.indexes.open(models[0], old).remove_orphans()
