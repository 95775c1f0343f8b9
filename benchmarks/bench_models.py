"""Benchmark of the embedding models: forward speed, end-to-end ``add`` speed, retrieval quality
(issue 7).

    .venv/bin/python -m benchmarks.bench_models --out BENCHMARKS.md

For each model in the registry at its default layer (and a few extra layers, forward only), in a
fresh interpreter after waiting for a quiet machine: the bare forward pass on random tensors
(``Embedder.embed_tensors``, random weights), ``Library.add`` of the UKBench photos into a fresh
library, and the N-S score and mAP where real weights exist offline. ``--malloc-check`` times the
forward pass of a few models again with glibc malloc as it comes (``IMGVEC_KEEP_FREED_MEMORY=0``).
BENCHMARKS.md says what each column means.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.common import ADD_BATCH, num

MODULE = "benchmarks.bench_models"
BATCH = 16
EXTRA_LAYERS = ("resnet50:fc", "vgg16:pool5")
"""Benchmarked forward-only in the default run (same network, another cut)."""
NO_WEIGHTS = "n/a (weights need a download)"
GLIBC_DEFAULT = {"IMGVEC_KEEP_FREED_MEMORY": "0"}


def add_throughput(
    model: str,
    layer: str,
    weights: str,
    images: Sequence[Path],
    folder: Path | None,
    groups: dict[str, int] | None,
) -> dict[str, Any]:
    """``Library.add`` in a fresh library, timed as a whole and with the model loaded, and the
    time in the model; N-S and mAP too when ``groups`` is given."""
    import numpy as np

    from imgvec.api import Library

    started = time.perf_counter()  # from opening the library
    with tempfile.TemporaryDirectory(prefix="imgvec-bench-") as tmp, Library.open(tmp) as lib:
        lib.init(model, weights, layer)
        before_load = time.perf_counter()
        with lib.writing():  # loads the model on add's runtime (exported first where that is ONNX)
            runner = lib.parts.models.runner(lib.active_model_row(), bulk=True)
        model_times = common.time_calls(runner)  # add uses this one
        loaded = time.perf_counter()
        roots = [folder] if folder is not None else list(images)
        report = lib.add(roots, model=model, weights=weights, layer=layer, batch_size=ADD_BATCH)
        finished = time.perf_counter()
        if report.added != len(images) or report.failed:
            raise RuntimeError(f"{model}: unexpected add result: {report.summary()}")
        ns = mean_ap = None
        if groups is not None:
            row_of = {path.name: row for row, path in enumerate(images)}
            results = lib.query([str(path) for path in images], k=len(images))
            ranked = np.array([[row_of[Path(hit.path).name] for hit in r.hits] for r in results])
            ns, mean_ap = common.ns_and_map(ranked, [groups[path.name] for path in images])
    result = {"images": len(images), "total_s": finished - started, "add_s": finished - loaded}
    result.update(load_s=loaded - before_load, model_s=sum(model_times))
    return {**result, "ns": ns, "map": mean_ap}


def child_row(task: dict[str, Any]) -> dict[str, Any]:
    """One row: forward throughput, then (default layers) add, load time and quality."""
    from imgvec.embed.registry import get_spec, resolve_weights
    from imgvec.embed.runtime import Embedder

    model, layer = task["model"], task["layer"]
    spec = get_spec(model)
    embedder = Embedder(spec, layer, resolve_weights(spec, "none"))
    row = {"model": model, "layer": layer, "dim": spec.layers[layer].dim, "weights": "random"}
    row.update(quality=NO_WEIGHTS, add=None, forward32_ips=None, faults32=None)
    speed = common.forward_throughput(embedder, BATCH, 2, task["batches"], task["min_seconds"])
    row["forward_ips"], row["faults"] = speed
    if task["both_batches"]:
        speed = common.forward_throughput(embedder, ADD_BATCH, 1, 3, task["min_seconds"])
        row["forward32_ips"], row["faults32"] = speed
    del embedder
    gc.collect()
    if task["end_to_end"]:
        images = common.photos_in(Path(task["images"]))
        groups = common.read_groundtruth(Path(task["groundtruth"]))
        real = common.offline_weights(model, Path(task["mobilenet_weights"]))
        weights, row["weights"] = real or ("none", "random")
        chosen = images[: task["subset"]] if model in task["slow"] else images
        scored = real is not None and groups is not None and len(chosen) == len(images)
        if real is not None and not scored:
            row["quality"] = "n/a (not all photos added)" if groups else "n/a (no CSV)"
        add_throughput("mobilenet_v2", "pool", "none", images[:4], None, None)  # warm-up
        folder = Path(task["images"]) if len(chosen) == len(images) else None
        row["add"] = add_throughput(
            model, layer, weights, chosen, folder, groups if scored else None
        )
    return row


def targets(models: str | None) -> list[dict[str, Any]]:
    """``--models a,b:layer``; by default every registered model plus :data:`EXTRA_LAYERS`."""
    from imgvec.embed.registry import available

    specs = available()
    if models is None:
        chosen = []
        for name, spec in specs.items():
            chosen.append((name, spec.default_layer, True))
            for model, _, layer in (extra.partition(":") for extra in EXTRA_LAYERS):
                if model == name and layer in spec.layers:
                    chosen.append((model, layer, False))
    else:
        chosen = []
        for item in (part.strip() for part in models.split(",") if part.strip()):
            name, _, layer = item.partition(":")
            if name not in specs:
                raise SystemExit(f"unknown model {name!r}; available: {', '.join(specs)}")
            chosen.append((name, specs[name].layer(layer or None)[0], True))
    return [{"model": m, "layer": la, "end_to_end": e, "both_batches": e} for m, la, e in chosen]


# --- the tables ----------------------------------------------------------------------------------


def _count(value: float | None) -> str:
    return "—" if value is None else f"{value / 1000:.0f}k" if value >= 1000 else f"{value:.0f}"


def _faults(row: dict[str, Any]) -> str:
    if row["faults32"] is None:
        return _count(row["faults"])
    return f"{_count(row['faults'])} / {_count(row['faults32'])}"


def _others(row: dict[str, Any]) -> str:
    tries = f" (try {row['attempts']})" if row["attempts"] > 1 else ""
    return num(row["other_cores"], 2) + tries


def models_table(rows: Sequence[dict[str, Any]], total_images: int) -> str:
    lines = []
    for row in rows:
        add = row["add"]
        photos = "not run (same network as above)"
        if add:
            many = add["images"] < total_images
            photos = f"first {add['images']} (slow model)" if many else str(add["images"])
        loaded = add and add["images"] / add["add_s"]
        ns, mean_ap = row["quality"], "n/a"
        if add and add["ns"] is not None:
            ns, mean_ap = num(add["ns"], 3), num(add["map"], 3)
        lines.append(
            f"`{row['model']}` | `{row['layer']}` | {row['dim']} | {row['weights']} "
            f"| {num(row['forward_ips'])} | {num(row['forward32_ips'])} | {_faults(row)} "
            f"| {photos} | {num(add and add['images'] / add['total_s'])} | {num(loaded)} "
            f"| {num(loaded and loaded / row['forward_ips'], 2)} "
            f"| {num(add and add['images'] / add['model_s'])} "
            f"| {num(add and 100 * add['model_s'] / add['add_s'], 0, '%')} "
            f"| {num(add and add['load_s'], 2)} | {ns} | {mean_ap} | {_others(row)}"
        )
    return common.table(
        f"model | layer | dim | weights (add) | forward img/s, batch {BATCH} | forward img/s, "
        f"batch {ADD_BATCH} | page faults / img, batch {BATCH} / {ADD_BATCH} | add photos "
        "| add img/s, all | add img/s, model loaded | add / forward | model in add: img/s "
        "| model share of add | model load s | N-S | mAP | other procs, cores",
        lines,
        "llrlrrrlrrrrrrllr",
    )


def malloc_table(pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    return common.table(
        f"model | glibc malloc | forward img/s, batch {BATCH} | forward img/s, batch {ADD_BATCH} "
        f"| page faults / img, batch {BATCH} / {ADD_BATCH} | other procs, cores",
        (
            f"`{row['model']}` | {label} | {num(row['forward_ips'])} "
            f"| {num(row['forward32_ips'])} | {_faults(row)} | {_others(row)}"
            for pair in pairs
            for label, row in zip(("as it comes", "imgvec's `mallopt`"), pair, strict=True)
        ),
        "llr",
    )


# --- main ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--models", help="comma-separated MODEL[:LAYER] (default: every model)")
    parser.add_argument("--images", type=Path, default=common.UKBENCH, help="folder of photos")
    parser.add_argument("--groundtruth", type=Path, default=common.GROUNDTRUTH, help="CSV")
    parser.add_argument("--mobilenet-weights", type=Path, default=common.MOBILENET_WEIGHTS)
    parser.add_argument("--slow", default="vit_b_16,vgg16", help="models that add --subset photos")
    parser.add_argument("--subset", type=int, default=48, help="photos for the slow models' add")
    parser.add_argument("--batches", type=int, default=5, help="timed forward batches, at least")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="forward timing, at least")
    parser.add_argument("--quiet", type=float, default=0.2, help="cores others may use")
    parser.add_argument("--attempts", type=int, default=2, help="measurements per row, at most")
    parser.add_argument("--start-wait", type=float, default=120.0, help="wait for quiet first")
    parser.add_argument("--max-wait", type=float, default=20.0, help="wait for quiet, per row")
    parser.add_argument("--budget", type=float, default=300.0, help="no waits or repeats after")
    parser.add_argument("--malloc-check", default="mobilenet_v2,resnet50", help="'' to skip")
    common.report_args(parser)
    args = parser.parse_args(argv)
    if args.child:
        return common.child_main({"row": child_row}, args.child)
    started, meter = time.perf_counter(), common.CpuMeter()
    images = common.photos_in(args.images)
    groundtruth = common.read_groundtruth(args.groundtruth)
    if groundtruth is not None and not {p.name for p in images} <= groundtruth.keys():
        raise SystemExit(f"{args.groundtruth} does not cover every photo in {args.images}")
    common.log(f"{len(images)} photos; waiting for a quiet machine")
    common.wait_for_quiet(args.quiet, args.start_wait)
    from imgvec.embed.registry import get_spec

    rows_to_run = targets(args.models)
    prep = get_spec(rows_to_run[0]["model"]).preprocess
    common.prepare_photo(images[0], prep)  # warm-up: lazy imports
    begin = time.perf_counter()
    for path in images:
        common.prepare_photo(path, prep)
    prepare_ips = len(images) / (time.perf_counter() - begin)
    shared = {"kind": "row", "images": str(args.images), "groundtruth": str(args.groundtruth)}
    shared.update(mobilenet_weights=str(args.mobilenet_weights), subset=args.subset)
    shared.update(slow=args.slow.split(","), batches=args.batches, min_seconds=args.min_seconds)

    def measure(target: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
        left = started + args.budget - time.perf_counter()
        attempts = args.attempts if left > 0 else 1
        common.log(f"{target['model']}/{target['layer']}{' (glibc malloc)' if env else ''}")
        task = {**shared, **target}
        return common.run_quietly(
            MODULE, task, args.quiet, max(0.0, min(args.max_wait, left)), attempts, env
        )

    rows = [measure(target) for target in rows_to_run]
    pairs = []
    for name in (part.strip() for part in args.malloc_check.split(",") if part.strip()):
        target = {"model": name, "layer": get_spec(name).default_layer}
        target.update(end_to_end=False, both_batches=True)
        pairs.append((measure(target, GLIBC_DEFAULT), measure(target)))
    import torch

    from imgvec.embed.runtime import pick_device

    command = common.command_line(MODULE, argv)
    facts = {"torch_threads": torch.get_num_threads(), "device": pick_device()}
    facts["prepare"] = f"{prepare_ips:.0f} photos/s on one thread"
    run = common.run_line(command, started, meter, **facts)
    tables = {"run": run, "table": models_table(rows, len(images))}
    if pairs:
        tables["malloc"] = malloc_table(pairs)
    common.publish("bench_models", tables, {"run": run, "rows": rows, "malloc": pairs}, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
