"""Benchmark of ingest speed: ``Library.add`` against the model's own speed and against the
original one-image-at-a-time loop, and what bf16 and reduced-size JPEG decoding change.

Run from the repository root (about 15 minutes on two quiet cores):

    .venv/bin/python -m benchmarks.bench_ingest --out BENCHMARKS.md

Photo sets: the UKBench photos (640x480 JPEG) and 12-megapixel JPEGs made from the first of them
(upscaled to 4000x3000 with a little noise, quality 92, like a phone photo; cached in ``--tmp``).
Every measurement runs in a fresh process, so none inherits another's allocator state, after
waiting for a quiet moment on this shared machine. See :func:`section` for what each figure is.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import report
from benchmarks.bench_models import (
    DEFAULT_GROUNDTRUTH,
    DEFAULT_IMAGES,
    DEFAULT_MOBILENET_WEIGHTS,
    HEADER,
    _time_calls,
    forward_throughput,
    offline_weights,
    prepare_photo,
    read_groundtruth,
    wait_for_quiet,
)
from benchmarks.machine import CpuMeter

REPO = Path(__file__).resolve().parent.parent
COMMAND = ".venv/bin/python -m benchmarks.bench_ingest"
START_MARKER = "<!-- ingest:start -->"
END_MARKER = "<!-- ingest:end -->"
ADD_BATCH = 32
"""``imgvec add``'s default ``--batch-size``."""
LARGE_SIZE = (4000, 3000)
INGEST_MODELS = ("vit_b_16", "resnet50", "mobilenet_v2", "efficientnet_lite0")
HEAVY_MODELS = ("vit_b_16", "resnet50")
"""The issue's targets (add >= 0.85 x forward, >= 3x the original loop) are for these; the light
models share the two cores with decoding and are compared with the bound instead."""
PRECISION_MODELS = ("vit_b_16", "resnet50", "vgg16", "mobilenet_v2", "efficientnet_lite0")
CLUSTERED = 0.9
"""A mean cosine between different photos from which their vectors count as all alike (random
weights do that): the fp32 / bf16 agreement of such vectors is no evidence."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- photo sets ----------------------------------------------------------------------------------


def make_large_jpegs(sources: Sequence[Path], folder: Path) -> list[Path]:
    """12-megapixel JPEGs from ``sources``: bicubic upscale plus Gaussian noise (sigma 4), so
    the entropy-coded data is as dense as a real photo's (about 3 MB each). Kept between runs."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    made = []
    rng = np.random.default_rng(0)
    for number, source in enumerate(sources):
        path = folder / f"large{number:03}.jpg"
        made.append(path)
        if path.exists():
            continue
        with Image.open(source) as opened:
            big = opened.convert("RGB").resize(LARGE_SIZE, Image.Resampling.BICUBIC)
        noise = rng.normal(0.0, 4.0, (LARGE_SIZE[1], LARGE_SIZE[0], 3)).astype(np.float32)
        pixels = np.clip(np.asarray(big, np.float32) + noise, 0, 255).astype(np.uint8)
        partial = path.with_suffix(".part")
        Image.fromarray(pixels).save(partial, "JPEG", quality=92)
        os.replace(partial, path)
    return made


# --- measurements, each in a child process -------------------------------------------------------


def prepare_throughput(paths: Sequence[Path], model: str) -> float:
    """Images/s of what ``add`` does per photo besides the model (read, hash, decode at reduced
    size, preprocess) on ``add``'s worker threads, with nothing else running."""
    from imgvec.embedders.registry import get_spec
    from imgvec.pipeline import worker_count

    prep = get_spec(model).preprocess

    def one(path: Path) -> None:
        prepare_photo(path, prep)

    with ThreadPoolExecutor(worker_count()) as pool:
        list(pool.map(one, paths[:4]))  # warm-up
        started = time.perf_counter()
        list(pool.map(one, paths))
    return len(paths) / (time.perf_counter() - started)


