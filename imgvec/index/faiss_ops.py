"""FAISS indexes over L2-normalised vectors (inner product = cosine); ids are image row ids.

Kinds: ``flat`` (exact), ``ivf`` (IVF-Flat) and ``ivfpq`` (IVF with 8-bit PQ codes, re-ranked
exactly from the stored vectors). IVF kinds use IVF's own id map (a hashtable direct map), not
IndexIDMap2, which returns wrong ids after ``remove_ids`` on IVF.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from imgvec.atomic import atomic_write
from imgvec.errors import ImgvecError
from imgvec.index import recall, rules

KINDS = ("flat", "ivf", "ivfpq")
RERANK_FACTOR = 20
"""ivfpq fetches k x 20 candidates by PQ distance, then ranks them by exact cosine. Measured at
1M x 768-d (``benchmarks/bench_rerank.py``, IVF4096,PQ64, BENCHMARKS.md): recall@10 0.902 at
x10, 0.994 at x20, 1.000 at x40, the same at nprobe 4, 8 and 16, so the pool, not nprobe, is
the limit; on clustered 32- and 128-d vectors x4 gave 0.80 and x10 0.97."""

VectorLookup = Callable[[np.ndarray], np.ndarray]
"""ids -> their float32 vectors, in the same order (for exact re-ranking)."""


@dataclass
class BuiltIndex:
    index: faiss.Index
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    train_size: int | None = None
    recall: float | None = None


Chunks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]
"""A fresh pass over a library's vectors: ``(ids, vectors)`` chunks, int64 (c,) and float32
(c, d), the same rows in the same order on every call (:func:`build` reads them twice)."""

CHUNK_ROWS = 10_000
"""Rows per chunk when in-memory arrays are built like a stream (:func:`array_chunks`)."""


def array_chunks(ids: np.ndarray, vectors: np.ndarray, rows: int = CHUNK_ROWS) -> Chunks:
    """In-memory ``ids`` and ``vectors`` as :data:`Chunks`."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(ids), rows):
            yield ids[start : start + rows], vectors[start : start + rows]

    return chunks


def array_lookup(ids: np.ndarray, vectors: np.ndarray) -> VectorLookup:
    """Exact vectors by id from in-memory arrays (a dict of every id: for tests and tools)."""
    position = {int(i): p for p, i in enumerate(ids)}
    return lambda wanted: np.asarray(vectors[[position[int(i)] for i in wanted]], np.float32)


def build(
    ids: np.ndarray,
    vectors: np.ndarray,
    kind: str,
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    target_recall: float = recall.DEFAULT_TARGET,
    seed: int = 0,
) -> BuiltIndex:
    """:func:`build_streamed` over in-memory ``ids`` (N,) and ``vectors`` (N, d)."""
    return build_streamed(
        array_chunks(ids, vectors),
        len(ids),
        vectors.shape[1],
        kind,
        array_lookup(ids, vectors),
        nlist=nlist,
        nprobe=nprobe,
        target_recall=target_recall,
        seed=seed,
    )


def build_streamed(
    chunks: Chunks,
    n: int,
    dim: int,
    kind: str,
    lookup: VectorLookup,
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    target_recall: float = recall.DEFAULT_TARGET,
    seed: int = 0,
    progress: Callable[[int], None] = lambda _rows: None,
) -> BuiltIndex:
    """A base index of ``kind`` over ``n`` vectors of ``dim`` read in chunks, never all at once.

    IVF kinds read the chunks twice: first to keep the training sample
    (:func:`imgvec.index.rules.training_size` rows) and the recall queries
    (:data:`imgvec.index.recall.SAMPLE_QUERIES` rows); then, once trained, to add each chunk
    and to find the queries' exact neighbours (:class:`imgvec.index.recall.RunningTopK`).
    nprobe is tuned to ``target_recall`` (unless given, which is then measured); IVF-PQ
    re-ranks with ``lookup`` as searches do. Beyond the index itself, memory holds the
    training sample, one chunk and the quantizer: at 1M x 768-d IVF-Flat, 0.8 GB of sample
    beside the 3 GB index, where reading every vector first took 9.5 GB (BENCHMARKS.md).
    ``progress(rows)`` is called after each chunk of either pass.

    Raises ImgvecError for an unknown kind, or when FAISS refuses to train (for example fewer
    vectors than lists).
    """
    check_kind(kind)
    if kind == "flat":
        index = flat(np.zeros(0, np.int64), np.zeros((0, dim), np.float32))
        for chunk_ids, chunk_vectors in chunks():
            index.add_with_ids(
                np.ascontiguousarray(chunk_vectors, np.float32),
                np.ascontiguousarray(chunk_ids, np.int64),
            )
            progress(len(chunk_ids))
        return BuiltIndex(index, "flat")
    nlist = nlist or rules.ivf_nlist(n)
    train_rows = _training_rows(n, kind, nlist, seed)
    query_rows = np.sort(recall.sample_rows(n))
    sample, query_ids, queries = _rows_of(chunks, train_rows, query_rows, dim, progress)
    built = _trained(kind, dim, n, nlist, sample, len(train_rows), seed)
    del sample
    truth = recall.RunningTopK(queries)
    for chunk_ids, chunk_vectors in chunks():
        chunk_ids = np.ascontiguousarray(chunk_ids, np.int64)
        chunk_vectors = np.ascontiguousarray(chunk_vectors, np.float32)
        built.index.add_with_ids(chunk_vectors, chunk_ids)
        truth.add(chunk_ids, chunk_vectors)
        progress(len(chunk_ids))
    _tune(built, query_ids, queries, truth.ids, lookup, nprobe, target_recall)
    return built


