"""Each model's versioned index (:class:`imgvec.index.segments.IndexStore`), opened once;
FAISS is imported when the first one is opened, not before."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from imgvec.index import artifacts
from imgvec.reporting import Reporter, Stopwatch
from imgvec.storage.schema import EmbeddingModel
from imgvec.types import IndexVersionInfo

if TYPE_CHECKING:
    from imgvec.index.segments import IndexStore


class Indexes:
    """Each model's versioned index (:class:`imgvec.index.segments.IndexStore`), opened once."""

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
        self._stores: dict[int, IndexStore] = {}

    def of(self, model: EmbeddingModel) -> IndexStore:
        if model.id not in self._stores:
            with self.stopwatch("import faiss"):  # the first time: a tenth of a second
                from imgvec.index.segments import IndexStore

            self._stores[model.id] = IndexStore(self.root, self.sessions, model, self.reporter)
        return self._stores[model.id]

    def is_current(self, model: EmbeddingModel) -> bool:
        with self.sessions() as session:
            return artifacts.is_current(self.root, session, model.id)

    def versions(self, model: EmbeddingModel) -> list[IndexVersionInfo]:
        """The model's kept index versions, newest first (SQL only: no FAISS)."""
        with self.sessions() as session:
            return artifacts.versions(session, model.id)

    def catch_up(self, model: EmbeddingModel) -> None:
        """Apply pending changes to the model's index, unless it is current (then no FAISS)."""
        if not self.is_current(model):
            self.of(model).update()

    def forget(self, model_id: int) -> None:
        self._stores.pop(model_id, None)