def child_ingest(task: dict[str, Any]) -> dict[str, Any]:
    """Forward throughput, preparation throughput and ``Library.add`` of one photo set."""
    import torch  # noqa: F401  (imported before timing anything)

    from imgvec import Library
    from imgvec.config import sqlite_url
    from imgvec.embed import Embedder
    from imgvec.embedders.registry import get_spec, resolve_weights

    model, precision = task["model"], task["precision"]
    paths = [Path(p) for p in task["paths"]]
    spec = get_spec(model)
    embedder = Embedder(
        spec, spec.default_layer, resolve_weights(spec, "none"), precision=precision
    )
    forward_ips, _ = forward_throughput(embedder, ADD_BATCH, 1, 3, 3.0)
    used = embedder.precision
    del embedder
    prepare_ips = prepare_throughput(paths, model)
    with tempfile.TemporaryDirectory(prefix="imgvec-bench-") as tmp:
        library = Library.open(tmp, sqlite_url(Path(tmp) / "imgvec.db"))
        library.precision = precision
        library.init(model, "none", None)
        model_times = _time_calls(library.embedder())
        started = time.perf_counter()
        added = library.add([task["folder"]], batch_size=ADD_BATCH)
        add_s = time.perf_counter() - started
        library.close()
    if added.added != len(paths) or added.failed:
        raise RuntimeError(f"{model}: unexpected add result: {added.summary()}")
    return {
        "precision": used,
        "forward_ips": forward_ips,
        "prepare_ips": prepare_ips,
        "add_ips": len(paths) / add_s,
        "model_share": sum(model_times) / add_s,
    }


def child_original(task: dict[str, Any]) -> dict[str, Any]:
    """The original notebook's loop, faithfully: one photo at a time, decoded in full, the
    torchvision transforms, float32 under ``no_grad``; glibc malloc left as it is."""
    import torch
    from PIL import Image
    from torchvision import transforms

    from imgvec.embed import build_model
    from imgvec.embedders.registry import get_spec, resolve_weights

    spec = get_spec(task["model"])
    network = build_model(spec, spec.default_layer, resolve_weights(spec, "none"))
    prep = spec.preprocess
    transform = transforms.Compose(
        [
            transforms.Resize(prep.resize),
            transforms.CenterCrop(prep.crop),
            transforms.ToTensor(),
            transforms.Normalize(prep.mean, prep.std),
        ]
    )
    paths = task["paths"]

    def embed(path: str) -> np.ndarray:
        image = Image.open(path).convert("RGB")
        with torch.no_grad():
            vector = network(transform(image).unsqueeze(0)).flatten(1)
        return torch.nn.functional.normalize(vector, dim=1)[0].numpy()

    embed(paths[0])  # warm-up
    started = time.perf_counter()
    vectors = [embed(path) for path in paths]
    elapsed = time.perf_counter() - started
    assert len(vectors) == len(paths)
    return {"original_ips": len(paths) / elapsed}


def child_precision(task: dict[str, Any]) -> dict[str, Any]:
    """Forward speed in each precision and memory layout; fp32 vs bf16 vectors of the photos."""
    import torch

    from imgvec.embed import Embedder, auto_precision, prepare
    from imgvec.embedders.registry import get_spec, resolve_weights
    from imgvec.images import read_file

    model = task["model"]
    spec = get_spec(model)
    weights = resolve_weights(spec, task["weights"])
    speeds: dict[str, float] = {}
    layouts = {"nhwc": spec, "nchw": replace(spec, channels_last=False)}
    for layout, variant in layouts.items():
        if layout == "nhwc" and not spec.channels_last:
            continue
        for precision in ("fp32", "bf16"):
            embedder = Embedder(variant, spec.default_layer, weights, precision=precision)
            speeds[f"{precision}_{layout}"] = forward_throughput(embedder, 16, 1, 3, 2.0)[0]
            del embedder
    tensors = [prepare(read_file(p), spec.preprocess)[1] for p in task["paths"]]
    vectors = {}
    for precision in ("fp32", "bf16"):
        embedder = Embedder(spec, spec.default_layer, weights, precision=precision)
        vectors[precision] = np.concatenate(
            [
                embedder.embed_tensors(torch.stack(tensors[i : i + ADD_BATCH]))
                for i in range(0, len(tensors), ADD_BATCH)
            ]
        )
        del embedder
    cosines = np.sum(vectors["fp32"] * vectors["bf16"], axis=1)
    between = vectors["fp32"] @ vectors["fp32"].T
    result: dict[str, Any] = {
        "between_mean": float(between[~np.eye(len(between), dtype=bool)].mean()),
        "speeds": speeds,
        "auto": auto_precision(torch.device("cpu")),
        "cosine_mean": float(cosines.mean()),
        "cosine_min": float(cosines.min()),
    }
    groups = task.get("groups")
    if groups is not None:
        for precision, found in vectors.items():
            result[f"ns_{precision}"], result[f"map_{precision}"] = ns_and_map(found, groups)
    return result


