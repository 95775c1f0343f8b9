"""Each model's index, opened once: versioned FAISS files in the library folder
(:class:`imgvec.index.segments.IndexStore`, the default), or a Milvus collection
(:class:`imgvec.index.milvus.MilvusIndex`) when the library keeps its vectors there. Both have
the same methods; FAISS (or pymilvus) is imported when the first one is opened, not before."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from imgvec.errors import VectorStoreError
from imgvec.index import artifacts
from imgvec.reporting import Reporter, Stopwatch
from imgvec.storage import store
from imgvec.storage.schema import EmbeddingModel
from imgvec.types import IndexVersionInfo

if TYPE_CHECKING:
    from imgvec.index.milvus import MilvusIndex
    from imgvec.index.segments import IndexStore


class Indexes:
    """Each model's index (FAISS segments or a Milvus collection), opened once."""

    def __init__(
        self,
        root: Path,
        sessions: sessionmaker[Session],
        reporter: Reporter,
        stopwatch: Stopwatch | None = None,
    ) -> None:
        self.root = root
        self.stopwatch = stopwatch or Stopwatch()
        self.sessions = sessions
        self.reporter = reporter
        self._stores: dict[int, IndexStore | MilvusIndex] = {}

    def vector_store(self) -> str | None:
        """The URL of the library's Milvus store, or None for FAISS files."""
        with self.sessions() as session:
            return store.vector_store(session)

    def of(self, model: EmbeddingModel) -> IndexStore | MilvusIndex:
        if model.id not in self._stores:
            self._stores[model.id] = self.open(model, self.vector_store())
        return self._stores[model.id]

    def open(self, model: EmbeddingModel, url: str | None) -> IndexStore | MilvusIndex:
        """The model's index in the store ``url`` (a Milvus URL, or None for FAISS files),
        whatever the library records (``imgvec index move`` builds in the next one)."""
        if url is None:
            with self.stopwatch("import faiss"):  # the first time: a tenth of a second
                from imgvec.index.segments import IndexStore

            return IndexStore(self.root, self.sessions, model, self.reporter)
        with self.stopwatch("import pymilvus"):  # the first time: about a second
            from imgvec.index import milvus

            target = milvus.parse_url(url)
            milvus.client(target)
        return milvus.MilvusIndex(self.root, self.sessions, model, self.reporter, target)

    def is_current(self, model: EmbeddingModel) -> bool:
        """THE check (:func:`artifacts.is_current`), and for a Milvus store that the collection
        exists (one call to it: a lost collection is rebuilt as a lost FAISS file is)."""
        with self.sessions() as session:
            milvus = store.vector_store(session) is not None
            if not artifacts.is_current(self.root, session, model.id, milvus):
                return False
            version = store.active_version(session, model.id)
        return not milvus or (version is not None and self.of(model).intact(version))

    def versions(self, model: EmbeddingModel) -> list[IndexVersionInfo]:
        """The model's kept index versions, newest first (SQL only: no FAISS)."""
        with self.sessions() as session:
            return artifacts.versions(session, model.id)

    def catch_up(self, model: EmbeddingModel) -> None:
        """Apply pending changes to the model's index, unless it is current (then no FAISS).
        A Milvus store that fails meanwhile is a notice, not an error: the database holds the
        change, and the next writer applies it (:mod:`imgvec.index.milvus`)."""
        try:
            if not self.is_current(model):
                self.of(model).update()
        except VectorStoreError as error:
            self.reporter.notice(
                f"The index was not brought up to date ({error}); the changes are saved, and "
                "the next command that writes applies them"
            )

    def ready(self) -> None:
        """Connect to the library's Milvus store, if it has one (before a command changes
        anything). Raises VectorStoreError when it cannot be reached or opened."""
        url = self.vector_store()
        if url is not None:
            from imgvec.index import milvus

            milvus.check(milvus.parse_url(url))

    def forget(self, model_id: int | None = None) -> None:
        """Close the model's index here (every model's with None): the next use opens it anew."""
        if model_id is None:
            self._stores.clear()
        self._stores.pop(model_id or -1, None)
