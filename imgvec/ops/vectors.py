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


def normalise(url: str, given: str = "--vectors") -> str | None:
    """The URL as recorded (None for :data:`FILES`); raises ImgvecError for a bad one, naming
    where it was ``given``."""
    if url == FILES:
        return None
    from imgvec.index import milvus

    return milvus.parse_url(url, given=given).url


def choose(parts: Parts, url: str | None) -> None:
    """Record where a new library keeps its indexes (``url``, else ``IMGVEC_VECTORS``). The
    recorded one again is a no-op. A library that has an index already keeps its store: an
    explicit ``url`` that differs is an ImgvecError (it names ``imgvec index move``); the
    environment's is ignored, even unreadable. The caller holds the write lock."""
    with parts.sessions() as session:
        recorded, indexed = store.vector_store(session), store.has_versions(session)
    if url is None:
        from_env = os.environ.get(VECTORS_ENV) or None
        if from_env is None or indexed or recorded is not None:
            return
        wanted = normalise(from_env, given=VECTORS_ENV)
    else:
        wanted = normalise(url)
    if wanted == recorded:
        return
    if indexed or recorded is not None:
        raise ImgvecError(
            f"this library keeps its indexes in {label(recorded)}; "
            f"to move them: imgvec index move {url}"
        )
    check(wanted)
    with parts.sessions() as session, session.begin():
        store.set_vector_store(session, wanted)


def move(parts: Parts, url: str) -> list[str]:
    """Build every indexed model's index in the store ``url`` (:data:`FILES` for FAISS files)
    without switching to it, then switch every model and the library in one transaction, then
    delete the old indexes; the models moved (their names). Until the switch the library uses
    the old store; after it, run again, it deletes what a move cut short left of the old one.
    The caller holds the write lock. Raises ImgvecError for a bad URL or a store that cannot be
    used (then the library is unchanged)."""
    wanted = normalise(url, given="imgvec index move")
    with parts.sessions() as session:
        recorded = store.vector_store(session)
        indexed = [m for m in store.models(session) if store.active_version(session, m.id)]
    if wanted == recorded:
        _delete_old(parts, wanted)
        parts.reporter.notice(f"The indexes are in {label(wanted)} already")
        return []
    check(wanted)
    with parts.sessions() as session, session.begin():
        store.name_library(session)  # collections are named after it
    built: dict[int, int] = {}
    for model in indexed:
        parts.reporter.notice(f"Building the index of {model.name} in {label(wanted)}")
        built[model.id] = parts.indexes.open(model, wanted).build(activate=False).id
    with parts.sessions() as session, session.begin():
        for version_id in built.values():
            version = store.version(session, version_id)
            assert version is not None
            store.activate_version(session, version)
        store.set_vector_store(session, wanted)
    parts.indexes.forget()
    _delete_old(parts, wanted)
    return [m.name for m in indexed]


def check(url: str | None) -> None:
    """Connect to the Milvus store ``url`` once (nothing for FAISS files); raises
    VectorStoreError (one line) when it cannot be reached or opened."""
    if url is not None:
        from imgvec.index import milvus

        milvus.check(milvus.parse_url(url))


def _stale(kind: str, now: str | None) -> bool:
    """Whether a version that is not active goes: every collection (Milvus keeps no earlier
    versions; one built by a move cut short, or in another store), and FAISS files once the
    library is on Milvus (on files, they are kept for ``imgvec index rollback``)."""
    return kind == artifacts.MILVUS_KIND or now is not None


def _delete_old(parts: Parts, now: str | None) -> None:
    """Every index version that is not in the store the library now uses (``now``), with what
    it holds: FAISS segment files, or Milvus collections (each version names its store). A
    collection whose store cannot be reached keeps its version, for the next move to retry."""
    with parts.sessions() as session:
        stale = [
            (v.id, v.kind, artifacts.params(v))
            for m in store.models(session)
            for v in store.versions(session, m.id)
            if v.status != "active" and _stale(v.kind, now)
        ]
    doomed = [version_id for version_id, kind, _ in stale if kind != artifacts.MILVUS_KIND]
    for version_id, kind, params in stale:
        if kind != artifacts.MILVUS_KIND:
            continue
        try:
            if params.get("url"):
                from imgvec.index import milvus

                milvus.drop_collection(milvus.parse_url(params["url"]), params["collection"])
            doomed.append(version_id)
        except ImgvecError as error:
            parts.reporter.notice(f"Kept {params['collection']} for now: {error}")
    with parts.sessions() as session, session.begin():
        store.delete_versions(session, doomed)
        unused = store.unreferenced_segments(session)
        paths = [s.path for s in unused]
        store.delete_segments(session, unused)
    for relative in paths:
        (parts.root / relative).unlink(missing_ok=True)