def child_draft(task: dict[str, Any]) -> dict[str, Any]:
    """Full vs reduced-size decoding of large JPEGs: time, and the vectors' agreement."""
    import torch

    from imgvec.embed import Embedder, prepare, preprocess_image
    from imgvec.embedders.registry import get_spec, resolve_weights
    from imgvec.images import decode, read_file

    spec = get_spec(task["model"])
    prep = spec.preprocess
    datas = [read_file(p) for p in task["paths"]]
    times: dict[str, list[float]] = {"decode_full": [], "decode_draft": [], "prepare_full": []}
    times["prepare_draft"] = []
    full, reduced = [], []
    for data in datas:
        begin = time.perf_counter()
        picture = decode(data)
        times["decode_full"].append(time.perf_counter() - begin)
        full.append(preprocess_image(picture.image, prep))
        times["prepare_full"].append(time.perf_counter() - begin)
        begin = time.perf_counter()
        decode(data, min_side=prep.resize)
        times["decode_draft"].append(time.perf_counter() - begin)
        begin = time.perf_counter()
        reduced.append(prepare(data, prep)[1])
        times["prepare_draft"].append(time.perf_counter() - begin)
    embedder = Embedder(
        spec, spec.default_layer, resolve_weights(spec, task["weights"]), precision="fp32"
    )
    cosines = np.sum(
        embedder.embed_tensors(torch.stack(full)) * embedder.embed_tensors(torch.stack(reduced)),
        axis=1,
    )
    return {
        **{f"{name}_ms": 1000 * statistics.median(values) for name, values in times.items()},
        "cosine_mean": float(cosines.mean()),
        "cosine_min": float(cosines.min()),
    }


CHILDREN = {
    "ingest": child_ingest,
    "original": child_original,
    "precision": child_precision,
    "draft": child_draft,
}


def ns_and_map(vectors: np.ndarray, groups: Sequence[int]) -> tuple[float, float]:
    """UKBench N-S score (group members in the top 4, query included; 4.0 is perfect) and mAP
    of each query's other group members in the ranking of all the rest."""
    from imgvec.evaluate import average_precision

    labels = np.asarray(groups)
    scores = vectors @ vectors.T
    ns, aps = 0, []
    for query in range(len(labels)):
        order = np.argsort(-scores[query], kind="stable")
        same = labels[order] == labels[query]
        ns += int(same[:4].sum())
        others = order != query
        aps.append(average_precision(list(same[others]), int(same[others].sum())))
    return ns / len(labels), float(np.mean(aps))


