"""A model's FAISS index as versioned, immutable segment files tied to database rows.

A version is a trained **base** segment plus small exact **delta** segments, current at a change
seq of the change log. Updates add one delta holding only what changed; an id whose latest change
is newer than a segment is dead (a tombstone) in it and is filtered inside FAISS at search time,
so removals show at once, even before the index catches up. Compaction folds deltas and
tombstones into a new base when they pass a threshold, re-measuring recall; the rules in
``index_rules`` decide when to compact and when to train anew.

Files are written atomically before the rows that name them are committed; a crash leaves at most
unreferenced files, which the next writer deletes. Writers hold the library's write lock.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from imgvec.errors import ImgvecError
from imgvec.index import artifacts, faiss_ops, recall, rules
from imgvec.index.artifacts import INDEX_DIR
from imgvec.reporting import Reporter, SilentReporter, progress
from imgvec.scan import sha256_file
from imgvec.storage import store
from imgvec.storage.schema import EmbeddingModel, IndexSegment, IndexVersion
from imgvec.types import GcReport, VerifyReport

AUTO_KEEP_RETIRED = 2
"""Retired versions kept after each update (``imgvec index gc --keep`` trims further)."""


PROGRESS_MIN_VECTORS = 100_000
"""Builds of at least this many vectors (tens of seconds and more) show a progress bar."""


def total_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class IndexStore(artifacts.ModelIndex):
    def __init__(
        self,
        root: Path,
        sessions: sessionmaker[Session],
        model: EmbeddingModel,
        reporter: Reporter,
        target_recall: float = recall.DEFAULT_TARGET,
        memory_budget: int | None = None,
    ) -> None:
        super().__init__(root, sessions, model, reporter)
        self.target_recall = target_recall
        self.memory_budget = memory_budget or rules.memory_budget(total_memory())
        self._loaded: dict[int, faiss_ops.Segment] = {}
        self._stored: dict[int, np.ndarray] = {}
        """Sorted ids each loaded segment holds (tombstones are limited to those)."""
        self._searching: tuple[tuple[int, int], list[faiss_ops.Segment]] | None = None

    # --- writing (the caller holds the write lock) -----------------------------------------------

    def update(self) -> IndexVersion:
        """Bring the active version up to the change log: one new delta, then rules may compact
        or retrain. The first call builds the index."""
        self.remove_orphans()
        with self.sessions() as session:
            active = store.active_version(session, self.model.id)
            if active is None or active.kind == artifacts.MILVUS_KIND:  # a move cut short
                return self.build()
            segments = store.segments_of(session, active.id)
            broken = [s.path for s in segments if not self._file_intact(s)]
            if broken:
                self.notice(
                    f"Index file {broken[0]} is missing or damaged; rebuilding the index "
                    "from stored vectors"
                )
                return self.build()
            seq = store.last_change(session, self.model.id)
            if active.change_seq == seq:
                return self._maybe_compact(active, segments)
            changed = store.changed_since(session, self.model.id, active.change_seq)
            ids, vectors = store.vectors_of(session, self.model.id, self.model.dim, changed)
            n_live = store.count_vectors(session, self.model.id)
        new_segments = list(segments)
        if len(ids):
            new_segments.append(
                self._write_segment(faiss_ops.flat(ids, vectors), "delta", len(ids), seq)
            )
        version = self._record(
            new_segments,
            "update",
            active.kind,
            artifacts.params(active),
            n_live,
            seq,
            active.train_size,
            active.recall,
            parent=active.id,
        )
        self._forget_old_versions()
        return self._maybe_compact(version, new_segments)

    def build(
        self,
        kind: str | None = None,
        nlist: int | None = None,
        nprobe: int | None = None,
        activate: bool = True,
    ) -> IndexVersion:
        """A fresh version from the stored vectors, read a chunk at a time and never all at once
        (:func:`faiss_ops.build_streamed`; no model is loaded); trains IVF kinds. Without
        ``activate`` it is recorded retired, for ``imgvec index move`` to switch to."""
        if kind is not None:
            faiss_ops.check_kind(kind)
        with self.sessions() as session:
            seq = store.last_change(session, self.model.id)
            active = store.active_version(session, self.model.id)
            n = store.count_vectors(session, self.model.id)
        kind = kind or rules.choose_kind(
            n, self.model.dim, self.memory_budget, active.kind if active else None
        )
        if kind != "flat" and n < rules.MIN_POINTS_PER_LIST:
            raise ImgvecError(
                f"an {kind} index needs at least {rules.MIN_POINTS_PER_LIST} "
                f"vectors to train; the library has {n}"
            )
        if kind != "flat":
            self.notice(f"Training the {kind.upper()} index on {n} vectors")
        passes = 1 if kind == "flat" else 2  # IVF: the training sample, then the index
        shown = self.reporter if n >= PROGRESS_MIN_VECTORS else SilentReporter()
        with progress(shown, "Indexing", passes * n) as advance:
            built = faiss_ops.build_streamed(
                self._stored_vectors,
                n,
                self.model.dim,
                kind,
                store.vector_lookup(self.sessions, self.model.id, self.model.dim),
                nlist=nlist,
                nprobe=nprobe,
                target_recall=self.target_recall,
                progress=advance,
            )
        n = int(built.index.ntotal)
        base = self._write_segment(built.index, "base", n, seq)
        version = self._record(
            [base],
            "build",
            built.kind,
            built.params,
            n,
            seq,
            built.train_size,
            built.recall,
            parent=active.id if active else None,
            activate=activate,
        )
        if built.recall is not None and built.recall < self.target_recall:
            self.notice(
                f"Measured recall@10 {built.recall:.3f} is below the target "
                f"{self.target_recall:.2f} even at nprobe={built.params['nprobe']}"
            )
        if activate:
            self._forget_old_versions()
        return version

    def _stored_vectors(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One pass over the model's stored vectors, a chunk at a time (for builds)."""
        with self.sessions() as session:
            yield from store.iter_vectors(session, self.model.id, self.model.dim)

    def compact(self) -> IndexVersion:
        """Fold deltas and tombstones into a new base (no retraining unless the rules say so)."""
        with self.sessions() as session:
            active = store.active_version(session, self.model.id)
            if active is None:
                return self.build()
            segments = store.segments_of(session, active.id)
            base = segments[0]
            seq = active.change_seq
            changed = store.changed_since(session, self.model.id, base.created_seq)
            changed = {i: s for i, s in changed.items() if s <= seq}
            ids, vectors = store.vectors_of(session, self.model.id, self.model.dim, changed)
            n_live = store.count_vectors(session, self.model.id)
        reason = self._retrain_reason(active, n_live)
        if reason:
            self.notice(f"Retraining the index: {reason}")
            return self.build()
        index = faiss_ops.load(self.root / base.path)
        dead = np.fromiter(changed, dtype=np.int64, count=len(changed))
        index = faiss_ops.fold(index, dead, ids, vectors)
        params, measured = artifacts.params(active), active.recall
        if active.kind == "ivf":  # IVF-Flat at nprobe=nlist is exact: recall needs no vectors
            measured = self._retune(index, params)
            if measured < self.target_recall:
                self.notice(
                    f"Retraining the index: measured recall@10 {measured:.3f} is below "
                    f"the target {self.target_recall:.2f}"
                )
                return self.build()
        new_base = self._write_segment(index, "base", int(index.ntotal), seq)
        version = self._record(
            [new_base],
            "compact",
            active.kind,
            params,
            n_live,
            seq,
            active.train_size,
            measured,
            parent=active.id,
        )
        self._forget_old_versions()
        return version

    def _maybe_compact(self, version: IndexVersion, segments: list[IndexSegment]) -> IndexVersion:
        base, deltas = segments[0], segments[1:]
        with self.sessions() as session:
            changes = len(store.changed_since(session, self.model.id, base.created_seq))
        reason = self._retrain_reason(version, version.n_vectors)
        if reason:
            self.notice(f"Retraining the index: {reason}")
            return self.build()
        if rules.should_compact(base.n_vectors, changes, len(deltas)):
            self.notice(f"Compacting the index ({len(deltas)} delta segments, {changes} changes)")
            return self.compact()
        return version

    def _retrain_reason(self, version: IndexVersion, n_vectors: int) -> str | None:
        """THE retrain decision for a version of ``n_vectors`` (see ``rules.retrain_reason``)."""
        wanted = rules.choose_kind(n_vectors, self.model.dim, self.memory_budget, version.kind)
        return rules.retrain_reason(
            version.kind,
            wanted,
            n_vectors,
            artifacts.params(version).get("nlist"),
            None,
            self.target_recall,
        )

    def _retune(self, index: Any, params: dict[str, Any]) -> float:
        tuning = faiss_ops.retune_ivf(index, int(params["nlist"]), self.target_recall)
        params["nprobe"] = tuning.nprobe
        return tuning.recall

    def rollback(self, version_id: int) -> IndexVersion:
        """Make an earlier version active again, then replay the changes made since it."""
        with self.sessions() as session, session.begin():
            target = store.version(session, version_id)
            if target is None or target.model_id != self.model.id:
                raise ImgvecError(
                    f"no index version {version_id} for this library's model "
                    "(see imgvec index list)"
                )
            for segment in store.segments_of(session, target.id):
                if not self._file_intact(segment, checksum=True):
                    raise ImgvecError(
                        f"version {version_id} cannot be restored: its file "
                        f"{segment.path} is missing or damaged"
                    )
            store.activate_version(session, target)
        self.notice(f"Version {version_id} is active again; applying later changes to it")
        return self.update()

    def gc(self, keep: int = AUTO_KEEP_RETIRED) -> GcReport:
        """Delete retired versions beyond the ``keep`` newest, then every file no version uses."""
        with self.sessions() as session, session.begin():
            retired = [v for v in store.versions(session, self.model.id) if v.status != "active"]
            doomed = [v.id for v in retired[keep:]]
            store.delete_versions(session, doomed)
            kept = store.versions(session, self.model.id)
            floor = min(
                (s.created_seq for v in kept for s in store.segments_of(session, v.id)), default=0
            )
            dupes_seq = store.state(session).dupes_seq  # ``dupes --new`` reads changes since
            if dupes_seq is not None:
                floor = min(floor, dupes_seq)
            pruned = store.prune_changes(session, self.model.id, floor)
            unused = store.unreferenced_segments(session)
            paths = [s.path for s in unused]
            store.delete_segments(session, unused)
        files, freed = 0, 0
        for relative in paths:
            path = self.root / relative
            if path.exists():
                freed += path.stat().st_size
                path.unlink()
                files += 1
        orphans, orphan_bytes = self.remove_orphans()
        return GcReport(len(doomed), files + orphans, freed + orphan_bytes, pruned)

    def _forget_old_versions(self) -> None:
        self.gc(AUTO_KEEP_RETIRED)

    def remove_orphans(self) -> tuple[int, int]:
        """Delete temporary files and segment files no row names (left by a crashed writer)."""
        with self.sessions() as session:
            known = store.segment_paths(session)
        return artifacts.remove_orphans(self.root, known)

    def _write_segment(self, index: Any, role: str, n_vectors: int, seq: int) -> IndexSegment:
        relative = f"{INDEX_DIR}/m{self.model.id}-{role}-{uuid.uuid4().hex[:12]}.faiss"
        target = self.root / relative
        faiss_ops.save(index, target)
        with self.sessions() as session, session.begin():
            return store.add_segment(
                session,
                model_id=self.model.id,
                role=role,
                path=relative,
                sha256=sha256_file(target),
                size_bytes=target.stat().st_size,
                n_vectors=n_vectors,
                created_seq=seq,
            )

    def _record(
        self,
        segments: list[IndexSegment],
        operation: str,
        kind: str,
        params: dict[str, Any],
        n_vectors: int,
        seq: int,
        train_size: int | None,
        measured: float | None,
        parent: int | None,
        activate: bool = True,
    ) -> IndexVersion:
        with self.sessions() as session, session.begin():
            return store.add_version(
                session,
                segments,
                params,
                activate,
                model_id=self.model.id,
                parent_id=parent,
                kind=kind,
                n_vectors=n_vectors,
                change_seq=seq,
                train_size=train_size,
                recall=measured,
                operation=operation,
            )

    def intact(self, version: IndexVersion) -> bool:
        """The version is made of FAISS files, all there with their recorded sizes (a stat
        each)."""
        if version.kind == artifacts.MILVUS_KIND:
            return False
        with self.sessions() as session:
            return artifacts.intact(self.root, session, version.id)

    def _file_intact(self, segment: IndexSegment, checksum: bool = False) -> bool:
        path = self.root / segment.path
        try:
            if path.stat().st_size != segment.size_bytes:
                return False
        except OSError:
            return False
        return not checksum or sha256_file(path) == segment.sha256

    # --- reading ---------------------------------------------------------------------------------

    def search(
        self, version: IndexVersion, queries: np.ndarray, k: int, lookup: faiss_ops.VectorLookup
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search a version's segments (memory-mapped), ids changed after a segment filtered.

        The segments with their tombstones are kept until the version or the change log moves,
        so repeated queries do not re-read the log or rebuild FAISS's id selectors.
        """
        return faiss_ops.search(self.load(version), queries, k, lookup)

    def load(self, version: IndexVersion) -> list[faiss_ops.Segment]:
        """The version's segments ready to search (opened on first use, then cached)."""
        with self.sessions() as session:
            key = (version.id, store.last_change(session, self.model.id))
            if self._searching is None or self._searching[0] != key:
                segments = store.segments_of(session, version.id)
                floor = min(s.created_seq for s in segments)
                changed = store.changed_since(session, self.model.id, floor)
                self._searching = (key, self._with_tombstones(version, segments, changed))
        return self._searching[1]

    def _with_tombstones(
        self, version: IndexVersion, segments: list[IndexSegment], changed: dict[int, int]
    ) -> list[faiss_ops.Segment]:
        params = artifacts.params(version)
        loaded = []
        for segment in segments:
            if segment.id not in self._loaded:
                kind = version.kind if segment.role == "base" else "flat"
                index = faiss_ops.load(self.root / segment.path, kind)
                self._loaded[segment.id] = faiss_ops.Segment(index, kind)
            cached = self._loaded[segment.id]

            def held(segment_id: int = segment.id, index: Any = cached.index) -> np.ndarray:
                if segment_id not in self._stored:
                    self._stored[segment_id] = np.sort(faiss_ops.stored_ids(index))
                return self._stored[segment_id]

            dead = faiss_ops.tombstones(changed, segment.created_seq, held)
            loaded.append(faiss_ops.Segment(cached.index, cached.kind, params, dead))
        return loaded

    def verify(self, writer_active: bool = False) -> VerifyReport:
        """Check files against checksums and the index against the table."""
        with self.sessions() as session:
            active = store.active_version(session, self.model.id)
            report = VerifyReport(active.id if active else None)
            known = store.segment_paths(session)
            if active is None or active.kind == artifacts.MILVUS_KIND:
                report.problems.append("no index has been built (run imgvec index rebuild)")
                return report
            segments = store.segments_of(session, active.id)
            floor = min(s.created_seq for s in segments)
            changed = store.changed_since(session, self.model.id, floor)
            table_ids = set(store.vector_ids(session, self.model.id))
            report.pending_changes = sum(1 for s in changed.values() if s > active.change_seq)
        live: dict[int, int] = {}
        for segment in segments:
            report.checked_segments += 1
            path = self.root / segment.path
            if not path.exists():
                report.problems.append(f"{segment.path}: missing")
                continue
            if path.stat().st_size != segment.size_bytes:
                report.problems.append(
                    f"{segment.path}: size {path.stat().st_size} bytes, "
                    f"expected {segment.size_bytes} (truncated or replaced)"
                )
                continue
            if sha256_file(path) != segment.sha256:
                report.problems.append(f"{segment.path}: checksum mismatch (file was altered)")
                continue
            try:
                ids = faiss_ops.stored_ids(faiss_ops.load(path))
            except RuntimeError as error:
                report.problems.append(f"{segment.path}: unreadable ({error})")
                continue
            alive = [int(i) for i in ids if changed.get(int(i), -1) <= segment.created_seq]
            for image_id in alive:
                live[image_id] = live.get(image_id, 0) + 1
        twice = [i for i, count in live.items() if count > 1]
        if twice:
            report.problems.append(
                f"{len(twice)} ids are live in more than one segment (e.g. {twice[:5]})"
            )
        pending = {i for i, s in changed.items() if s > active.change_seq}
        expected = table_ids - pending
        indexed = set(live)
        if missing := expected - indexed:
            report.problems.append(
                f"{len(missing)} stored vectors are not in the index "
                f"(e.g. image ids {sorted(missing)[:5]})"
            )
        if dead := indexed - table_ids:
            report.problems.append(
                f"{len(dead)} index entries have no row in the table and "
                f"would be returned (e.g. ids {sorted(dead)[:5]})"
            )
        report.live_vectors = len(indexed)
        for path in artifacts.index_files(self.root):
            relative = artifacts.relative(path)
            if relative in known:
                continue
            if artifacts.is_ours(path):
                if not writer_active:
                    report.leftovers.append(relative)
                continue
            report.problems.append(f"{relative}: foreign file (not part of any index version)")
        return report
