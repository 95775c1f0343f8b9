"""Benchmark of ``imgvec dupes`` (issue 13): quality on a seeded near-duplicate set against
imagededup's perceptual hashes, and the cost of the candidate stage on synthetic libraries.

    .venv/bin/python -m benchmarks.bench_dupes --parts quality --out BENCHMARKS.md
    .venv/bin/python -m benchmarks.bench_dupes --parts scale --sizes 10000,100000,1000000 \
        --tmp /work/bench-tmp --out BENCHMARKS.md

1. quality: the set of :mod:`imgvec.tools.dupeset` (seed 0: every photo of the ground truth and
   its 7 variants) through :func:`imgvec.tools.evaluate_dupes.evaluate_dupes` on a fresh library
   per model (``--models``; cut 0.5, so that the report's sweep covers 0.5-0.95); then the same
   files (``dupeset.build`` with the same seed writes the same bytes) through imagededup's
   PHash, DHash, WHash and AHash at each ``--hash-distances`` (``find_duplicates`` over the
   encodings of ``encode_images(recursive=True)``), counted by
   :func:`imgvec.tools.evaluate_dupes.pair_metrics`, the same rule as imgvec's.
2. scale: per size N, synthetic L2-normalised vectors with cluster structure
   (:func:`benchmarks.bench_index.write_sample`, ``--dim``) of which ``--planted`` (1%) are
   replaced by a near-copy of another (the vector plus noise, renormalised: cosine 0.90-0.97 to
   it); a library of them (``store.bulk_load``, ``IndexStore.build()``, kind chosen by the
   library), then ``--new`` more vectors (1% of them near-copies of library vectors) added with
   the change log and ``update()``. In a fresh child each: the candidate stage of ``imgvec dupes``
   alone (:func:`imgvec.ops.dupes.candidate_pairs` at ``--cut``) over the whole library, and with
   ``new_ids`` the added vectors (``--new``). Pixels are not checked (there are no files).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from benchmarks.common import GIB, MIB, secs

MODULE = "benchmarks.bench_dupes"
MODELS = ("efficientnet_lite0", "mobilenet_v2")
HASHES = ("PHash", "DHash", "WHash", "AHash")
HASH_DISTANCES = (10, 2)
"""imagededup's default ``max_distance_threshold`` and a strict one (imgvec's phash cut)."""
DEFAULT_SIZES = (10_000, 100_000)
SEED, PLANTED, NEW, CUT, INSERT_BATCH = 0, 0.01, 1_000, 0.85, 10_000
COSINE_RANGE = (0.90, 0.97)
"""Cosine of a planted near-copy to its source (uniform)."""
DATA_STREAM, NEW_STREAM = 11, 12
GOAL_PRECISION, GOAL_RECALL = 0.99, 0.95


# --- quality -------------------------------------------------------------------------------------


def quality(args: argparse.Namespace) -> dict[str, Any]:
    truth = common.read_groundtruth(args.groundtruth)
    if truth is None:
        raise SystemExit(f"no ground truth at {args.groundtruth}")
    names = sorted(truth)[: args.photos] if args.photos else sorted(truth)
    models, failed = [], []
    for model in args.models:
        weights = common.offline_weights(model, args.mobilenet_weights)
        if weights is None:
            common.log(f"{model}: no offline weights, left out")
            continue
        try:
            models.append(
                common.run_child(
                    MODULE,
                    {
                        "kind": "imgvec",
                        "model": model,
                        "weights": weights[0],
                        "label": weights[1],
                        "photos": len(names),
                        "images": str(args.images),
                        "groundtruth": str(args.groundtruth),
                    },
                )
            )
        except SystemExit as error:  # the child died: say so, measure the rest
            failed.append({"model": model, "error": str(error)[-2000:]})
            common.log(f"{model} failed: {str(error)[-500:]}")
            continue
        row = models[-1]
        common.log(
            f"{model}: precision {row['precision']}, recall {row['recall']}, siblings "
            f"{row['siblings_grouped']}, suggested cut {row['suggested_cut']}"
        )
    hashes = common.run_child(
        MODULE,
        {
            "kind": "imagededup",
            "names": names,
            "images": str(args.images),
            "groundtruth": str(args.groundtruth),
            "methods": args.hashes,
            "distances": args.hash_distances,
            "tmp": None if args.tmp is None else str(args.tmp),
        },
    )
    return {"photos": len(names), "models": models, "failed": failed, **hashes}


def worker_imgvec(task: dict[str, Any]) -> dict[str, Any]:
    """One model's :func:`evaluate_dupes` on a fresh library (cut 0.5: the whole sweep)."""
    from imgvec.api import Library
    from imgvec.embed.registry import available
    from imgvec.tools.evaluate_dupes import evaluate_dupes

    with (
        tempfile.TemporaryDirectory(prefix="bench-dupes-lib-") as root,
        Library.open(root) as library,
    ):
        report = evaluate_dupes(
            library,
            task["images"],
            task["groundtruth"],
            model=task["model"],
            weights=task["weights"],
            threshold=0.5,
            limit=task["photos"],
        )
    spec = available().get(task["model"])
    result = json.loads(json.dumps(report.to_json()))
    result.update(weights_label=task["label"], peak_rss=own_peak())
    result["calibrated_cut"] = None if spec is None else spec.near_duplicate_cosine
    return result