def train(
    ids: np.ndarray, vectors: np.ndarray, kind: str, *, nlist: int | None = None, seed: int = 0
) -> BuiltIndex:
    """THE index construction from in-memory arrays: ``vectors`` (N, d) float32 under int64
    ``ids``, in an index of ``kind``; IVF kinds are trained on the sample :func:`build_streamed`
    would take, with ``nlist`` lists (default :func:`imgvec.index.rules.ivf_nlist`); nprobe is
    not yet set.

    Raises ImgvecError for an unknown kind, or when FAISS refuses to train.
    """
    check_kind(kind)
    n, dim = vectors.shape
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if kind == "flat":
        return BuiltIndex(flat(ids, vectors), "flat")
    nlist = nlist or rules.ivf_nlist(n)
    rows = _training_rows(n, kind, nlist, seed)
    built = _trained(kind, dim, n, nlist, vectors[rows], len(rows), seed)
    built.index.add_with_ids(vectors, ids)
    return built


def _training_rows(n: int, kind: str, nlist: int, seed: int) -> np.ndarray:
    """Sorted rows of the training sample (:func:`imgvec.index.rules.training_size`)."""
    train_size = rules.training_size(n, nlist)
    if kind == "ivfpq":  # 256 centroids per sub-quantizer want ~39 points each
        train_size = min(n, max(train_size, 256 * rules.MIN_POINTS_PER_LIST))
    if train_size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, train_size, replace=False))


