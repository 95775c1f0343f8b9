"""A model's index as a Milvus collection: on a Milvus server (``milvus://HOST:PORT[/DB]``) or in
a Milvus Lite store (``milvus-lite:///PATH.db``), through ``pymilvus`` (issue 17).

The database stays the source of truth, as with FAISS files: every vector is a row, and every
change to a model's vectors is a row of the change log (``changes``). A model's collection is
one index version (kind ``milvus``) whose ``change_seq`` is its **watermark**: the last change
the collection holds. :meth:`MilvusIndex.update` applies the changes after it (upsert the ids that
have a vector now, delete the others), flushes, and only then moves the watermark, in the
database. A writer killed between its database commit and Milvus (or between Milvus and the
watermark) leaves the watermark behind, so the next writing command applies those changes again;
upserts and deletes by id can be repeated, so nothing is lost or doubled. Until then a query
leaves out the ids changed after the watermark, as FAISS segments leave out their tombstones.

A build fills a new collection from the stored vectors a chunk at a time and records it only when
it is complete (a model switch waits for it); the collection it replaces is dropped after the
switch. Collections are named ``imgvec_<library id>_m<model id>_<random>``, so libraries can
share a server; a collection of this library that no version names (a crashed build, a dropped
model) is dropped by the next writer.

``pymilvus`` is imported only here, when a library that keeps its vectors in Milvus is searched
or written; its import takes about a second.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from imgvec.errors import ImgvecError, VectorStoreError
from imgvec.index import artifacts, recall
from imgvec.reporting import Reporter, SilentReporter, progress
from imgvec.storage import store
from imgvec.storage.schema import EmbeddingModel, IndexVersion
from imgvec.types import GcReport, VerifyReport

KIND = artifacts.MILVUS_KIND
INDEX_TYPE = "AUTOINDEX"
"""Milvus's own choice of index (HNSW on a server and in Milvus Lite with FAISS installed)."""
METRIC = "IP"
"""Inner product: cosine on the unit vectors imgvec stores."""
MAX_TOP_K = 16_384
"""The most results Milvus returns per query (its ``topk`` limit)."""
WRITE_CHUNK = 2_000
"""Vectors per insert or upsert call (a gRPC message stays a few MB at 1,280-d)."""
FILTER_IDS_MAX = 10_000
"""Pending changes up to this many are left out by Milvus (``id not in [...]``); beyond, the
results are over-fetched by that many and filtered here."""
CONNECT_TIMEOUT_S = 10.0
PROGRESS_MIN_VECTORS = 10_000
"""Builds of at least this many vectors show a progress bar."""


@dataclass(frozen=True)
class Target:
    """Where a library's collections live: ``url`` as recorded, ``uri`` and ``db_name`` as
    ``pymilvus.MilvusClient`` takes them; ``lite`` for a Milvus Lite directory."""

    url: str
    uri: str
    db_name: str
    lite: bool


