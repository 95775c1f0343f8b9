"""FAISS indexes over L2-normalised vectors: inner product = cosine similarity. ids = image ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from imgvec import index_rules
from imgvec.atomic import atomic_write

KINDS = ("flat", "ivf")
TRAINING_POINTS_PER_LIST = 256
"""FAISS's k-means samples at most 256 points per centroid; more training data is not used."""


@dataclass
class BuiltIndex:
    index: faiss.Index
    kind: str
    params: dict[str, Any] = field(default_factory=dict)


def build(
    ids: np.ndarray, vectors: np.ndarray, kind: str | None = None, seed: int = 0
) -> BuiltIndex:
    """Build an index holding ``vectors`` under ``ids``; ``kind`` None picks by library size."""
    n, dim = vectors.shape
    kind = kind or index_rules.choose_kind(n)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if kind == "flat":
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        index.add_with_ids(vectors, ids)
        return BuiltIndex(index, "flat")
    if kind != "ivf":
        raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    nlist = index_rules.ivf_nlist(n)
    nprobe = index_rules.ivf_nprobe(nlist)
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = seed
    rng = np.random.default_rng(seed)
    sample = vectors
    if n > nlist * TRAINING_POINTS_PER_LIST:
        sample = vectors[rng.choice(n, nlist * TRAINING_POINTS_PER_LIST, replace=False)]
    ivf.train(sample)
    # IVF's own id map (not IndexIDMap2, which returns wrong ids after remove_ids on IVF).
    ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
    ivf.add_with_ids(vectors, ids)
    ivf.nprobe = nprobe
    return BuiltIndex(ivf, "ivf", {"nlist": nlist, "nprobe": nprobe, "trained_on": len(sample)})


def save(index: faiss.Index, path: Path) -> None:
    atomic_write(path, lambda temp: faiss.write_index(index, str(temp)))


def load(path: Path, params: dict[str, Any]) -> faiss.Index:
    index = faiss.read_index(str(path))
    if "nprobe" in params:
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores (cosine) and ids, best first; rows are padded with id -1 when fewer than k exist."""
    k = max(1, min(k, max(index.ntotal, 1)))
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return scores, ids