def worker_imagededup(task: dict[str, Any]) -> dict[str, Any]:
    """The same set through imagededup's hashes: pairs counted by ``pair_metrics``."""
    logging.disable(logging.WARNING)  # imagededup logs every call at INFO
    warnings.simplefilter("ignore")
    from imagededup import methods

    from imgvec.tools import dupeset
    from imgvec.tools.evaluate_dupes import pair_metrics

    truth = common.read_groundtruth(Path(task["groundtruth"]))
    assert truth is not None
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-dupes-set-", dir=task["tmp"]) as scratch:
        out = Path(scratch)
        sources = [(Path(task["images"]) / name, str(truth[name])) for name in task["names"]]
        files = dupeset.build(sources, out, SEED)
        variants = sorted(
            {f.variant for f in files} - {"original"}, key=list(dupeset.VARIANTS).index
        )
        for name in task["methods"]:
            hasher = getattr(methods, name)(verbose=False)
            started = time.perf_counter()
            encodings = hasher.encode_images(image_dir=out, recursive=True)
            encode_s = time.perf_counter() - started
            for distance in task["distances"]:
                started = time.perf_counter()
                found = hasher.find_duplicates(
                    encoding_map=encodings, max_distance_threshold=distance
                )
                find_s = time.perf_counter() - started
                pairs = [(str(out / a), str(out / b)) for a, dups in found.items() for b in dups]
                total, hit, false, sibling_pairs, siblings, predicted = pair_metrics(files, pairs)
                per_variant = {}
                for variant in variants:
                    mine = [f for f in files if f.variant in ("original", variant)]
                    paths = {str(f.path) for f in mine}
                    kept = [p for p in pairs if p[0] in paths and p[1] in paths]
                    wanted, got = pair_metrics(mine, kept)[:2]
                    per_variant[variant] = round(got / wanted, 4) if wanted else 1.0
                rows.append(
                    {
                        "method": name,
                        "distance": distance,
                        "duplicate_pairs": total,
                        "sibling_pairs": sibling_pairs,
                        "precision": round(hit / predicted, 4) if predicted else 1.0,
                        "recall": round(hit / total, 4) if total else 1.0,
                        "false_pairs": false,
                        "siblings_grouped": siblings,
                        "encoded": len(encodings),
                        "encode_s": encode_s,
                        "find_s": find_s,
                        "per_transform": per_variant,
                    }
                )
                common.log(
                    f"imagededup {name}@{distance}: {rows[-1]['precision']} / {rows[-1]['recall']}"
                )
    return {"files": len(files), "hashes": rows}


# --- scale ---------------------------------------------------------------------------------------


