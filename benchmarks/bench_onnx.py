"""Benchmark for issue 15: ONNX Runtime against torch, for a cold query and for ``add``'s batches.

    .venv/bin/python -m benchmarks.bench_onnx --out BENCHMARKS.md

Per model (``--models``; efficientnet_lite0 with its installed weights, mobilenet_v2 with the
shared file, the others random):
1. cold: in a fresh process each (``--repeats``, medians), one photo embedded from nothing:
   torch (import torch and imgvec's runtime, build the model, one image) against ONNX Runtime
   (import onnxruntime, open the exported file, one image). Both from the same
   ``pixels.model_input`` array; the process's own start is excluded (timed inside).
2. batches: images/s over ``--batches`` batches of ``--batch-size`` inputs after one unrecorded
   batch: torch fp32, torch at ``auto`` precision (bf16 where the CPU has it; channels-last for
   the models that use it), ONNX Runtime fp32 (its default threads).
The export's seconds and size are reported too, and every ONNX vector's cosine to torch fp32.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common

MODULE = "benchmarks.bench_onnx"
MODELS = ("efficientnet_lite0", "mobilenet_v2", "resnet50", "vit_b_16")


def _weights(name: str) -> str:
    """Real weights where no download is needed (:func:`common.offline_weights`), else random."""
    return (common.offline_weights(name, common.MOBILENET_WEIGHTS) or ("none", ""))[0]


def _inputs(name: str, count: int) -> np.ndarray:
    from PIL import Image

    import imgvec.embed.models.efficientnet_lite
    import imgvec.embed.models.torchvision_models  # noqa: F401
    from imgvec.decode.images import decode, read_file
    from imgvec.embed.pixels import model_input
    from imgvec.embed.registry import get_spec

    prep = get_spec(name).preprocess
    photos = sorted(common.UKBENCH.glob("*.jpg"))[:count] if common.UKBENCH.is_dir() else []
    images = [decode(read_file(str(p)), min_side=prep.resize).image for p in photos]
    rng = np.random.default_rng(0)
    while len(images) < count:
        images.append(Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)))
    return np.stack([model_input(image, prep) for image in images])


def cold_torch(task: dict[str, Any]) -> dict[str, Any]:
    """In a fresh child: torch's whole way to one vector."""
    started = time.perf_counter()
    import torch

    import imgvec.embed.models.efficientnet_lite
    import imgvec.embed.models.torchvision_models  # noqa: F401
    from imgvec.embed.registry import get_spec, resolve_weights
    from imgvec.embed.runtime import Embedder

    imported = time.perf_counter()
    spec = get_spec(task["model"])
    embedder = Embedder(spec, spec.default_layer, resolve_weights(spec, task["weights"]))
    built = time.perf_counter()
    embedder.embed_tensors(torch.from_numpy(np.load(task["input"])))
    done = time.perf_counter()
    return {"import": imported - started, "load": built - imported, "embed": done - built}


def cold_onnx(task: dict[str, Any]) -> dict[str, Any]:
    """In a fresh child: ONNX Runtime's whole way to one vector."""
    started = time.perf_counter()
    import onnxruntime  # noqa: F401  (OnnxEmbedder imports it on first use: counted here)

    from imgvec.embed.onnx import OnnxEmbedder

    imported = time.perf_counter()
    model = OnnxEmbedder(task["file"], task["dim"])
    built = time.perf_counter()
    model.embed_inputs(np.load(task["input"]))
    done = time.perf_counter()
    return {"import": imported - started, "load": built - imported, "embed": done - built}


WORKERS = {"cold_torch": cold_torch, "cold_onnx": cold_onnx}


