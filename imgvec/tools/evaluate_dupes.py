"""``imgvec eval --dupes``: precision and recall of ``imgvec dupes`` on a seeded near-duplicate
set built from labelled photos (:mod:`imgvec.tools.dupeset`).

Pairs are what is counted: two files of the same source photo are a duplicate pair; two files
of different photos are not, and those of different photos in one ground-truth group (UKBench:
the same object from another viewpoint) are the hard negatives, "sibling pairs". A pair is
predicted when ``dupes`` puts both files in one group.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

from imgvec import scan
from imgvec.api import Library
from imgvec.tools import dupeset
from imgvec.tools.evaluate import load_groundtruth
from imgvec.types import Data

SWEEP = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
"""Cosine cuts the report sweeps (0.5 to 0.95)."""
RECALL_TOLERANCE = 0.002
"""How much pair recall :func:`choose_cut` may give up for a higher (cheaper) cut."""


@dataclass(frozen=True)
class PairCounts(Data):
    pairs: int
    """Duplicate pairs of the kind (the denominator of recall)."""
    found: int
    recall: float
    false_pairs: int
    """Predicted pairs of the kind that are not duplicates."""


@dataclass(frozen=True)
class CutPoint(Data):
    cut: float
    precision: float
    recall: float
    sibling_pairs: int


@dataclass
class DupesEvalReport(Data):
    model: str
    photos: int
    files: int
    seed: int
    threshold: float
    threshold_source: str
    duplicate_pairs: int
    sibling_pairs: int
    """Hard-negative pairs in the set (same ground-truth group, other photo)."""
    precision: float
    recall: float
    false_pairs: int
    siblings_grouped: int
    """Sibling pairs put in one group (the goal: 0)."""
    per_transform: dict[str, PairCounts] = field(default_factory=dict)
    """Pairs of each variant with its original."""
    sweep: list[CutPoint] = field(default_factory=list)
    """The pair rule at higher cuts: pairs grouped at ``threshold`` whose cosine reaches it."""
    suggested_cut: float = 0.0
    """:func:`choose_cut` of the sweep."""
    seconds_add: float = 0.0
    seconds_dupes: float = 0.0


def choose_cut(sweep: Sequence[CutPoint], tolerance: float = RECALL_TOLERANCE) -> float:
    """The highest cut whose recall is within ``tolerance`` of the best recall of the sweep
    (a higher cut checks fewer candidate pairs on pixels; the pixel signals keep precision)."""
    best = max(point.recall for point in sweep)
    return max(point.cut for point in sweep if point.recall >= best - tolerance)


def pair_metrics(
    files: Sequence[dupeset.DupeFile],
    grouped: Iterable[tuple[str, str]],
) -> tuple[int, int, int, int, int, int]:
    """(duplicate pairs, found, false pairs, sibling pairs, siblings grouped, predicted) of the
    predicted pairs ``grouped`` (file paths as ``str(DupeFile.path)``, either order)."""
    by_path = {str(f.path): f for f in files}
    sources: dict[str, int] = {}
    groups: dict[str, set[str]] = {}
    for f in files:
        sources[f.source] = sources.get(f.source, 0) + 1
        groups.setdefault(f.group, set()).add(f.source)
    duplicate_pairs = sum(n * (n - 1) // 2 for n in sources.values())
    sibling_pairs = sum(
        sources[a] * sources[b]
        for members in groups.values()
        for a, b in combinations(sorted(members), 2)
    )
    found = false = siblings = predicted = 0
    for a, b in set(tuple(sorted(pair)) for pair in grouped):
        fa, fb = by_path[a], by_path[b]
        predicted += 1
        if fa.source == fb.source:
            found += 1
        else:
            false += 1
            siblings += fa.group == fb.group
    return duplicate_pairs, found, false, sibling_pairs, siblings, predicted


def evaluate_dupes(
    library: Library,
    folder: str | os.PathLike[str],
    groundtruth: str | os.PathLike[str],
    *,
    model: str | None = None,
    weights: str | None = None,
    layer: str | None = None,
    threshold: float | None = None,
    seed: int = 0,
    limit: int | None = None,
) -> DupesEvalReport:
    """Build the set from the labelled photos (the first ``limit`` of the ground truth, sorted)
    in the library's folder (``dupeset-seedN``), add it to ``library`` with the model, run
    ``dupes`` and count pairs."""
    truth = load_groundtruth(groundtruth)
    names = sorted(truth)[:limit] if limit else sorted(truth)
    scratch = library.paths.root / f"dupeset-seed{seed}"  # kept with the library, to look at
    sources = [(Path(folder) / name, truth[name]) for name in names]
    files = dupeset.build(sources, scratch, seed)
    files = [
        dupeset.DupeFile(Path(scan.normalize(f.path)), f.source, f.variant, f.group) for f in files
    ]
    started = time.perf_counter()
    added = library.add([scratch], model=model, weights=weights, layer=layer)
    seconds_add = time.perf_counter() - started
    if added.failed:
        raise RuntimeError(f"{added.failed} evaluation files could not be added")
    started = time.perf_counter()
    report = library.dupes(threshold=threshold)
    seconds_dupes = time.perf_counter() - started
    ids, vectors = library.vectors()
    paths = library.sql("SELECT id, path FROM photos")
    path_of = {int(i): p for i, p in paths.rows}
    position = {path_of[int(i)]: n for n, i in enumerate(ids)}
    grouped = [(a.path, b.path) for g in report.groups for a, b in combinations(g.members, 2)]

    def cosine(pair: tuple[str, str]) -> float:
        return float(vectors[position[pair[0]]] @ vectors[position[pair[1]]])

    duplicate_pairs, found, false, sibling_pairs, siblings, predicted = pair_metrics(files, grouped)
    result = DupesEvalReport(
        model=report.model,
        photos=len(names),
        files=len(files),
        seed=seed,
        threshold=report.threshold,
        threshold_source=report.threshold_source,
        duplicate_pairs=duplicate_pairs,
        sibling_pairs=sibling_pairs,
        precision=round(found / predicted, 4) if predicted else 1.0,
        recall=round(found / duplicate_pairs, 4) if duplicate_pairs else 1.0,
        false_pairs=false,
        siblings_grouped=siblings,
        seconds_add=round(seconds_add, 2),
        seconds_dupes=round(seconds_dupes, 2),
    )
    originals = {f.source: str(f.path) for f in files if f.variant == "original"}
    source_of = {str(f.path): f.source for f in files}
    for variant in dupeset.VARIANTS:
        mine = {str(f.path): f for f in files if f.variant == variant}
        hits = {frozenset(p) for p in grouped if (p[0] in mine) != (p[1] in mine)}
        wanted = {frozenset((str(f.path), originals[f.source])) for f in mine.values()}
        wrong = sum(len({source_of[p] for p in pair}) > 1 for pair in hits)
        result.per_transform[variant] = PairCounts(
            pairs=len(wanted),
            found=len(wanted & hits),
            recall=round(len(wanted & hits) / len(wanted), 4) if wanted else 1.0,
            false_pairs=wrong,
        )
    for cut in SWEEP:
        if cut < report.threshold:
            continue
        kept = [pair for pair in grouped if cosine(pair) >= cut]
        total, hit, wrong, _, sib, predicted_here = pair_metrics(files, kept)
        result.sweep.append(
            CutPoint(
                cut,
                round(hit / predicted_here, 4) if predicted_here else 1.0,
                round(hit / total, 4),
                sib,
            )
        )
    if result.sweep:
        result.suggested_cut = choose_cut(result.sweep)
    return result