def _rows_of(
    chunks: Chunks,
    train_rows: np.ndarray,
    query_rows: np.ndarray,
    dim: int,
    progress: Callable[[int], None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass: the vectors at ``train_rows``, and the ids and vectors at ``query_rows``."""
    sample = np.zeros((len(train_rows), dim), np.float32)
    query_ids = np.full(len(query_rows), -1, np.int64)
    queries = np.zeros((len(query_rows), dim), np.float32)
    seen = 0
    for chunk_ids, chunk_vectors in chunks():
        end = seen + len(chunk_ids)
        for wanted, into in ((train_rows, sample), (query_rows, queries)):
            lo, hi = np.searchsorted(wanted, [seen, end])
            into[lo:hi] = chunk_vectors[wanted[lo:hi] - seen]
        lo, hi = np.searchsorted(query_rows, [seen, end])
        query_ids[lo:hi] = np.asarray(chunk_ids)[query_rows[lo:hi] - seen]
        seen = end
        progress(len(chunk_ids))
    if seen < (train_rows[-1] + 1 if len(train_rows) else 0):
        raise ImgvecError(f"the library changed while the index was built ({seen} rows read)")
    return sample, query_ids, queries


def _trained(
    kind: str, dim: int, n: int, nlist: int, sample: np.ndarray, train_size: int, seed: int
) -> BuiltIndex:
    """An empty IVF index of ``kind``, its coarse quantizer (and PQ codebooks) trained."""
    quantizer = faiss.IndexFlatIP(dim)
    params: dict[str, Any] = {"nlist": nlist}
    if kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        m = rules.pq_subquantizers(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        params["m"] = m
    index.cp.seed = seed
    try:
        index.train(np.ascontiguousarray(sample, np.float32))
    except RuntimeError as error:  # FAISS's own checks, e.g. fewer points than clusters
        detail = str(error).strip().splitlines()[-1].rpartition("failed: ")[2]
        raise ImgvecError(f"cannot train a {kind} index on {n} vectors: {detail}") from None
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    return BuiltIndex(index, kind, params, train_size=train_size)


def check_kind(kind: str) -> None:
    """Raises ImgvecError unless ``kind`` is one of :data:`KINDS`."""
    if kind not in KINDS:
        raise ImgvecError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")


def flat(ids: np.ndarray, vectors: np.ndarray) -> faiss.Index:
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    if len(ids):
        index.add_with_ids(
            np.ascontiguousarray(vectors, dtype=np.float32),
            np.ascontiguousarray(ids, dtype=np.int64),
        )
    return index


def _tune(
    built: BuiltIndex,
    query_ids: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    lookup: VectorLookup,
    nprobe: int | None,
    target: float,
) -> None:
    def search_at(probe: int) -> np.ndarray:
        built.params["nprobe"] = probe
        return search(
            [Segment(built.index, built.kind, built.params)], queries, recall.K + 1, lookup
        )[1]

    nlist = built.params["nlist"]
    if nprobe is not None:
        result = recall.Tuning(
            nprobe, recall.recall_at_k(truth, search_at(nprobe), own=query_ids), {}
        )
    else:
        result = recall.tune_nprobe(search_at, query_ids, truth, nlist, target)
    built.params["nprobe"] = result.nprobe
    built.recall = result.recall


def retune_ivf(index: faiss.Index, nlist: int, target: float) -> recall.Tuning:
    """nprobe of an IVF-Flat index tuned to ``target`` recall@10 on a sample of its own vectors;
    the truth is the index itself at nprobe = nlist, which is exact, so no stored vectors are
    needed."""
    query_ids = recall.sample_ids(stored_ids(index))
    queries = np.vstack([index.reconstruct(int(i)) for i in query_ids])
    ivf = faiss.extract_index_ivf(index)

    def search_at(probe: int) -> np.ndarray:
        return ivf.search(queries, recall.K + 1, params=faiss.SearchParametersIVF(nprobe=probe))[1]

    return recall.tune_nprobe(search_at, query_ids, search_at(nlist), nlist, target)


# --- files ---------------------------------------------------------------------------------------


def save(index: faiss.Index, path: Path) -> None:
    atomic_write(path, lambda temp: faiss.write_index(index, str(temp)))


def load(path: Path, kind: str | None = None) -> faiss.Index:
    """Open an index file: memory-mapped when ``kind`` is given, so a query does not read it all.

    IVF kinds map their inverted lists (IO_FLAG_MMAP), flat ones their codes (IO_FLAG_MMAP_IFC);
    FAISS refuses both flags at once. Without ``kind`` the file is read whole (to modify it).
    Raises ImgvecError (one line) for a file FAISS cannot read: damaged at its recorded size,
    which only a checksum (``imgvec index verify``) tells apart before.
    """
    try:
        if kind is None:
            return faiss.read_index(str(path))
        flag = faiss.IO_FLAG_MMAP_IFC if kind == "flat" else faiss.IO_FLAG_MMAP
        return faiss.read_index(str(path), flag)
    except RuntimeError:  # FAISS's message names its own source lines, not the problem
        raise ImgvecError(
            f"the index file {path} is damaged (FAISS cannot read it); build it again from "
            "the stored vectors: imgvec index rebuild"
        ) from None


# --- searching across segments -------------------------------------------------------------------


@dataclass
class Segment:
    """A loaded segment, with the ids that are dead in it (tombstones)."""

    index: faiss.Index
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    dead: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    _selectors: tuple[Any, Any] | None = field(default=None, init=False, repr=False)
    """FAISS keeps raw pointers to selectors, so the segment owns them (built once)."""

    def selector(self) -> faiss.IDSelector | None:
        """Excludes the dead ids inside the search; None when there are none."""
        if not len(self.dead):
            return None
        if self._selectors is None:
            batch = faiss.IDSelectorBatch(self.dead)
            self._selectors = (batch, faiss.IDSelectorNot(batch))
        return self._selectors[1]


def tombstones(
    changed: dict[int, int], created_seq: int, held: Callable[[], np.ndarray]
) -> np.ndarray:
    """THE tombstones of a segment written at change ``created_seq``: the ids it holds that
    changed after it (``changed``: image id -> its latest change seq, as
    :func:`imgvec.storage.store.changed_since` gives), int64, sorted. ``held()`` gives the
    segment's ids, sorted (:func:`stored_ids`); it is called only when some id changed after the
    segment. Only held ids are kept: FAISS searches a flat index with an id selector without
    BLAS, about 10x slower (BENCHMARKS.md, near duplicates)."""
    ids = np.fromiter(changed.keys(), np.int64, len(changed))
    seqs = np.fromiter(changed.values(), np.int64, len(changed))
    dead = np.sort(ids[seqs > created_seq])
    if not len(dead):
        return dead
    return np.intersect1d(dead, held(), assume_unique=True)


def search(
    segments: Sequence[Segment], queries: np.ndarray, k: int, lookup: VectorLookup | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, ids) over all segments, dead ids filtered inside FAISS; -1 pads."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    available = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(rules.search_threads(len(queries), available))
    try:
        return _search(segments, queries, k, lookup)
    finally:
        faiss.omp_set_num_threads(available)


def _search(
    segments: Sequence[Segment], queries: np.ndarray, k: int, lookup: VectorLookup | None
) -> tuple[np.ndarray, np.ndarray]:
    n = len(queries)
    all_scores, all_ids = [np.full((n, 0), -np.inf, np.float32)], [np.zeros((n, 0), np.int64)]
    for segment in segments:
        if segment.index.ntotal == 0:
            continue
        fetch = k * RERANK_FACTOR if segment.kind == "ivfpq" and lookup else k
        fetch = min(fetch, segment.index.ntotal)
        scores, ids = segment.index.search(queries, fetch, params=_search_params(segment))
        if segment.kind == "ivfpq" and lookup is not None:
            scores = _exact_scores(queries, ids, lookup)
        all_scores.append(np.where(ids >= 0, scores, -np.inf).astype(np.float32))
        all_ids.append(ids)
    scores, ids = np.hstack(all_scores), np.hstack(all_ids)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top_scores = np.take_along_axis(scores, order, axis=1)
    top_ids = np.where(np.isfinite(top_scores), np.take_along_axis(ids, order, axis=1), -1)
    if top_ids.shape[1] < k:
        pad = k - top_ids.shape[1]
        top_ids = np.hstack([top_ids, np.full((n, pad), -1, np.int64)])
        top_scores = np.hstack([top_scores, np.full((n, pad), -np.inf, np.float32)])
    return top_scores, top_ids


def _search_params(segment: Segment) -> faiss.SearchParameters:
    selector = segment.selector()
    if segment.kind in ("ivf", "ivfpq"):
        return faiss.SearchParametersIVF(sel=selector, nprobe=int(segment.params["nprobe"]))
    return faiss.SearchParameters(sel=selector)


def _exact_scores(queries: np.ndarray, ids: np.ndarray, lookup: VectorLookup) -> np.ndarray:
    scores = np.full(ids.shape, -np.inf, np.float32)
    valid = ids >= 0
    if valid.any():
        vectors = lookup(ids[valid])
        rows = np.nonzero(valid)[0]
        scores[valid] = np.einsum("ij,ij->i", queries[rows], vectors)
    return scores


# --- maintenance ---------------------------------------------------------------------------------


def stored_ids(index: faiss.Index) -> np.ndarray:
    """Every id stored in an index (live or not), for verification."""
    if isinstance(index, faiss.IndexIDMap2 | faiss.IndexIDMap):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    ivf = faiss.extract_index_ivf(index)
    invlists = ivf.invlists
    parts = []
    for list_no in range(ivf.nlist):
        size = invlists.list_size(list_no)
        if size:
            pointer = invlists.get_ids(list_no)
            parts.append(faiss.rev_swig_ptr(pointer, size).copy())
            invlists.release_ids(list_no, pointer)
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def fold(
    base: faiss.Index, dead_in_base: np.ndarray, delta_ids: np.ndarray, delta_vectors: np.ndarray
) -> faiss.Index:
    """Remove dead ids from a (fully loaded) base and add the deltas' live vectors to it.

    IVF kinds keep their trained quantizer: the new vectors go to their nearest lists.
    """
    if len(dead_in_base):
        dead = np.ascontiguousarray(dead_in_base, np.int64)
        base.remove_ids(faiss.IDSelectorArray(len(dead), faiss.swig_ptr(dead)))
    if len(delta_ids):
        base.add_with_ids(
            np.ascontiguousarray(delta_vectors, np.float32),
            np.ascontiguousarray(delta_ids, np.int64),
        )
    return base
