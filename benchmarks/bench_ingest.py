"""Benchmark of ingest speed: ``Library.add`` against the model's own speed and against the
original one-image-at-a-time loop, and what bf16 and reduced-size JPEG decoding change (issue 6).

    .venv/bin/python -m benchmarks.bench_ingest --tmp /work/bench-tmp --out BENCHMARKS.md

Photo sets: the UKBench photos (640x480 JPEG) and 12-megapixel JPEGs made from the first of them
(upscaled to 4000x3000 with a little noise, quality 92; kept in ``--tmp``). Every measurement
runs in a fresh interpreter after waiting for a quiet moment. BENCHMARKS.md says what each
column means.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.common import ADD_BATCH, num

MODULE = "benchmarks.bench_ingest"
LARGE_SIZE = (4000, 3000)
INGEST_MODELS = ("vit_b_16", "resnet50", "mobilenet_v2", "efficientnet_lite0")
HEAVY_MODELS = ("vit_b_16", "resnet50")
"""The issue's targets (add >= 0.85 x forward, >= 3x the original loop) are for these; they also
get an fp32 row and the original loop."""
PRECISION_MODELS = ("vit_b_16", "resnet50", "vgg16", "mobilenet_v2", "efficientnet_lite0")


def make_large_jpegs(sources: Sequence[Path], folder: Path) -> list[Path]:
    """12-megapixel JPEGs from ``sources``: bicubic upscale plus Gaussian noise (sigma 4), so
    the entropy-coded data is as dense as a real photo's (about 3 MB each). Kept between runs."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    made, rng = [], np.random.default_rng(0)
    for number, source in enumerate(sources):
        made.append(folder / f"large{number:03}.jpg")
        if made[-1].exists():
            continue
        with Image.open(source) as opened:
            big = opened.convert("RGB").resize(LARGE_SIZE, Image.Resampling.BICUBIC)
        noise = rng.normal(0.0, 4.0, (LARGE_SIZE[1], LARGE_SIZE[0], 3))
        pixels = np.clip(np.asarray(big, np.float32) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(made[-1].with_suffix(".part"), "JPEG", quality=92)
        os.replace(made[-1].with_suffix(".part"), made[-1])
    return made


# --- children (each in a fresh interpreter) ------------------------------------------------------


def child_ingest(task: dict[str, Any]) -> dict[str, Any]:
    """Forward throughput, preparation throughput and ``Library.add`` of one photo set."""
    import torch  # noqa: F401  (imported before timing anything)

    from imgvec.api import Library
    from imgvec.embed.batches import worker_count
    from imgvec.embed.registry import get_spec, resolve_weights
    from imgvec.embed.runtime import Embedder

    model, precision, paths = task["model"], task["precision"], task["paths"]
    spec = get_spec(model)
    weights = resolve_weights(spec, "none")
    embedder = Embedder(spec, spec.default_layer, weights, precision=precision)
    forward_ips = common.forward_throughput(
        embedder, ADD_BATCH, 1, task["batches"], task["min_seconds"]
    )[0]
    used = embedder.precision
    del embedder
    with ThreadPoolExecutor(worker_count()) as pool:  # add's worker threads, nothing else running
        list(pool.map(common.prepare_photo, paths[:4], [spec.preprocess] * 4))  # warm-up
        started = time.perf_counter()
        list(pool.map(common.prepare_photo, paths, [spec.preprocess] * len(paths)))
        prepare_ips = len(paths) / (time.perf_counter() - started)
    with tempfile.TemporaryDirectory(prefix="imgvec-bench-") as tmp, Library.open(tmp) as lib:
        lib.precision = precision
        lib.init(model, "none", None)
        with lib.writing():  # the runtime add uses (ONNX Runtime for CNNs in fp32 on a CPU)
            runner = lib.parts.models.runner(lib.active_model_row(), bulk=True)
        model_times = common.time_calls(runner)
        started = time.perf_counter()
        added = lib.add([task["folder"]], batch_size=ADD_BATCH)
        add_s = time.perf_counter() - started
    if added.added != len(paths) or added.failed:
        raise RuntimeError(f"{model}: unexpected add result: {added.summary()}")
    result = {"precision": used, "forward_ips": forward_ips, "prepare_ips": prepare_ips}
    return {**result, "add_ips": len(paths) / add_s, "model_share": sum(model_times) / add_s}


def child_original(task: dict[str, Any]) -> dict[str, Any]:
    """The original notebook's loop, faithfully: one photo at a time, decoded in full, the
    torchvision transforms, float32 under ``no_grad``; glibc malloc left as it is."""
    import torch
    from PIL import Image
    from torchvision import transforms as T

    from imgvec.embed.registry import get_spec, resolve_weights
    from imgvec.embed.runtime import build_model

    spec = get_spec(task["model"])
    network = build_model(spec, spec.default_layer, resolve_weights(spec, "none"))
    prep = spec.preprocess
    steps = [T.Resize(prep.resize), T.CenterCrop(prep.crop), T.ToTensor()]
    transform = T.Compose([*steps, T.Normalize(prep.mean, prep.std)])

    def embed(path: str) -> Any:
        image = Image.open(path).convert("RGB")
        with torch.no_grad():
            vector = network(transform(image).unsqueeze(0)).flatten(1)
        return torch.nn.functional.normalize(vector, dim=1)[0].numpy()

    embed(task["paths"][0])  # warm-up
    started = time.perf_counter()
    for path in task["paths"]:
        embed(path)
    return {"original_ips": len(task["paths"]) / (time.perf_counter() - started)}


def child_precision(task: dict[str, Any]) -> dict[str, Any]:
    """Forward speed in each precision and memory layout; fp32 vs bf16 vectors of the photos."""
    import numpy as np
    import torch

    from imgvec.decode.images import read_file
    from imgvec.embed.pixels import prepare
    from imgvec.embed.registry import get_spec, resolve_weights
    from imgvec.embed.runtime import Embedder, auto_precision
    from imgvec.index.recall import exact_top_k

    spec = get_spec(task["model"])
    weights = resolve_weights(spec, task["weights"])
    speeds: dict[str, float] = {}
    layouts = {"nchw": replace(spec, channels_last=False)} | (
        {"nhwc": spec} if spec.channels_last else {}
    )
    for layout, variant in layouts.items():
        for precision in ("fp32", "bf16"):
            embedder = Embedder(variant, spec.default_layer, weights, precision=precision)
            speed = common.forward_throughput(
                embedder, task["batch"], 1, task["batches"], task["min_seconds"]
            )
            speeds[f"{precision}_{layout}"] = speed[0]
    tensors = [prepare(read_file(p), spec.preprocess)[1] for p in task["paths"]]
    vectors = {}
    for precision in ("fp32", "bf16"):
        embedder = Embedder(spec, spec.default_layer, weights, precision=precision)
        batches = [tensors[i : i + ADD_BATCH] for i in range(0, len(tensors), ADD_BATCH)]
        vectors[precision] = np.concatenate([embedder.embed_inputs(np.stack(b)) for b in batches])
    cosines = np.sum(vectors["fp32"] * vectors["bf16"], axis=1)
    between = vectors["fp32"] @ vectors["fp32"].T
    result = {"speeds": speeds, "auto": auto_precision(torch.device("cpu"))}
    result.update(cosine_mean=float(cosines.mean()), cosine_min=float(cosines.min()))
    result["between_mean"] = float(between[~np.eye(len(between), dtype=bool)].mean())
    if task.get("groups") is not None:
        for precision, found in vectors.items():
            ranked = exact_top_k(found, found, len(found))[1]
            result[f"ns_{precision}"], result[f"map_{precision}"] = common.ns_and_map(
                ranked, task["groups"]
            )
    return result


def child_draft(task: dict[str, Any]) -> dict[str, Any]:
    """Full vs reduced-size decoding of large JPEGs: time, and the vectors' agreement."""
    import numpy as np
    import torch

    from imgvec.decode.images import decode, read_file
    from imgvec.embed.pixels import prepare
    from imgvec.embed.registry import get_spec, resolve_weights
    from imgvec.embed.runtime import Embedder, preprocess_image

    spec = get_spec(task["model"])
    prep = spec.preprocess
    times: dict[str, list[float]] = {key: [] for key in ("decode_full", "decode_draft")}
    times.update(prepare_full=[], prepare_draft=[])
    full, reduced = [], []
    for data in (read_file(p) for p in task["paths"]):
        begin = time.perf_counter()
        picture = decode(data)
        times["decode_full"].append(time.perf_counter() - begin)
        full.append(preprocess_image(picture.image, prep))
        times["prepare_full"].append(time.perf_counter() - begin)
        begin = time.perf_counter()
        decode(data, min_side=prep.resize)
        times["decode_draft"].append(time.perf_counter() - begin)
        begin = time.perf_counter()
        reduced.append(torch.from_numpy(prepare(data, prep)[1]))
        times["prepare_draft"].append(time.perf_counter() - begin)
    weights = resolve_weights(spec, task["weights"])
    embedder = Embedder(spec, spec.default_layer, weights, precision="fp32")
    vectors = [embedder.embed_tensors(torch.stack(tensors)) for tensors in (full, reduced)]
    cosines = np.sum(vectors[0] * vectors[1], axis=1)
    result = {f"{name}_ms": 1000 * statistics.median(values) for name, values in times.items()}
    return {**result, "cosine_mean": float(cosines.mean()), "cosine_min": float(cosines.min())}


CHILDREN = {
    "ingest": child_ingest,
    "original": child_original,
    "precision": child_precision,
    "draft": child_draft,
}


# --- the tables ----------------------------------------------------------------------------------


def bound(row: dict[str, Any]) -> float:
    """Images/s if preparing photos and running the model could not overlap at all."""
    return 1 / (1 / row["forward_ips"] + 1 / row["prepare_ips"])


def ingest_table(rows: Sequence[dict[str, Any]]) -> str:
    return common.table(
        "model | photos | precision | forward img/s | prepare img/s (alone) | bound img/s "
        "| add img/s | add / forward | add / bound | model share of add | original loop img/s "
        "| add / original | other procs, cores",
        (
            f"`{row['model']}` | {row['set']} ({row['n']}) | {row['precision']} "
            f"| {num(row['forward_ips'])} | {num(row['prepare_ips'])} | {num(bound(row))} "
            f"| {num(row['add_ips'])} | **{row['add_ips'] / row['forward_ips']:.2f}** "
            f"| {row['add_ips'] / bound(row):.2f} | {row['model_share']:.0%} "
            f"| {num(row.get('original_ips'))} "
            f"| {num(row.get('original_ips') and row['add_ips'] / row['original_ips'], 2)}x "
            f"| {num(row['other_cores'], 2)}"
            for row in rows
        ),
        "lllr",
    )


def precision_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        speeds = row["speeds"]
        layout = "nhwc" if "bf16_nhwc" in speeds else "nchw"
        quality = "— | —"
        if "ns_fp32" in row:
            quality = (
                f"{row['ns_fp32']:.3f} / {row['ns_bf16']:.3f} "
                f"| {row['map_fp32']:.3f} / {row['map_bf16']:.3f}"
            )
        chosen = speeds[f"{row['auto']}_{layout}"]
        cells = [num(speeds.get(f"{p}_{o}")) for p in ("fp32", "bf16") for o in ("nchw", "nhwc")]
        lines.append(
            f"`{row['model']}` | {row['weights_label']} | {' | '.join(cells)} "
            f"| {row['auto']} {layout.upper()} "
            f"| {chosen / speeds['fp32_nchw']:.2f}x "
            f"| {row['cosine_mean']:.4f} ({row['cosine_min']:.4f}) | {row['between_mean']:.4f} "
            f"| {quality}"
        )
    return common.table(
        "model | weights | fp32 NCHW | fp32 NHWC | bf16 NCHW | bf16 NHWC | auto runs "
        "| auto / fp32 NCHW | cosine fp32 vs bf16: mean (min) | cosine of two photos: mean "
        "| N-S fp32 / bf16 | mAP fp32 / bf16",
        lines,
        "llrrrrlrrrll",
    )


def draft_table(rows: Sequence[dict[str, Any]]) -> str:
    return common.table(
        "photos | decode ms, full | decode ms, reduced | decode + preprocess ms, full "
        "| decode + preprocess ms, reduced | speed-up | cosine full vs reduced: mean (min)",
        (
            f"{row['set']} ({row['n']}) | {row['decode_full_ms']:.1f} "
            f"| {row['decode_draft_ms']:.1f} | {row['prepare_full_ms']:.1f} "
            f"| {row['prepare_draft_ms']:.1f} "
            f"| {row['prepare_full_ms'] / row['prepare_draft_ms']:.1f}x "
            f"| {row['cosine_mean']:.4f} ({row['cosine_min']:.4f})"
            for row in rows
        ),
        "lr",
    )


# --- running it ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--images", type=Path, default=common.UKBENCH, help="folder of photos")
    parser.add_argument("--groundtruth", type=Path, default=common.GROUNDTRUTH)
    parser.add_argument("--mobilenet-weights", type=Path, default=common.MOBILENET_WEIGHTS)
    parser.add_argument("--models", default=",".join(INGEST_MODELS), help="ingest rows' models")
    parser.add_argument("--precision-models", default=",".join(PRECISION_MODELS))
    parser.add_argument("--large", type=int, default=48, help="12-megapixel photos to make")
    parser.add_argument("--original", type=int, default=48, help="photos the original loop embeds")
    parser.add_argument("--batches", type=int, default=3, help="timed forward batches, at least")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="forward timing, at least")
    parser.add_argument("--precision-batch", type=int, default=16, help="precision table's batch")
    parser.add_argument("--tmp", type=Path, help="where the 12 MP photos are kept")
    parser.add_argument("--quiet", type=float, default=0.2, help="cores others may use")
    parser.add_argument("--max-wait", type=float, default=20.0, help="seconds to wait for quiet")
    common.report_args(parser)
    args = parser.parse_args(argv)
    if args.child is not None:
        return common.child_main(CHILDREN, args.child)
    started, meter = time.perf_counter(), common.CpuMeter()
    photos = common.photos_in(args.images)
    truth = common.read_groundtruth(args.groundtruth)

    def run(task: dict[str, Any]) -> dict[str, Any]:
        return common.run_quietly(MODULE, task, args.quiet, args.max_wait)

    with tempfile.TemporaryDirectory(prefix="imgvec-bench-ingest-") as scratch:
        large_dir = (args.tmp or Path(scratch)) / f"large-{LARGE_SIZE[0]}x{LARGE_SIZE[1]}"
        large = make_large_jpegs(photos[: args.large], large_dir / "photos")
        sets = {"UKBench": (args.images, photos), "12 MP": (large_dir / "photos", large)}
        ingest = []
        for model in (m.strip() for m in args.models.split(",") if m.strip()):
            for name, (folder, paths) in sets.items():
                heavy = model in HEAVY_MODELS
                if heavy:
                    subset = [str(p) for p in paths[: args.original]]
                    original = run({"kind": "original", "model": model, "paths": subset})
                for precision in ["auto", "fp32"] if heavy and name == "UKBench" else ["auto"]:
                    common.log(f"{model} on {name}: forward, prepare, add ({precision})")
                    task = {"kind": "ingest", "model": model, "precision": precision}
                    task.update(folder=str(folder), paths=[str(p) for p in paths])
                    task.update(batches=args.batches, min_seconds=args.min_seconds)
                    row = run(task)
                    row.update(model=model, set=name, n=len(paths), precision_asked=precision)
                    if heavy:
                        row["original_ips"] = original["original_ips"]
                    ingest.append(row)
        precision = []
        for model in (m.strip() for m in args.precision_models.split(",") if m.strip()):
            weights, label = common.offline_weights(model, args.mobilenet_weights) or (
                "none",
                "random",
            )
            common.log(f"precision: {model} ({label})")
            task = {"kind": "precision", "model": model, "weights": weights}
            task.update(paths=[str(p) for p in photos], min_seconds=min(2.0, args.min_seconds))
            task.update(batch=args.precision_batch, batches=args.batches)
            if label != "random" and truth is not None:
                task["groups"] = [truth[p.name] for p in photos]
            precision.append({"model": model, "weights_label": label, **run(task)})
        draft = []
        if args.mobilenet_weights.is_file():
            task = {"kind": "draft", "model": "mobilenet_v2", "paths": [str(p) for p in large]}
            task["weights"] = str(args.mobilenet_weights)
            draft.append({"set": "12 MP", "n": len(large), **run(task)})
    import torch

    bf16 = "AVX512-BF16" if torch.cpu._is_avx512_bf16_supported() else "no bf16 units"
    command = common.command_line(MODULE, argv)
    line = common.run_line(command, started, meter, cpu=bf16, torch_threads=torch.get_num_threads())
    tables = {"run": line, "ingest": ingest_table(ingest), "precision": precision_table(precision)}
    if draft:
        tables["draft"] = draft_table(draft)
    results = {"run": line, "ingest": ingest, "precision": precision, "draft": draft}
    common.publish("bench_ingest", tables, results, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