def measure(name: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import torch

    from imgvec.embed.onnx import OnnxEmbedder, export
    from imgvec.embed.registry import get_spec, resolve_weights
    from imgvec.embed.runtime import Embedder

    spec = get_spec(name)
    weights = _weights(name)
    choice = resolve_weights(spec, weights)
    fp32 = Embedder(spec, spec.default_layer, choice, torch.device("cpu"), "fp32")
    started = time.perf_counter()
    exported = export(fp32)
    export_s = time.perf_counter() - started
    onnx_file = tmp / f"{name}.onnx"
    onnx_file.write_bytes(exported)
    inputs = _inputs(name, args.batch_size)
    one = tmp / f"{name}-one.npy"
    np.save(one, inputs[:1])

    cold: dict[str, list[dict[str, float]]] = {"torch": [], "onnx": []}
    for _ in range(args.repeats):
        task = {"model": name, "weights": weights, "input": str(one)}
        cold["torch"].append(common.run_child(MODULE, {"kind": "cold_torch", **task}, quiet=True))
        task = {"file": str(onnx_file), "dim": fp32.dim, "input": str(one)}
        cold["onnx"].append(common.run_child(MODULE, {"kind": "cold_onnx", **task}, quiet=True))

    auto = Embedder(spec, spec.default_layer, choice, torch.device("cpu"), "auto")
    runtime = OnnxEmbedder(exported, fp32.dim)
    batch = torch.from_numpy(inputs)
    ways = {
        "torch_fp32": lambda: fp32.embed_tensors(batch),
        f"torch_{auto.precision}": lambda: auto.embed_tensors(batch),
        "onnx_fp32": lambda: runtime.embed_inputs(inputs),
    }
    speed = {}
    for way, run in ways.items():
        run()  # warm-up, unrecorded
        started = time.perf_counter()
        for _ in range(args.batches):
            run()
        speed[way] = args.batches * len(inputs) / (time.perf_counter() - started)
    cosine = float((runtime.embed_inputs(inputs) * fp32.embed_tensors(batch)).sum(axis=1).min())
    common.log(f"{name}: export {export_s:.2f} s; {speed}")
    return {
        "model": name,
        "weights": "random" if weights == "none" else "real",
        "export_s": export_s,
        "onnx_mb": len(exported) / common.MIB,
        "cold": {
            way: {part: statistics.median(r[part] for r in runs) for part in runs[0]}
            for way, runs in cold.items()
        },
        "speed": speed,
        "auto_precision": auto.precision,
        "min_cosine": cosine,
    }


def tables(rows: list[dict[str, Any]], run_line: str) -> dict[str, str]:
    def cold_cells(way: dict[str, float]) -> str:
        total = way["import"] + way["load"] + way["embed"]
        return f"{way['import']:.3f} + {way['load']:.3f} + {way['embed']:.3f} = **{total:.2f}**"

    cold = common.table(
        "model | weights | export s | ONNX MB | torch: import + load + 1 image (s) "
        "| ONNX Runtime: import + session + 1 image (s) | min cosine to torch fp32",
        (
            f"`{r['model']}` | {r['weights']} | {r['export_s']:.2f} | {r['onnx_mb']:.1f} "
            f"| {cold_cells(r['cold']['torch'])} | {cold_cells(r['cold']['onnx'])} "
            f"| {r['min_cosine']:.6f}"
            for r in rows
        ),
        "llr",
    )
    batches = common.table(
        "model | torch fp32 img/s | torch auto img/s (precision) | ONNX Runtime fp32 img/s "
        "| ONNX / best torch",
        (
            f"`{r['model']}` | {r['speed']['torch_fp32']:.1f} "
            f"| {r['speed']['torch_' + r['auto_precision']]:.1f} ({r['auto_precision']}) "
            f"| {r['speed']['onnx_fp32']:.1f} "
            f"| {r['speed']['onnx_fp32'] / _best_torch(r['speed']):.2f}x"
            for r in rows
        ),
        "lr",
    )
    return {"run": run_line, "cold": cold, "batches": batches}


def _best_torch(speed: dict[str, float]) -> float:
    return max(v for way, v in speed.items() if way.startswith("torch"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per cold way")
    parser.add_argument("--batches", type=int, default=4, help="timed batches per way")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tmp", type=Path, help="folder for temporary data (default: system)")
    common.report_args(parser)
    args = parser.parse_args(argv)
    if args.child:
        return common.child_main(WORKERS, args.child)
    started, meter = time.perf_counter(), common.CpuMeter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-onnx-", dir=args.tmp))
    try:
        rows = [measure(name, args, tmp) for name in args.models.split(",") if name]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    run_line = common.run_line(
        common.command_line(MODULE, argv), started, meter, cpu_threads=os.cpu_count()
    )
    common.publish("bench_onnx", tables(rows, run_line), {"rows": rows}, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
