"""IVF-PQ recall@10 against the size of its exact re-rank pool (issue 16): how many PQ
candidates per result ``faiss_ops.RERANK_FACTOR`` must fetch for recall@10 >= 0.95 at 1M.

The library's generator (``bench_index``: 768-d clustered vectors, fresh queries), the
library's own sizing rules (``rules.ivf_nlist``, ``rules.training_size``,
``rules.pq_subquantizers``); the candidates are re-ranked by exact cosine from the vectors in
memory, as ``faiss_ops.search`` does from the stored ones. Prints one line per (nprobe, pool).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import faiss
import numpy as np

from benchmarks import bench_index
from imgvec.index import recall, rules

K = 10


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="library size")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--nprobes", default="4,8,16")
    parser.add_argument("--pools", default="100,200,400,800", help="candidates re-ranked")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    data = bench_index.write_sample(None, args.n, args.dim, bench_index.LIBRARY_STREAM)
    queries = bench_index.write_sample(None, args.queries, args.dim, bench_index.QUERY_STREAM)
    truth = recall.exact_top_k(data, queries, K)[1]
    nlist, m = rules.ivf_nlist(args.n), rules.pq_subquantizers(args.dim)
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(args.n, rules.training_size(args.n, nlist), replace=False))
    index = faiss.IndexIVFPQ(
        faiss.IndexFlatIP(args.dim), args.dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT
    )
    index.train(data[rows])
    index.add(data)
    pools = [int(p) for p in args.pools.split(",")]
    built_s = time.perf_counter() - started
    print(f"N={args.n} dim={args.dim} IVF{nlist},PQ{m}: built in {built_s:.0f} s")
    for nprobe in (int(p) for p in args.nprobes.split(",")):
        index.nprobe = nprobe
        candidates = index.search(queries, max(pools))[1]
        for pool in pools:
            found = candidates[:, :pool]
            scores = np.einsum("qd,qkd->qk", queries, data[np.maximum(found, 0)])
            scores[found < 0] = -np.inf
            top = np.take_along_axis(found, np.argsort(-scores, axis=1)[:, :K], axis=1)
            measured = recall.recall_at_k(truth, top, K)
            print(f"nprobe {nprobe} pool {pool} (x{pool // K}): recall@10 {measured:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