def run_child(task: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in a fresh process, after waiting for a quiet moment; ``other_cores`` is
    what other processes used meanwhile."""
    wait_for_quiet(args.quiet, args.max_wait)
    meter = CpuMeter()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_ingest", "--child", json.dumps(task)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
        timeout=1800,
    )
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "other_cores": meter.other_cores()}


# --- the report ----------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def bound(row: dict[str, Any]) -> float:
    """Images/s if preparing photos and running the model could not overlap at all."""
    return 1 / (1 / row["forward_ips"] + 1 / row["prepare_ips"])


def ingest_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| model | photos | precision | forward img/s | prepare img/s (alone) | bound img/s "
        "| add img/s | add / forward | add / bound | model share of add | original loop img/s "
        "| add / original | other procs, cores |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        original = row.get("original_ips")
        lines.append(
            f"| `{row['model']}` | {row['set']} ({row['n']}) | {row['precision']} "
            f"| {_f(row['forward_ips'])} | {_f(row['prepare_ips'])} | {_f(bound(row))} "
            f"| {_f(row['add_ips'])} | **{row['add_ips'] / row['forward_ips']:.2f}** "
            f"| {row['add_ips'] / bound(row):.2f} | {row['model_share']:.0%} | {_f(original)} "
            f"| {_f(None if original is None else row['add_ips'] / original, 2)}x "
            f"| {_f(row['other_cores'], 2)} |"
        )
    return "\n".join(lines)


def precision_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| model | weights | fp32 NCHW | fp32 NHWC | bf16 NCHW | bf16 NHWC | auto runs "
        "| auto / fp32 NCHW | cosine fp32 vs bf16: mean (min) | cosine of two photos: mean "
        "| N-S fp32 / bf16 | mAP fp32 / bf16 |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        speeds = row["speeds"]
        layout = "nhwc" if "bf16_nhwc" in speeds else "nchw"
        chosen = speeds[f"{row['auto']}_{layout}"]
        quality = ("—", "—")
        if "ns_fp32" in row:
            quality = (
                f"{row['ns_fp32']:.3f} / {row['ns_bf16']:.3f}",
                f"{row['map_fp32']:.3f} / {row['map_bf16']:.3f}",
            )
        lines.append(
            f"| `{row['model']}` | {row['weights_label']} | {_f(speeds.get('fp32_nchw'))} "
            f"| {_f(speeds.get('fp32_nhwc'))} | {_f(speeds.get('bf16_nchw'))} "
            f"| {_f(speeds.get('bf16_nhwc'))} | {row['auto']} {layout.upper()} "
            f"| {chosen / speeds['fp32_nchw']:.2f}x "
            f"| {row['cosine_mean']:.4f} ({row['cosine_min']:.4f}) | {row['between_mean']:.4f} "
            f"| {quality[0]} | {quality[1]} |"
        )
    return "\n".join(lines)


def draft_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| photos | decode ms, full | decode ms, reduced | decode + preprocess ms, full "
        "| decode + preprocess ms, reduced | speed-up | cosine full vs reduced: mean (min) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['set']} ({row['n']}) | {row['decode_full_ms']:.1f} "
            f"| {row['decode_draft_ms']:.1f} | {row['prepare_full_ms']:.1f} "
            f"| {row['prepare_draft_ms']:.1f} "
            f"| {row['prepare_full_ms'] / row['prepare_draft_ms']:.1f}x "
            f"| {row['cosine_mean']:.4f} ({row['cosine_min']:.4f}) |"
        )
    return "\n".join(lines)


def interpretation(
    ingest: Sequence[dict[str, Any]],
    precision: Sequence[dict[str, Any]],
    draft: Sequence[dict[str, Any]],
) -> str:
    """What the tables say about each target, computed from them."""
    parts = []
    for row in ingest:
        if row["model"] not in HEAVY_MODELS or row["precision_asked"] != "auto":
            continue
        ratio = row["add_ips"] / row["forward_ips"]
        original = row.get("original_ips")
        verdict = "met" if ratio >= 0.85 else "NOT met"
        text = f"`{row['model']}` on {row['set']}: add / forward {ratio:.2f} ({verdict}"
        if ratio < 0.85:
            cap = bound(row)
            text += (
                f": preparing the photos alone runs at {row['prepare_ips']:.0f} img/s on the same "
                f"cores, which caps add at {cap:.1f} img/s, {cap / row['forward_ips']:.2f} of "
                f"forward; add reaches {row['add_ips'] / cap:.2f} of that cap"
            )
        text += ")"
        if original:
            speedup = row["add_ips"] / original
            text += f", {speedup:.1f}x the original loop ({'met' if speedup >= 3 else 'NOT met'}"
            if speedup < 3:
                text += (
                    f": the batched {row['precision']} forward pass itself is only "
                    f"{row['forward_ips'] / original:.1f}x the original loop here, so the "
                    "model's arithmetic is the limit"
                )
            text += ")"
        parts.append(text)
    light = [r for r in ingest if r["model"] not in HEAVY_MODELS]
    light_text = ", ".join(
        f"`{r['model']}` on {r['set']} {r['add_ips'] / bound(r):.2f}" for r in light
    )
    informative = [r for r in precision if r["between_mean"] < CLUSTERED]
    cosines = [r["cosine_mean"] for r in informative]
    clustered = [f"`{r['model']}`" for r in precision if r["between_mean"] >= CLUSTERED]
    worst = min(informative, key=lambda r: r["cosine_min"]) if informative else None
    quality = [
        f"`{r['model']}` N-S {r['ns_fp32']:.3f} / {r['ns_bf16']:.3f}, "
        f"mAP {r['map_fp32']:.3f} / {r['map_bf16']:.3f}"
        for r in precision
        if "ns_fp32" in r
    ]
    text = (
        "**Targets.** " + "; ".join(parts) + ". "
        "The light models, whose forward pass is now as fast as preparing the photos, reach "
        f"{light_text} of the bound (preparing and the model not overlapping at all; above 1 "
        "means they overlap). "
    )
    if worst is not None:
        text += (
            f"bf16 against fp32, where photos' vectors are spread out (mean cosine of two photos "
            f"below {CLUSTERED}): mean cosine per model {min(cosines):.4f} to {max(cosines):.4f} "
            f"(target 0.99), the lowest single photo {worst['cosine_min']:.4f} "
            f"(`{worst['model']}`); "
            f"retrieval with real weights, fp32 / bf16: {'; '.join(quality) or 'not measured'}. "
        )
    if clustered:
        text += (
            f"With random weights, {', '.join(clustered)} map all photos close together (mean "
            f"cosine of two photos {CLUSTERED} or more), so their fp32 / bf16 agreement proves "
            "little; their real weights need a download. "
        )
    for row in draft:
        text += (
            f"Reduced-size decoding makes preparing a {row['set']} photo "
            f"{row['prepare_full_ms'] / row['prepare_draft_ms']:.1f}x cheaper and changes its "
            f"vector by a cosine of {row['cosine_mean']:.4f} on average. "
        )
    return text


def section(
    command: str,
    ingest: Sequence[dict[str, Any]],
    precision: Sequence[dict[str, Any]],
    draft: Sequence[dict[str, Any]],
    runtime_s: float,
    other_cores: float | None,
) -> str:
    import faiss
    import torch

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpu = "AVX512-BF16" if torch.cpu._is_avx512_bf16_supported() else "no bf16 units"
    paragraphs = [
        START_MARKER,
        "## Ingest at the speed of the model (issue 6)",
        f"```sh\n{command}\n```",
        f"- Run {when}, {runtime_s / 60:.1f} minutes in all. Machine: {os.cpu_count()} CPUs "
        f"({cpu}), torch {torch.__version__} with {torch.get_num_threads()} threads, faiss "
        f"{faiss.__version__}, Python {sys.version.split()[0]}. Other processes kept "
        f"{_f(other_cores, 2)} of the cores busy on average during the run. Every row is "
        "measured in a fresh process after waiting for a quiet second.\n"
        "- Photos: *UKBench*, the 640x480 JPEGs of `../shared/eval/ukbench140`; *12 MP*, "
        "4000x3000 JPEGs (about 3 MB, quality 92) that the benchmark makes from the first "
        "UKBench photos by upscaling and adding noise.\n"
        "- **forward**: `Embedder.embed_tensors` on a pre-made random batch of 32 (add's batch "
        "size) at the row's precision, random weights (as fast as real ones), median batch time. "
        "**prepare**: what `add` does per photo besides the model (read, SHA-256, decode at "
        "reduced size, preprocess) on add's worker threads, nothing else running. **bound** = "
        "1 / (1 / forward + 1 / prepare), the rate if preparing could not overlap the model at "
        "all. **add**: `Library.add(folder)` into a fresh library with the model already "
        "loaded, everything included (database, index build). *model share*: time in "
        "`embed_tensors` over add's time.\n"
        "- **original loop**: the original notebook's loop, re-implemented faithfully in "
        '`child_original`: per photo `Image.open().convert("RGB")`, torchvision\'s `Resize`/'
        "`CenterCrop`/`ToTensor`/`Normalize`, `model(x.unsqueeze(0))` in float32 under "
        "`no_grad`; same model, the first photos of the same set, in a fresh process with glibc "
        "malloc as it comes.",
        ingest_table(ingest),
        "**Precision.** Forward images/s at batch 16 in a fresh process per model, fp32 and bf16 "
        "(autocast), in NCHW and in NHWC (`channels_last`, used for the CNNs); *auto runs* is "
        "what `--precision auto` picks on this CPU, and in which layout. Cosine between the fp32 "
        "and the bf16 vector of each UKBench photo (all of them); N-S and mAP with real weights "
        "(only those available offline).",
        precision_table(precision),
        "**Reduced-size JPEG decoding** (`images.decode(min_side=...)`, Pillow's `draft`): "
        "median milliseconds per photo on one thread, decoding alone and with the model's "
        "preprocessing, for the full decode and the reduced one that `add` uses; and the cosine "
        "between the `mobilenet_v2` vectors (real weights, fp32) of the two. UKBench photos are "
        "too small to reduce (640x480 against a resize to 256).",
        draft_table(draft),
        interpretation(ingest, precision, draft),
        END_MARKER,
    ]
    return "\n\n".join(paragraphs)


# --- running it ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_ingest", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of photos")
    parser.add_argument("--groundtruth", type=Path, default=DEFAULT_GROUNDTRUTH)
    parser.add_argument("--mobilenet-weights", type=Path, default=DEFAULT_MOBILENET_WEIGHTS)
    parser.add_argument("--models", default=",".join(INGEST_MODELS), help="ingest rows' models")
    parser.add_argument(
        "--precision-models", default=",".join(PRECISION_MODELS), help="precision rows' models"
    )
    parser.add_argument("--large", type=int, default=48, help="12-megapixel photos to make")
    parser.add_argument(
        "--original", type=int, default=48, help="photos the original loop embeds (the first)"
    )
    parser.add_argument("--tmp", type=Path, help="where the 12 MP photos are kept")
    parser.add_argument("--out", type=Path, help="write the section into this markdown file")
    parser.add_argument("--quiet", type=float, default=0.2, help="cores others may use")
    parser.add_argument("--max-wait", type=float, default=20.0, help="seconds to wait for quiet")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        task = json.loads(args.child)
        print(json.dumps(CHILDREN[task["kind"]](task)))
        return 0
    started = time.perf_counter()
    run_cpu = CpuMeter()
    command = shlex.join([*COMMAND.split(), *(sys.argv[1:] if argv is None else argv)])
    photos = sorted(p for p in args.images.iterdir() if p.suffix.lower() in {".jpg", ".jpeg"})
    with tempfile.TemporaryDirectory(prefix="imgvec-bench-ingest-") as scratch:
        large_dir = (args.tmp or Path(scratch)) / f"large-{LARGE_SIZE[0]}x{LARGE_SIZE[1]}"
        _log(f"making {args.large} 12 MP photos in {large_dir}")
        large = make_large_jpegs(photos[: args.large], large_dir / "photos")
        sets = {"UKBench": (args.images, photos), "12 MP": (large_dir / "photos", large)}
        ingest = measure_ingest(args, sets)
        precision = measure_precision(args, photos)
        draft = []
        if args.mobilenet_weights.is_file():
            _log("draft: 12 MP")
            task = {"kind": "draft", "model": "mobilenet_v2", "paths": [str(p) for p in large]}
            task["weights"] = str(args.mobilenet_weights)
            draft.append({"set": "12 MP", "n": len(large), **run_child(task, args)})
    runtime = time.perf_counter() - started
    text = section(command, ingest, precision, draft, runtime, run_cpu.other_cores())
    print(text)
    if args.out is not None:
        report.write_section(args.out, text, START_MARKER, END_MARKER, HEADER)
        _log(f"wrote {args.out}")
    return 0


def measure_ingest(
    args: argparse.Namespace, sets: dict[str, tuple[Path, list[Path]]]
) -> list[dict[str, Any]]:
    rows = []
    for model in (m.strip() for m in args.models.split(",") if m.strip()):
        for name, (folder, paths) in sets.items():
            asked = ["auto", "fp32"] if model in HEAVY_MODELS and name == "UKBench" else ["auto"]
            original = None
            if model in HEAVY_MODELS:
                _log(f"{model} on {name}: original loop")
                subset = [str(p) for p in paths[: args.original]]
                original = run_child({"kind": "original", "model": model, "paths": subset}, args)
            for precision in asked:
                _log(f"{model} on {name}: forward, prepare, add ({precision})")
                task = {"kind": "ingest", "model": model, "precision": precision}
                task.update(folder=str(folder), paths=[str(p) for p in paths])
                row = run_child(task, args)
                row.update(model=model, set=name, n=len(paths), precision_asked=precision)
                if original is not None:
                    row["original_ips"] = original["original_ips"]
                rows.append(row)
    return rows


def measure_precision(args: argparse.Namespace, photos: Sequence[Path]) -> list[dict[str, Any]]:
    truth = read_groundtruth(args.groundtruth)
    rows = []
    for model in (m.strip() for m in args.precision_models.split(",") if m.strip()):
        real = offline_weights(model, args.mobilenet_weights)
        weights, label = real if real is not None else ("none", "random")
        _log(f"precision: {model} ({label})")
        task: dict[str, Any] = {"kind": "precision", "model": model, "weights": weights}
        task["paths"] = [str(p) for p in photos]
        if real is not None and truth is not None:
            task["groups"] = [truth[p.name] for p in photos]
        rows.append({"model": model, "weights_label": label, **run_child(task, args)})
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
