"""Retrieval quality of a library on a labelled folder (``imgvec eval``).

The caller adds the folder's images first (``library.add([folder], model=..., weights=...)``);
this module only queries. Every ground-truth image is used as a query with its stored vector:

- mAP: average precision over the other members of the query's group (the query itself is
  removed from the ranking), averaged over queries;
- recall@k: share of the other group members found in the top k (query excluded);
- N-S score (UKBench): group members in the top 4 *including* the query itself; 4.0 is perfect.
  Only defined when every group has exactly 4 images.

:func:`copy_detection` asks a different question: given an edited copy of a library image
(:mod:`imgvec.tools.perturb`), is the original the first result?
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgvec import scan
from imgvec.api import Library, QueryResult
from imgvec.decode.images import decode, read_file
from imgvec.errors import ImageError, ImgvecError
from imgvec.index import recall
from imgvec.tools import perturb as tf

DEFAULT_KS = (1, 4, 10)
BATCH = 64
GROUP_COLUMNS = ("group", "group_id")
NS_GROUP_SIZE = 4
NS_DEPTH = 4


@dataclass
class EvalReport:
    """What ``imgvec eval`` reports; ``transforms`` is copy-detection top-1 by transform."""

    model: str
    images: int
    groups: int
    map: float
    recall_at: dict[int, float]
    ns_score: float | None
    transforms: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["recall_at"] = {str(k): v for k, v in self.recall_at.items()}
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


# --- ground truth ----------------------------------------------------------------------------


def load_groundtruth(path: str | os.PathLike[str]) -> dict[str, str]:
    """``filename -> group`` from a CSV with a header: ``filename`` and ``group`` (or
    ``group_id``, as in the UKBench files); other columns are ignored. Filenames are relative to
    the evaluated folder."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            group_column = next((c for c in GROUP_COLUMNS if c in columns), None)
            if "filename" not in columns or group_column is None:
                raise ImgvecError(
                    f"{path}: the ground truth needs a header with columns 'filename' and 'group' "
                    f"(or 'group_id'); found: {', '.join(columns) or 'no header'}"
                )
            reader.fieldnames = columns
            groundtruth: dict[str, str] = {}
            for line, row in enumerate(reader, start=2):
                name = (row.get("filename") or "").strip()
                group = (row.get(group_column) or "").strip()
                if not name or not group:
                    raise ImgvecError(f"{path}:{line}: empty filename or group")
                if groundtruth.get(name, group) != group:
                    raise ImgvecError(f"{path}:{line}: {name} is listed in two groups")
                groundtruth[name] = group
    except FileNotFoundError:
        raise ImgvecError(f"ground truth file not found: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ImgvecError(f"cannot read ground truth {path}: {error}") from error
    if not groundtruth:
        raise ImgvecError(f"{path}: the ground truth lists no images")
    return groundtruth


# --- metric math (pure, on rankings) ---------------------------------------------------------


def average_precision(relevant_flags: Sequence[bool], n_relevant: int) -> float:
    """AP of one ranking: mean over the relevant items of precision at their rank; relevant items
    missing from the ranking count as precision 0 (so a truncated ranking cannot flatter)."""
    if n_relevant <= 0:
        raise ValueError("average precision needs at least one relevant item")
    hits = 0
    total = 0.0
    for rank, relevant in enumerate(relevant_flags, start=1):
        if relevant:
            hits += 1
            total += hits / rank
    return total / n_relevant


# --- evaluation ------------------------------------------------------------------------------


def evaluate_folder(
    library: Library,
    folder: str | os.PathLike[str],
    groundtruth: str | os.PathLike[str],
    *,
    model: str | None = None,
    weights: str | None = None,
    layer: str | None = None,
    transforms: bool = False,
    seed: int = 0,
    per_transform: int | None = None,
) -> EvalReport:
    """``imgvec eval``: add the labelled folder to ``library`` with the model, measure retrieval
    (:func:`evaluate`) and, with ``transforms``, copy detection (:func:`copy_detection`)."""
    truth = load_groundtruth(groundtruth)
    library.add([folder], model=model, weights=weights, layer=layer)
    report = evaluate(library, folder, truth)
    if transforms:
        report.transforms = copy_detection(
            library, folder, sorted(truth), seed=seed, per_transform=per_transform
        )
    return report


def _library_size(library: Library) -> int:
    return library.status(failure_limit=0).images


def _query_all(library: Library, paths: list[str], k: int) -> list[QueryResult]:
    """Query in batches; an image the library cannot answer for is an error, not a silent skip."""
    results: list[QueryResult] = []
    for start in range(0, len(paths), BATCH):
        batch = library.query(paths[start : start + BATCH], k=k)
        failed = [r for r in batch if r.error is not None]
        if failed:
            raise ImgvecError(f"cannot query {failed[0].query}: {failed[0].error}")
        results.extend(batch)
    return results


def _resolve(folder: Path, names: Iterable[str]) -> dict[str, str]:
    """Stored (absolute, normalised) path -> ground-truth name, checking every file exists."""
    resolved = {scan.normalize(folder / name): name for name in names}
    missing = [name for path, name in resolved.items() if not os.path.isfile(path)]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ImgvecError(f"{len(missing)} ground-truth images are not in {folder}: {shown}")
    return resolved


def evaluate(
    library: Library,
    folder: Path,
    groundtruth: dict[str, str],
    ks: Sequence[int] = DEFAULT_KS,
    depth: int | None = None,
) -> EvalReport:
    """Query every ground-truth image against the library and score the rankings.

    ``depth`` caps how many results each query ranks (default: the whole library, so AP is exact;
    group members beyond a cap count as not found). Images in the library but not in the ground
    truth take part as distractors. Groups of one image have nothing to find and are not queried.
    """
    model = library.model()
    if model is None:
        raise ImgvecError("the library has no model yet; add the folder first")
    ks = sorted(set(ks))
    if not ks or ks[0] < 1:
        raise ImgvecError("every k must be at least 1")
    folder = Path(folder)
    name_of = _resolve(folder, groundtruth)
    sizes = Counter(groundtruth.values())
    queries = [p for p, name in name_of.items() if sizes[groundtruth[name]] > 1]
    if not queries:
        raise ImgvecError("no group has two images: nothing to retrieve")
    size = _library_size(library)
    k = max(size, 1) if depth is None else max(depth, ks[-1] + 1, NS_DEPTH)
    results = _query_all(library, queries, min(k, max(size, 1)))
    unstored = [r.query for r in results if r.vector_source != "stored"]
    if unstored:
        raise ImgvecError(
            f"{len(unstored)} ground-truth images are not in the library or changed since they "
            f"were added (e.g. {unstored[0]}); add the folder first: imgvec add {folder}"
        )

    ns_defined = set(sizes.values()) == {NS_GROUP_SIZE}
    number = {path: n for n, path in enumerate(queries)}
    members: dict[str, set[int]] = defaultdict(set)
    for path in queries:
        members[groundtruth[name_of[path]]].add(number[path])
    aps: list[float] = []
    recalls: dict[int, list[float]] = defaultdict(list)
    ns_total = 0
    for query, result in zip(queries, results, strict=True):
        group = groundtruth[name_of[query]]
        n_relevant = sizes[group] - 1
        ranked = [hit.path for hit in result.hits]
        others = [p for p in ranked if p != query]
        flags = [p in name_of and groundtruth[name_of[p]] == group for p in others]
        aps.append(average_precision(flags, n_relevant))
        relevant = [members[group] - {number[query]}]
        found = [[number.get(p, -1) for p in others]]
        for cutoff in ks:
            recalls[cutoff].append(recall.recall_at_k(relevant, found, cutoff))
        top = ranked[:NS_DEPTH]
        ns_total += sum(p in name_of and groundtruth[name_of[p]] == group for p in top)
    return EvalReport(
        model=model.label(),
        images=size,
        groups=len(sizes),
        map=float(np.mean(aps)),
        recall_at={cutoff: float(np.mean(recalls[cutoff])) for cutoff in ks},
        ns_score=ns_total / len(queries) if ns_defined else None,
    )


# --- copy detection --------------------------------------------------------------------------


def copy_detection(
    library: Library,
    folder: Path,
    groundtruth_files: list[str],
    transforms: list[str] | None = None,
    seed: int = 0,
    per_transform: int | None = None,
) -> dict[str, float]:
    """Top-1 copy detection by transform: the share of edited copies whose first result is the
    original image. Variants are written to a temporary folder (JPEG quality 95, or the
    transform's own quality for ``jpeg``) and are never added to the library.

    ``transforms`` defaults to all of :data:`imgvec.tools.perturb.TRANSFORMS`. ``per_transform``
    limits each transform to a seeded random sample of that many images (the same sample for
    every transform, so their scores compare like for like). A variant's randomness depends on
    ``seed`` and the image's position in ``groundtruth_files``.
    """
    names = tf.check_names(transforms)
    if per_transform is not None and per_transform < 1:
        raise ImgvecError("per_transform must be at least 1")
    folder = Path(folder)
    originals = list(_resolve(folder, groundtruth_files))
    chosen = list(range(len(originals)))
    if per_transform is not None and per_transform < len(chosen):
        sample = np.random.default_rng([seed, len(originals)]).choice(
            len(chosen), per_transform, replace=False
        )
        chosen = sorted(int(i) for i in sample)
    scores: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="imgvec-eval-") as scratch:
        sources = {}
        for index in chosen:
            try:
                sources[index] = decode(read_file(originals[index])).image
            except ImageError as error:
                raise ImgvecError(f"cannot read {originals[index]}: {error}") from error
        for name in names:
            variant_dir = Path(scratch) / name
            variant_dir.mkdir()
            variants: list[str] = []
            for index in chosen:
                target = variant_dir / f"{index:06d}.jpg"
                if name in tf.FILE_QUALITY:  # the encoding is the transform: encode the source
                    image = sources[index]
                else:
                    image = tf.make_variant(sources[index], name, seed, index)
                image.save(target, format="JPEG", quality=tf.file_quality(name))
                variants.append(str(target))
            results = _query_all(library, variants, 1)
            correct = sum(
                bool(result.hits) and result.hits[0].path == originals[index]
                for index, result in zip(chosen, results, strict=True)
            )
            scores[name] = correct / len(chosen) if chosen else 0.0
    return scores