def parse_url(url: str, cwd: Path | None = None, given: str = "--vectors") -> Target:
    """THE reading of a ``--vectors`` URL. ``milvus://HOST:PORT[/DB]`` is a Milvus server (DB:
    one of its databases, ``default`` when left out); ``milvus-lite://PATH`` a Milvus Lite
    directory, whose name must end in ``.db`` (pymilvus's rule), relative to ``cwd`` unless it
    is absolute (``milvus-lite:///abs/path.db``); the recorded URL names it absolutely.
    Raises ImgvecError naming what is wrong, and where the URL was ``given``."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("milvus", "milvus-lite"):
        raise ImgvecError(
            f"{given} {url!r}: expected milvus://HOST:PORT[/DB] or milvus-lite://PATH.db"
        )
    if scheme == "milvus-lite":
        if not rest or rest.endswith("/"):
            raise ImgvecError(f"{given} {url!r}: give the Milvus Lite path, ending in .db")
        path = Path(rest)
        if not path.is_absolute():
            path = (cwd or Path.cwd()) / path
        path = Path(str(path.resolve()))
        if path.suffix != ".db":
            raise ImgvecError(f"{given} {url!r}: a Milvus Lite path ends in .db ({path.name})")
        return Target(f"milvus-lite://{path}", str(path), "", True)
    address, _, db = rest.partition("/")
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in db:
        raise ImgvecError(f"{given} {url!r}: expected milvus://HOST:PORT[/DB]")
    return Target(f"milvus://{address}" + (f"/{db}" if db else ""), f"http://{address}", db, False)


_clients: dict[tuple[str, str], Any] = {}
"""One client per store and process: Milvus Lite serves a directory to one process at a time."""


def client(target: Target) -> Any:
    """A connected ``pymilvus.MilvusClient`` for ``target``; raises VectorStoreError (one line:
    the store, and why) when pymilvus is missing or the store cannot be reached or opened."""
    key = (target.uri, target.db_name)
    if key in _clients:
        return _clients[key]
    # gRPC's C core writes its own log lines (a server's keepalive "too_many_pings" GOAWAY) to
    # stderr unless told not to, before it loads.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise VectorStoreError(
            f"this library keeps its vectors in {target.url}, which needs pymilvus: "
            "pip install 'imgvec[milvus]'"
        ) from None
    # Their log lines (and those of Milvus Lite's in-process gRPC server) would reach the
    # terminal; every failure is raised instead.
    for name in ("pymilvus", "milvus_lite", "grpc"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    try:
        made = MilvusClient(uri=target.uri, db_name=target.db_name, timeout=CONNECT_TIMEOUT_S)
    except Exception as error:
        why = LITE_BUSY if target.lite and _lite_busy(Path(target.uri)) else _why(error)
        raise VectorStoreError(f"cannot open the vector store {target.url}: {why}") from None
    _clients[key] = made
    return made


def close_all() -> None:
    """Close this process's clients and stop its Milvus Lite servers (freeing their stores for
    other processes); the next :func:`client` call connects again."""
    for (uri, _db), made in list(_clients.items()):
        made.close()
        if not uri.startswith("http"):
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(uri)
    _clients.clear()


def drop_collection(target: Target, name: str) -> None:
    """Drop a collection of ``target`` if it is there; raises VectorStoreError."""
    made = client(target)
    try:
        if made.has_collection(name):
            made.drop_collection(name)
    except Exception as error:
        raise VectorStoreError(f"cannot drop {name} in {target.url}: {_why(error)}") from None


LITE_BUSY = (
    "another process has it open (Milvus Lite serves one process at a time; to share a "
    "library between processes, use a Milvus server: milvus://HOST:PORT)"
)


def _lite_busy(directory: Path) -> bool:
    """Whether another process holds the Milvus Lite store's lock (its ``LOCK`` file, flock)."""
    import fcntl

    try:
        with open(directory / "LOCK", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(lock, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def _why(error: BaseException) -> str:
    """One line from a pymilvus or Milvus Lite error."""
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    return " ".join(str(text).split())


def check(target: Target) -> None:
    """Connect to ``target`` once (``--vectors`` is checked before anything is recorded)."""
    try:
        client(target).list_collections()
    except VectorStoreError:
        raise
    except Exception as error:
        raise VectorStoreError(f"cannot use the vector store {target.url}: {_why(error)}") from None


class MilvusIndex(artifacts.ModelIndex):
    """A model's index in Milvus, with the methods of :class:`imgvec.index.segments.IndexStore`
    (the caller of a writing method holds the library's write lock)."""

    def __init__(
        self,
        root: Path,
        sessions: sessionmaker[Session],
        model: EmbeddingModel,
        reporter: Reporter,
        target: Target,
    ) -> None:
        super().__init__(root, sessions, model, reporter)
        self.target = target
        self._dead: tuple[tuple[int, int], np.ndarray] | None = None

    # --- Milvus calls, each failure one line ------------------------------------------------------

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except VectorStoreError:
            raise
        except Exception as error:
            raise VectorStoreError(
                f"the vector store {self.target.url} failed to {what}: {_why(error)}"
            ) from None

    @property
    def _client(self) -> Any:
        return client(self.target)

    def _prefix(self) -> str:
        with self.sessions() as session:
            return f"imgvec_{store.library_id(session)}_"

    def _create(self) -> str:
        from pymilvus import DataType, MilvusClient

        name = f"{self._prefix()}m{self.model.id}_{uuid.uuid4().hex[:12]}"
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.model.dim)
        index_params = self._client.prepare_index_params()
        index_params.add_index(field_name="vector", index_type=INDEX_TYPE, metric_type=METRIC)
        self._call(
            "create a collection",
            self._client.create_collection,
            name,
            schema=schema,
            index_params=index_params,
            consistency_level="Strong",
        )
        return name

    def _write(self, name: str, ids: np.ndarray, vectors: np.ndarray, upsert: bool) -> None:
        write = self._client.upsert if upsert else self._client.insert
        for start in range(0, len(ids), WRITE_CHUNK):
            end = start + WRITE_CHUNK
            rows = [
                {"id": int(i), "vector": v}
                for i, v in zip(ids[start:end], vectors[start:end], strict=True)
            ]
            self._call("write vectors", write, name, rows)

    # --- writing ---------------------------------------------------------------------------------

    def update(self) -> IndexVersion:
        """Apply the changes after the watermark to the collection, flush, then move the
        watermark; the first call (or a missing collection) builds it."""
        self.remove_orphans()
        with self.sessions() as session:
            active = store.active_version(session, self.model.id)
            if active is None or active.kind != KIND:
                return self.build()
            name = _collection(active)
            seq = store.last_change(session, self.model.id)
            changed = store.changed_since(session, self.model.id, active.change_seq)
            ids, vectors = store.vectors_of(session, self.model.id, self.model.dim, changed)
            n_live = store.count_vectors(session, self.model.id)
        if not self._call("look up a collection", self._client.has_collection, name):
            self.notice(
                f"The Milvus collection {name} is missing; rebuilding it from stored vectors"
            )
            return self.build()
        if active.change_seq == seq:
            return active
        self._apply(name, ids, vectors, sorted(set(changed) - {int(i) for i in ids}))
        with self.sessions() as session, session.begin():
            store.set_version_seq(session, active.id, seq, n_live)
        with self.sessions() as session:
            version = store.version(session, active.id)
            assert version is not None
            return version

    def _apply(self, name: str, ids: np.ndarray, vectors: np.ndarray, gone: list[int]) -> None:
        """Upsert ``ids`` with their ``vectors``, delete ``gone``, flush: the changes after the
        watermark, which can be applied again after a crash without harm."""
        self._write(name, ids, vectors, upsert=True)
        if gone:
            self._call("delete vectors", self._client.delete, name, ids=gone)
        self._call("flush", self._client.flush, name)

    def build(
        self,
        kind: str | None = None,
        nlist: int | None = None,
        nprobe: int | None = None,
        activate: bool = True,
    ) -> IndexVersion:
        """A new collection from the stored vectors (a chunk at a time), recall@10 measured on
        a sample, then recorded as the active version; the collection it replaces is dropped.
        Without ``activate`` it is recorded retired and nothing else is touched, for ``imgvec
        index move`` to switch to."""
        if kind not in (None, KIND) or nlist is not None or nprobe is not None:
            raise ImgvecError(
                f"this library keeps its vectors in {self.target.url}: Milvus chooses the index "
                "(--kind, --nlist and --nprobe are for FAISS files)"
            )
        self.remove_orphans()
        with self.sessions() as session:
            seq = store.last_change(session, self.model.id)
            active = store.active_version(session, self.model.id)
            n = store.count_vectors(session, self.model.id)
        name = self._create()
        shown = self.reporter if n >= PROGRESS_MIN_VECTORS else SilentReporter()
        with progress(shown, "Indexing in Milvus", n) as advance:
            for ids, vectors in self._stored_vectors():
                self._write(name, ids, vectors, upsert=False)
                advance(len(ids))
        self._call("flush", self._client.flush, name)
        self._call("load a collection", self._client.load_collection, name)
        measured = self._measure(name, n)
        with self.sessions() as session, session.begin():
            version = store.add_version(
                session,
                [],
                {
                    "collection": name,
                    "index_type": INDEX_TYPE,
                    "metric": METRIC,
                    "url": self.target.url,
                },
                activate,
                model_id=self.model.id,
                parent_id=active.id if active else None,
                kind=KIND,
                n_vectors=n,
                change_seq=seq,
                train_size=None,
                recall=measured,
                operation="build",
            )
            if not activate:
                return version
            older = [v.id for v in store.versions(session, self.model.id) if v.id != version.id]
            store.delete_versions(session, older)  # a collection cannot be rolled back to
        self._dead = None
        return self.update()  # which first drops the collections no version names now

    def _stored_vectors(self) -> Any:
        with self.sessions() as session:
            yield from store.iter_vectors(session, self.model.id, self.model.dim)

    def _measure(self, name: str, n: int) -> float | None:
        """recall@10 of the collection against exact search, on up to
        :data:`recall.SAMPLE_QUERIES` stored vectors as queries (None for an empty library)."""
        if n == 0:
            return None
        with self.sessions() as session:
            all_ids = np.array(store.vector_ids(session, self.model.id), np.int64)
            query_ids, queries = store.vectors_of(
                session, self.model.id, self.model.dim, recall.sample_ids(all_ids).tolist()
            )
        truth = recall.RunningTopK(queries)
        for ids, vectors in self._stored_vectors():
            truth.add(ids, vectors)
        _, found = self._search(name, queries, recall.K + 1, np.zeros(0, np.int64))
        return recall.recall_at_k(truth.ids, found, own=query_ids)

    def compact(self) -> IndexVersion:
        """Milvus compacts its own segments; this applies pending changes and asks it to."""
        version = self.update()
        self._call("compact", self._client.compact, _collection(version))
        return version

    def rollback(self, version_id: int) -> IndexVersion:
        raise ImgvecError(
            f"this library keeps its vectors in {self.target.url}, which keeps no earlier "
            "index versions (imgvec index rebuild makes the collection anew)"
        )

    def gc(self, keep: int = 0) -> GcReport:
        """Prune the change log up to the watermark (and ``dupes --new``'s mark), and drop this
        library's collections that no version names."""
        with self.sessions() as session, session.begin():
            active = store.active_version(session, self.model.id)
            floor = active.change_seq if active is not None else 0
            dupes_seq = store.state(session).dupes_seq
            if dupes_seq is not None:
                floor = min(floor, dupes_seq)
            pruned = store.prune_changes(session, self.model.id, floor)
        dropped, _ = self.remove_orphans()
        return GcReport(0, dropped, 0, pruned)

    def remove_orphans(self) -> tuple[int, int]:
        """Drop this library's collections that no version names (a crashed build, a dropped
        model); ``(collections dropped, 0)``."""
        orphans = self._orphans()
        for name in orphans:
            self._call("drop a collection", self._client.drop_collection, name)
        return len(orphans), 0

    def _orphans(self) -> list[str]:
        prefix = self._prefix()
        with self.sessions() as session:
            known = store.collections(session)
        names = self._call("list collections", self._client.list_collections)
        return sorted(n for n in names if n.startswith(prefix) and n not in known)

    # --- reading ---------------------------------------------------------------------------------

    def intact(self, version: IndexVersion) -> bool:
        """The version is a collection, and it exists."""
        return version.kind == KIND and bool(
            self._call("look up a collection", self._client.has_collection, _collection(version))
        )

    def load(self, version: IndexVersion) -> np.ndarray:
        """Connect and load the collection; the ids changed after the watermark (left out of
        results until it catches up), cached until the version or the change log moves."""
        with self.sessions() as session:
            key = (version.id, store.last_change(session, self.model.id))
            if self._dead is None or self._dead[0] != key:
                changed = store.changed_since(session, self.model.id, version.change_seq)
                self._call("load a collection", self._client.load_collection, _collection(version))
                self._dead = (key, np.fromiter(changed, np.int64, len(changed)))
        return self._dead[1]

    def search(
        self, version: IndexVersion, queries: np.ndarray, k: int, lookup: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32 (Q, k), ids int64 (Q, k)), best first, ``-inf`` / -1 padded, as
        FAISS segments give them (Milvus's scores are exact inner products on this metric, so
        ``lookup``, FAISS's re-rank source, is not needed). At most :data:`MAX_TOP_K` results."""
        return self._search(_collection(version), queries, k, self.load(version))

    def _search(
        self, name: str, queries: np.ndarray, k: int, dead: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.asarray(queries, np.float32)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        if not len(queries):
            return scores, ids
        filter_dead = 0 < len(dead) <= FILTER_IDS_MAX
        limit = min(MAX_TOP_K, k + (len(dead) if len(dead) > FILTER_IDS_MAX else 0))
        found = self._call(
            "search",
            self._client.search,
            name,
            data=list(queries),
            limit=limit,
            filter=f"id not in [{','.join(map(str, dead.tolist()))}]" if filter_dead else "",
            output_fields=["id"],
            search_params={"metric_type": METRIC},
        )
        dead_set = set(dead.tolist()) if len(dead) > FILTER_IDS_MAX else set()
        for row, hits in enumerate(found):
            kept = [h for h in hits if h["id"] not in dead_set][:k]
            ids[row, : len(kept)] = [h["id"] for h in kept]
            scores[row, : len(kept)] = [h["distance"] for h in kept]
        return scores, ids

    def verify(self, writer_active: bool = False) -> VerifyReport:
        """The collection's ids against the table's, pending changes aside; leftovers are this
        library's collections that no version names."""
        with self.sessions() as session:
            active = store.active_version(session, self.model.id)
            report = VerifyReport(active.id if active else None)
            if active is None or active.kind != KIND:
                report.problems.append("no index has been built (run imgvec index rebuild)")
                return report
            changed = store.changed_since(session, self.model.id, active.change_seq)
            table_ids = set(store.vector_ids(session, self.model.id))
        report.pending_changes = len(changed)
        name = _collection(active)
        if not self._call("look up a collection", self._client.has_collection, name):
            report.problems.append(
                f"Milvus collection {name}: missing (the next command that writes, or a "
                "query, rebuilds it from the stored vectors)"
            )
            return report
        report.checked_segments = 1
        indexed = self._ids(name)
        if missing := table_ids - indexed - set(changed):
            report.problems.append(
                f"{len(missing)} stored vectors are not in the collection "
                f"(e.g. image ids {sorted(missing)[:5]})"
            )
        if dead := indexed - table_ids - set(changed):
            report.problems.append(
                f"{len(dead)} collection entries have no row in the table and "
                f"would be returned (e.g. ids {sorted(dead)[:5]})"
            )
        report.live_vectors = len(indexed - set(changed))
        if not writer_active:
            report.leftovers = self._orphans()
        return report

    def _ids(self, name: str) -> set[int]:
        def read() -> set[int]:
            self._client.load_collection(name)
            found: set[int] = set()
            rows = self._client.query_iterator(
                name, batch_size=10_000, filter="id >= 0", output_fields=["id"]
            )
            while batch := rows.next():
                found.update(int(r["id"]) for r in batch)
            rows.close()
            return found

        return self._call("read the collection's ids", read)


def _collection(version: IndexVersion) -> str:
    return str(artifacts.params(version)["collection"])
