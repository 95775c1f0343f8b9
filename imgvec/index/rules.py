"""Pure rules that size and maintain a FAISS index. Each says where it comes from."""

from __future__ import annotations

import math

FLAT_MAX_VECTORS = 20_000
MIN_POINTS_PER_LIST = 39
TRAINING_POINTS_PER_LIST = 64
PQ_TARGET_BYTES = 64
COMPACT_MIN_CHANGES = 1_000
COMPACT_FRACTION = 0.10
MAX_DELTA_SEGMENTS = 16
RETRAIN_GROWTH = 2
SINGLE_THREAD_MAX_QUERIES = 16


def choose_kind(n_vectors: int, dim: int, memory_budget: int, current: str | None = None) -> str:
    """``flat`` while exact search is cheap, ``ivf`` beyond, ``ivfpq`` when vectors outgrow memory.

    FAISS wiki, "Guidelines to choose an index": exact search (IndexFlat) for up to tens of
    thousands of vectors (a flat scan of 20k x 768 float32 is ~15M multiply-adds, a few ms per
    query on one core); IVF beyond; "if memory is a concern", compress the vectors with PQ.
    autofaiss makes the same choice from ``max_index_memory_usage``. Hysteresis: an IVF library
    that shrinks goes back to flat only below half the threshold, so it does not flip-flop.
    """
    if n_vectors * dim * 4 > memory_budget:
        return "ivfpq"
    limit = FLAT_MAX_VECTORS // 2 if current in ("ivf", "ivfpq") else FLAT_MAX_VECTORS
    return "flat" if n_vectors <= limit else "ivf"


def memory_budget(total_memory: int) -> int:
    """Raw float32 vectors may take a quarter of the machine's memory before PQ compresses them.

    The rest is left to the decoder, the model (up to a few GB), the database cache and the
    user's other programs; autofaiss likewise sizes the index from a memory budget.
    """
    return total_memory // 4


def ivf_nlist(n_vectors: int) -> int:
    """The number of IVF lists: the power of two nearest to 4*sqrt(N), with >= 39 points per list.

    FAISS wiki ("Guidelines to choose an index"): K between 4*sqrt(N) and 16*sqrt(N) for N up to
    ~1M; k-means wants at least 39 training points per centroid (FAISS warns below that). autofaiss
    rounds to powers of two as well.
    """
    if n_vectors < MIN_POINTS_PER_LIST:
        return 1
    target = 4.0 * math.sqrt(n_vectors)
    nlist = 2 ** round(math.log2(target))
    while nlist > 1 and n_vectors / nlist < MIN_POINTS_PER_LIST:
        nlist //= 2
    return nlist


def training_size(n_vectors: int, nlist: int) -> int:
    """Vectors sampled to train the coarse quantizer: 64 per list (at least 39), at most N.

    FAISS's k-means warns below 39 points per centroid and subsamples above 256; the FAISS wiki
    suggests 30*K to 256*K. 64*K keeps training of a 1M-vector library in minutes on 2 cores.
    """
    return min(n_vectors, max(MIN_POINTS_PER_LIST, TRAINING_POINTS_PER_LIST) * nlist)


def pq_subquantizers(dim: int) -> int:
    """PQ code size M (bytes per vector at 8 bits): the largest divisor of dim <= 64 and <= dim/4.

    FAISS wiki ("Faiss indexes", IndexIVFPQ): M must divide d; 64-byte codes ("IVF4096,PQ64") are
    its standard example for ~1M vectors of a few hundred dimensions; at least 4 dimensions per
    sub-vector keeps each sub-quantizer meaningful.
    """
    cap = max(1, min(PQ_TARGET_BYTES, dim // 4))
    return next(m for m in range(cap, 0, -1) if dim % m == 0)


def default_nprobe(nlist: int) -> int:
    """Lists scanned per query before recall is measured: nlist/16, at least 8 (or all lists).

    A starting point only: every build measures recall and tunes nprobe (see ``tune_nprobe``).
    """
    return min(nlist, max(8, nlist // 16))


def nprobe_candidates(nlist: int) -> list[int]:
    """Powers of two up to nlist, as autofaiss scans them when tuning nprobe to a recall target."""
    candidates = [1]
    while candidates[-1] < nlist:
        candidates.append(min(nlist, candidates[-1] * 2))
    return candidates


def should_compact(base_vectors: int, changes: int, delta_segments: int) -> bool:
    """Fold deltas and tombstones into the base once the ids changed since it was built (added,
    re-embedded or removed: each counted once) pass 10% of it (at least 1,000), or once there
    are more than 16 delta segments.

    Like Milvus (seal growing segments, compact when deletions pass a ratio) and LanceDB
    (``optimize`` merges small fragments): small changes stay cheap, queries never scan more
    than a bounded number of segments, and tombstones never dominate a segment.
    """
    return (
        changes > max(COMPACT_MIN_CHANGES, COMPACT_FRACTION * base_vectors)
        or delta_segments > MAX_DELTA_SEGMENTS
    )


def retrain_reason(
    kind: str,
    wanted_kind: str,
    n_vectors: int,
    nlist: int | None,
    recall: float | None,
    target: float,
) -> str | None:
    """Why the base must be rebuilt (trained anew) rather than compacted, or None.

    - the size calls for another kind of index (``choose_kind``);
    - the library outgrew its training: the nlist rule now asks for at least twice the lists,
      i.e. about 4x the vectors it was trained on (autofaiss retrains on growth the same way);
    - measured recall fell below the target even at the largest nprobe tried.
    """
    if kind != wanted_kind:
        return f"{n_vectors} vectors call for a {wanted_kind} index, not {kind}"
    if nlist and ivf_nlist(n_vectors) >= RETRAIN_GROWTH * nlist:
        return f"the library outgrew its training ({nlist} lists; {n_vectors} vectors)"
    if recall is not None and recall < target:
        return f"measured recall@10 {recall:.3f} is below the target {target:.2f}"
    return None


def filter_strategy(matches: int) -> str:
    """How to search under a metadata filter: ``exact`` over the matches, or ``overfetch``.

    A selective filter (at most as many matches as exact search handles cheaply, see
    ``choose_kind``) is answered exactly from the matches' stored vectors: always k results, no
    index needed. A broad one searches the index for more than k candidates and keeps the matches
    (the post-filtering strategy of vector databases such as Milvus and LanceDB).
    """
    return "exact" if matches <= FLAT_MAX_VECTORS else "overfetch"


def overfetch(k: int, matches: int, total: int) -> int:
    """Candidates to fetch so that about 2k of them match: k * total / matches * 2, at most total.

    With a share s = matches/total of the library matching, n candidates hold about s*n matches;
    twice the need absorbs uneven spread. If it still falls short, the caller doubles it.
    """
    if matches <= 0:
        return 0
    return min(total, max(k, math.ceil(2 * k * total / matches)))


def search_threads(n_queries: int, available: int) -> int:
    """FAISS threads for one search call: one for a handful of queries, all for larger batches.

    FAISS parallelises a search over its queries (FAISS wiki, "Threads and asynchronous calls"),
    so a single query gains nothing from OpenMP and pays for waking its threads, and, on a busy
    machine, for waiting on a descheduled one; OpenSearch's k-NN plugin searches on one thread
    for this reason (opensearch-project/k-NN#965). Measured here (BENCHMARKS.md, index section):
    single queries on 100k flat vectors, p50 13.9 ms on one thread against 65.8 ms on two.
    """
    return 1 if n_queries <= SINGLE_THREAD_MAX_QUERIES else max(1, available)