def plant(data: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Replace ``fraction`` of the rows by near-copies of other rows, in place; the planted
    pairs as (source id, copy id), ids = rows + 1, each row in at most one pair."""
    n = len(data)
    count = int(n * fraction)
    order = rng.permutation(n)
    copies, sources = order[:count], order[count : 2 * count]
    for start in range(0, count, INSERT_BATCH):
        rows, of = copies[start : start + INSERT_BATCH], sources[start : start + INSERT_BATCH]
        data[rows] = near_copy(np.asarray(data[of]), rng)
    return np.stack([sources + 1, copies + 1], axis=1).astype(np.int64)


def near_copy(vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each vector plus random noise, renormalised, at a cosine drawn from COSINE_RANGE."""
    cosine = rng.uniform(*COSINE_RANGE, size=(len(vectors), 1)).astype(np.float32)
    noise = rng.standard_normal(vectors.shape, dtype=np.float32)
    noise -= np.einsum("ij,ij->i", noise, vectors)[:, None] * vectors  # orthogonal to the vector
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    copy = vectors + noise * np.sqrt(1 / cosine**2 - 1)
    return (copy / np.linalg.norm(copy, axis=1, keepdims=True)).astype(np.float32)


def measure_size(n: int, dim: int, args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.bench_index import write_sample

    with tempfile.TemporaryDirectory(prefix=f"bench-dupes-{n}-", dir=args.tmp) as temporary:
        tmp = Path(temporary)
        files = {
            name: str(tmp / f"{name}.npy") for name in ("data", "planted", "new", "planted_new")
        }
        started = time.perf_counter()
        data = write_sample(Path(files["data"]), n, dim, DATA_STREAM)
        rng = np.random.default_rng([SEED, n, dim])
        planted = plant(data, args.planted, rng)
        data.flush()
        new = write_sample(None, args.new, dim, NEW_STREAM)
        count = int(args.new * args.planted)
        # near-copies of library vectors in no planted pair, so that each forms one pair
        used = np.zeros(n, bool)
        used[planted.ravel() - 1] = True
        free = np.flatnonzero(~used)
        of = rng.choice(free, count, replace=False)
        new[:count] = near_copy(np.asarray(data[of]), rng)
        np.save(files["planted"], planted)
        np.save(files["new"], new)
        np.save(files["planted_new"], np.stack([of + 1, n + 1 + np.arange(count)], axis=1))
        del data
        generate_s = time.perf_counter() - started
        common.log(f"N={n} d={dim}: data {generate_s:.1f} s")
        task = {**files, "root": str(tmp / "library"), "dim": dim, "cut": args.cut}
        limit = args.child_timeout
        built = common.run_child(MODULE, {**task, "kind": "library"}, timeout=limit)
        common.log(
            f"N={n}: insert {built['insert_s']:.1f} s, build {built['build_s']:.1f} s "
            f"({built['index_kind']}), peak {built['peak_rss'] / GIB:.2f} GB"
        )
        runs = {}
        for mode in ("all", "new"):
            meter = common.CpuMeter()
            runs[mode] = common.run_child(
                MODULE, {**task, "kind": "candidates", "mode": mode}, timeout=limit
            )
            runs[mode]["other_cores"] = meter.other_cores()
            row = runs[mode]
            common.log(
                f"N={n} {mode}: {row['seconds']:.1f} s, peak {row['peak_rss'] / GIB:.2f} GB, "
                f"planted {row['planted_found']}/{row['planted']}, others {row['other_pairs']}"
            )
    return {"n": n, "dim": dim, "generate_s": generate_s, "library": built, **runs}


def _library_model(lib: Any, dim: int) -> Any:
    from imgvec.storage import store

    with lib.session() as session, session.begin():
        model, _ = store.model_row(session, "bench", "x", "none:seed=0", preprocessing="-", dim=dim)
        store.set_active_model(session, model)
    return model


def own_peak() -> int:
    """This process's peak RSS since it started (``VmHWM``). Not ``ru_maxrss``: a child started
    by fork and exec keeps the parent's RSS at the fork as its ``ru_maxrss`` (Linux)."""
    return common.rss("VmHWM")


def worker_library(task: dict[str, Any]) -> dict[str, Any]:
    """A library of the vectors (bulk-loaded), its index built, then the new vectors added
    (with change-log rows, as ``imgvec add`` writes them) and ``update()``."""
    from imgvec.api import Library
    from imgvec.storage import store

    data = np.load(task["data"], mmap_mode="r")
    new = np.load(task["new"])
    n = len(data)
    lib = Library.open(task["root"])
    model = _library_model(lib, task["dim"])
    started = time.perf_counter()
    with lib.session() as session, session.begin():
        for start in range(0, n, INSERT_BATCH):
            chunk = np.asarray(data[start : start + INSERT_BATCH])
            store.bulk_load(session, model.id, start + 1, chunk)
    insert_s = time.perf_counter() - started
    index = lib.index(model)
    with lib.writing():
        started = time.perf_counter()
        index.build()
        build_s = time.perf_counter() - started
        with lib.session() as session, session.begin():
            store.bulk_load(session, model.id, n + 1, new)
            for offset, vector in enumerate(new):
                store.put_vector(session, n + 1 + offset, model.id, store.vector_to_bytes(vector))
        started = time.perf_counter()
        version = index.update()
        update_s = time.perf_counter() - started
    info = index.info(version)
    result = {"insert_s": insert_s, "build_s": build_s, "update_s": update_s}
    result.update(index_kind=info.kind, params=info.params, operation=version.operation)
    result["segments"] = [
        {"role": s["role"], "n_vectors": s["n_vectors"], "size_bytes": s["size_bytes"]}
        for s in info.segments
    ]
    result["index_bytes"] = sum(s["size_bytes"] for s in info.segments)
    result["db_bytes"] = sum(p.stat().st_size for p in Path(task["root"]).glob("imgvec.db*"))
    result.update(peak_rss=own_peak(), ru_maxrss=common.peak_rss())
    lib.close()
    return result


def worker_candidates(task: dict[str, Any]) -> dict[str, Any]:
    """The candidate stage alone, in a fresh process: time, peak memory, planted pairs found."""
    from imgvec.api import Library
    from imgvec.ops.dupes import candidate_pairs

    new = np.load(task["new"], mmap_mode="r")
    n = len(np.load(task["data"], mmap_mode="r"))
    lib = Library.open(task["root"], create=False)
    model = lib.active_model_row()
    index = lib.index(model)
    version = index.active()[0]
    new_ids = set(range(n + 1, n + 1 + len(new))) if task["mode"] == "new" else None
    baseline = common.rss()
    started = time.perf_counter()
    pairs, saturated, queried = candidate_pairs(
        lib.parts, model, version, task["cut"], None, frozenset(), new_ids
    )
    seconds = time.perf_counter() - started
    peak = own_peak()
    lib.close()
    planted = np.load(task["planted_new"])
    if task["mode"] == "all":
        planted = np.concatenate([np.load(task["planted"]), planted])
    wanted = {(int(min(a, b)), int(max(a, b))) for a, b in planted}
    found = wanted & pairs.keys()
    return {
        "seconds": seconds,
        "queried": queried,
        "saturated": saturated,
        "pairs": len(pairs),
        "planted": len(wanted),
        "planted_found": len(found),
        "recall": len(found) / len(wanted) if wanted else 1.0,
        "other_pairs": len(pairs) - len(found),
        "baseline_rss": baseline,
        "peak_rss": peak,
        "ru_maxrss": common.peak_rss(),
    }


WORKERS = {
    "imgvec": worker_imgvec,
    "imagededup": worker_imagededup,
    "library": worker_library,
    "candidates": worker_candidates,
}


# --- the tables ----------------------------------------------------------------------------------


def _n(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def _goal(precision: float, recall: float, siblings: int) -> str:
    met = precision >= GOAL_PRECISION and recall >= GOAL_RECALL and siblings == 0
    return "yes" if met else "**no**"


def quality_tables(raw: dict[str, Any]) -> dict[str, str]:
    rows = []
    for model in raw["models"]:
        at = {point["cut"]: point for point in model["sweep"]}
        seconds = model["seconds_add"] + model["seconds_dupes"]
        label = f"imgvec `{model['model']}`"
        rows.append(
            f"{label} at 0.5 | {model['precision']:.4f} | {model['recall']:.4f} "
            f"| {model['siblings_grouped']} / {model['sibling_pairs']} "
            f"| {secs(model['seconds_add'])} + {secs(model['seconds_dupes'])} = {secs(seconds)} "
            f"| {_goal(model['precision'], model['recall'], model['siblings_grouped'])}"
        )
        point = at.get(model["suggested_cut"])
        if point is not None:
            rows.append(
                f"{label} at its suggested cut {point['cut']} | {point['precision']:.4f} "
                f"| {point['recall']:.4f} | {point['sibling_pairs']} / {model['sibling_pairs']} "
                f"| (same run) "
                f"| {_goal(point['precision'], point['recall'], point['sibling_pairs'])}"
            )
    for row in raw["hashes"]:
        seconds = row["encode_s"] + row["find_s"]
        rows.append(
            f"imagededup `{row['method']}`, max distance {row['distance']} "
            f"| {row['precision']:.4f} | {row['recall']:.4f} "
            f"| {row['siblings_grouped']} / {row['sibling_pairs']} "
            f"| {secs(row['encode_s'])} + {secs(row['find_s'])} = {secs(seconds)} "
            f"| {_goal(row['precision'], row['recall'], row['siblings_grouped'])}"
        )
    result = {
        "quality": common.table(
            "method | precision | recall | sibling pairs grouped | seconds (add / encode + "
            "group) | goal met (precision >= 0.99, recall >= 0.95, no sibling pair)",
            rows,
            "lrrrrl",
        )
    }
    variants = list(raw["models"][0]["per_transform"]) if raw["models"] else []
    if not variants and raw["hashes"]:
        variants = list(raw["hashes"][0]["per_transform"])
    rows = []
    for model in raw["models"]:
        cells = " | ".join(f"{model['per_transform'][v]['recall']:.3f}" for v in variants)
        rows.append(f"imgvec `{model['model']}` at 0.5 | {cells}")
    for row in raw["hashes"]:
        cells = " | ".join(f"{row['per_transform'][v]:.3f}" for v in variants)
        rows.append(f"imagededup `{row['method']}` @{row['distance']} | {cells}")
    result["transforms"] = common.table(
        "method | " + " | ".join(f"`{v}`" for v in variants), rows, "lr"
    )
    rows = []
    for model in raw["models"]:
        for point in model["sweep"]:
            mark = " (suggested)" if point["cut"] == model["suggested_cut"] else ""
            rows.append(
                f"`{model['model']}` | {point['cut']:.2f}{mark} | {point['precision']:.4f} "
                f"| {point['recall']:.4f} | {point['sibling_pairs']}"
            )
    result["sweep"] = common.table(
        "model | cosine cut | precision | recall | sibling pairs grouped", rows, "llr"
    )
    result["models"] = common.table(
        "model | weights | files | duplicate pairs | sibling pairs | suggested cut "
        "| calibrated cut (`ModelSpec.near_duplicate_cosine`) | add s | dupes s at cut 0.5",
        (
            f"`{m['model']}` | {m['weights_label']} | {m['files']:,} | {m['duplicate_pairs']:,} "
            f"| {m['sibling_pairs']:,} | {m['suggested_cut']} "
            f"| {common.num(m['calibrated_cut'], 2)} | {secs(m['seconds_add'])} "
            f"| {secs(m['seconds_dupes'])}"
            for m in raw["models"]
        ),
        "llr",
    )
    return result


def _segments(segments: list[dict[str, Any]]) -> str:
    return " + ".join(f"{s['size_bytes'] / MIB:.1f}" for s in segments)


def scale_tables(raw: dict[str, Any]) -> dict[str, str]:
    sizes = raw["sizes"]
    result = {
        "library": common.table(
            "N (+ new) | dim | planted pairs (+ new) | bulk insert s | `build()` s | kind "
            "| nlist / nprobe | index MB (base + delta) | `update()` s (+ new) "
            "| builder peak RSS GB",
            (
                f"{_n(s['n'])} (+{s['new']['queried']:,}) | {s['dim']} "
                f"| {s['all']['planted'] - s['new']['planted']:,} (+{s['new']['planted']}) "
                f"| {secs(s['library']['insert_s'])} | {secs(s['library']['build_s'])} "
                f"| {s['library']['index_kind']} | {common.index_params(s['library']['params'])} "
                f"| {s['library']['index_bytes'] / MIB:.1f} "
                f"({_segments(s['library']['segments'])}) "
                f"| {secs(s['library']['update_s'])} | {s['library']['peak_rss'] / GIB:.2f}"
                for s in sizes
            ),
            "lrrrrllr",
        ),
        "candidates": common.table(
            "N | run | images queried | seconds | peak RSS GB (before the call) "
            "| peak RSS / index size | planted pairs found | recall | other pairs returned "
            "| saturated | other cores busy",
            (
                f"{_n(s['n'])} | {'`--new`' if mode == 'new' else 'all'} "
                f"| {r['queried']:,} | {secs(r['seconds'])} "
                f"| {r['peak_rss'] / GIB:.2f} ({r['baseline_rss'] / GIB:.2f}) "
                f"| {r['peak_rss'] / s['library']['index_bytes']:.2f} "
                f"| {r['planted_found']:,} / {r['planted']:,} | {r['recall']:.4f} "
                f"| {r['other_pairs']:,} | {r['saturated']} | {common.num(r['other_cores'], 2)}"
                for s in sizes
                for mode, r in (("all", s["all"]), ("new", s["new"]))
            ),
            "llr",
        ),
    }
    rows = []
    for dim in sorted({s["dim"] for s in sizes}):
        alike = sorted((s for s in sizes if s["dim"] == dim), key=lambda s: s["n"])
        if len(alike) < 2:
            continue
        small, large = alike[0], alike[-1]
        for label, mode in (("`--new`", "new"), ("all images", "all")):
            a, b = small[mode]["seconds"], large[mode]["seconds"]
            rows.append(
                f"{label} ({small[mode]['queried']:,} vs {large[mode]['queried']:,} queried) "
                f"| {dim} | {_n(small['n'])} | {_n(large['n'])} | {a:.3f} | {b:.3f} | {b / a:.2f}"
            )
    if rows:
        result["ratios"] = common.table(
            "candidate stage | dim | small N | large N | small s | large s | ratio large / small",
            rows,
            "lr",
        )
    return result


# --- main ----------------------------------------------------------------------------------------


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _ints(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in _list(text)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--parts", type=_list, default=["quality", "scale"])
    parser.add_argument("--models", type=_list, default=list(MODELS))
    parser.add_argument("--photos", type=int, help="only the first N photos of the ground truth")
    parser.add_argument("--images", type=Path, default=common.UKBENCH)
    parser.add_argument("--groundtruth", type=Path, default=common.GROUNDTRUTH)
    parser.add_argument("--mobilenet-weights", type=Path, default=common.MOBILENET_WEIGHTS)
    parser.add_argument("--hashes", type=_list, default=list(HASHES), help="imagededup methods")
    parser.add_argument("--hash-distances", type=_ints, default=list(HASH_DISTANCES))
    parser.add_argument("--sizes", type=_ints, default=list(DEFAULT_SIZES), help="library sizes")
    parser.add_argument(
        "--dims", type=_ints, default=[1280], help="vector dimension, one for all or one per size"
    )
    parser.add_argument("--planted", type=float, default=PLANTED, help="share of near-copies")
    parser.add_argument("--new", type=int, default=NEW, help="vectors added for --new")
    parser.add_argument("--cut", type=float, default=CUT, help="cosine cut of the candidate stage")
    parser.add_argument("--tmp", type=Path, help="folder for temporary data (default: system)")
    parser.add_argument(
        "--child-timeout", type=float, help="seconds each scale child may take (default: no limit)"
    )
    common.report_args(parser)
    args = parser.parse_args(argv)
    if args.child:
        return common.child_main(WORKERS, args.child)
    if len(args.dims) not in (1, len(args.sizes)):
        parser.error("--dims: one, or one per size")
    command = common.command_line(MODULE, argv)
    raw: dict[str, Any] = {}
    tables: dict[str, str] = {}
    if "quality" in args.parts:
        started, meter = time.perf_counter(), common.CpuMeter()
        raw["quality"] = quality(args)
        run = common.run_line(command, started, meter)
        for model in raw["quality"]["failed"]:
            first = model["error"].strip().splitlines()[0][-160:]
            run += f"\n- `{model['model']}`: **not measured** ({first})."
        tables.update(quality_run=run, **quality_tables(raw["quality"]))
    if "scale" in args.parts:
        started, meter = time.perf_counter(), common.CpuMeter()
        dims = args.dims * len(args.sizes) if len(args.dims) == 1 else args.dims
        sizes, failed = [], []
        for n, dim in zip(args.sizes, dims, strict=True):
            try:
                sizes.append(measure_size(n, dim, args))
            except (SystemExit, subprocess.TimeoutExpired) as error:  # a child died or timed out
                failed.append({"n": n, "dim": dim, "error": str(error)[-2000:]})
                common.log(f"N={n} d={dim} failed: {str(error)[-500:]}")
        import faiss

        threads = faiss.omp_get_max_threads()
        run = common.run_line(command, started, meter, faiss_threads=threads)
        for size in failed:
            first = size["error"].strip().splitlines()[0][-160:]
            run += f"\n- N={_n(size['n'])}, dim {size['dim']}: **not measured** ({first})."
        raw["scale"] = {"cut": args.cut, "planted": args.planted, "sizes": sizes, "failed": failed}
        tables.update(run=run, **scale_tables(raw["scale"]))
    common.publish("bench_dupes", tables, raw, args)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    raise SystemExit(main())
