"""Benchmark for issue 18: image and text embedding speed of CLIP ViT-B/32 beside
efficientnet_lite0, on this machine.

    .venv/bin/python -m benchmarks.bench_clip --out BENCHMARKS.md

Per model (random weights: as fast as real ones), in one process each: images/s of the image
tower on a seeded random batch of ``--batch`` inputs, in fp32 and bf16 on torch (the median
batch time over at least ``--batches`` batches after one unrecorded; ``common.forward_throughput``)
and in fp32 on ONNX Runtime (the export ``add`` makes; its batches run there for convolutional
networks); for CLIP, texts/s of the text tower on ``--batch`` short captions, and the seconds of
one caption alone (what a query by words costs once the model is loaded).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

from benchmarks import common

MODULE = "benchmarks.bench_clip"
MODELS = ("clip_vit_b_32", "efficientnet_lite0")
CAPTIONS = ("a photo of a dog", "a red bicycle", "a city at night", "a shoe", "two people")


def _median_seconds(call: Any, repeats: int) -> float:
    call()  # unrecorded
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def child_model(task: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    from imgvec.embed.onnx import OnnxEmbedder, export
    from imgvec.embed.registry import get_spec, resolve_weights
    from imgvec.embed.runtime import Embedder

    spec = get_spec(task["model"])
    weights = resolve_weights(spec, "none")
    batch, batches = task["batch"], task["batches"]
    result: dict[str, Any] = {"model": task["model"], "images": {}, "texts": {}}
    embedders = {}
    for precision in ("fp32", "bf16"):
        embedder = Embedder(spec, spec.default_layer, weights, torch.device("cpu"), precision)
        embedders[precision] = embedder
        result["images"][f"torch {precision}"] = common.forward_throughput(
            embedder, batch, 1, batches, 2.0
        )[0]
    crop = spec.preprocess.crop
    inputs = np.random.default_rng(0).standard_normal((batch, 3, crop, crop), dtype=np.float32)
    onnx = OnnxEmbedder(export(embedders["fp32"]), embedders["fp32"].dim)
    seconds = _median_seconds(lambda: onnx.embed_inputs(inputs), batches)
    result["images"]["onnxruntime fp32"] = batch / seconds
    if spec.encode_text is not None:
        texts = [CAPTIONS[i % len(CAPTIONS)] for i in range(batch)]
        for precision, embedder in embedders.items():
            seconds = _median_seconds(lambda e=embedder: e.embed_text(texts), batches)
            result["texts"][f"torch {precision}"] = batch / seconds
            one = _median_seconds(lambda e=embedder: e.embed_text(texts[:1]), batches)
            result["texts"][f"one caption {precision} s"] = one
    return result


WORKERS = {"model": child_model}


def tables(rows: list[dict[str, Any]], run_line: str) -> dict[str, str]:
    ways = ("torch fp32", "torch bf16", "onnxruntime fp32")
    images = common.table(
        "model | image img/s: " + " | ".join(ways),
        (f"`{r['model']}` | " + " | ".join(f"{r['images'][w]:.1f}" for w in ways) for r in rows),
        "lr",
    )
    texts = common.table(
        "model | text texts/s: torch fp32 | torch bf16 | one caption: fp32 | bf16",
        (
            f"`{r['model']}` | {r['texts']['torch fp32']:.1f} | {r['texts']['torch bf16']:.1f} "
            f"| {r['texts']['one caption fp32 s'] * 1000:.1f} ms "
            f"| {r['texts']['one caption bf16 s'] * 1000:.1f} ms"
            for r in rows
            if r["texts"]
        ),
        "lr",
    )
    return {"run": run_line, "images": images, "texts": texts}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4)
    common.report_args(parser)
    args = parser.parse_args(argv)
    if args.child:
        return common.child_main(WORKERS, args.child)
    started, meter = time.perf_counter(), common.CpuMeter()
    rows = []
    for name in (n for n in args.models.split(",") if n):
        common.log(f"{name}: images and texts")
        task = {"kind": "model", "model": name, "batch": args.batch, "batches": args.batches}
        rows.append(common.run_quietly(MODULE, task, quiet=0.2, max_wait=60))
    run_line = common.run_line(
        common.command_line(MODULE, argv), started, meter, cpu_threads=os.cpu_count()
    )
    common.publish("bench_clip", tables(rows, run_line), {"rows": rows}, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
