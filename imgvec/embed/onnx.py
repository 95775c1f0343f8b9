"""Query-time inference without torch (issue 15): a model exported once to ONNX, run by ONNX
Runtime, whose import and session take about 0.2 s where torch's import takes 2-5 s.

:func:`export` is the torch side: the loaded model (its layer cut, batch norms folded) in fp32
and contiguous memory, traced by ``torch.onnx.export`` (the TorchScript exporter,
``dynamo=False``: the dynamo exporter needs onnxscript besides, and traces these eval-mode CNNs
and ViTs to the same graph), opset :data:`OPSET`, the batch dimension dynamic.
:class:`OnnxEmbedder` is the runtime side: it imports onnxruntime only, takes the arrays of
:func:`imgvec.embed.pixels.model_input`, and flattens and L2-normalises the outputs as
:class:`imgvec.embed.runtime.Embedder` does. ``tests/test_onnx.py`` holds the two to cosine
>= 0.9999 for every built-in model.
"""

from __future__ import annotations

import copy
import io
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from imgvec.embed.runtime import Embedder

OPSET = 17
INPUT, OUTPUT = "pixels", "features"
MIN_COSINE = 0.9999
"""An export must give the torch model's fp32 vectors to this cosine (issue 15's bar)."""


class ExportMismatch(RuntimeError):
    """The exported model does not give the torch model's vectors."""


def exporter() -> str:
    """What makes an export, as recorded with it: ``torch <version>, opset <n>``."""
    import torch

    return f"torch {torch.__version__}, opset {OPSET}"


def export(embedder: Embedder) -> bytes:
    """The embedder's model as an ONNX file's bytes, checked: ONNX Runtime gives the torch
    model's fp32 vectors of two seeded noise inputs to cosine >= :data:`MIN_COSINE`, else
    :class:`ExportMismatch`. Raises whatever the exporter raises for a model it cannot trace
    (the caller falls back to torch)."""
    import torch

    model = copy.deepcopy(embedder.model).float().to("cpu", memory_format=torch.contiguous_format)
    crop = embedder.spec.preprocess.crop
    out = io.BytesIO()
    with warnings.catch_warnings():  # the exporter's deprecation notes are not the user's business
        warnings.simplefilter("ignore")
        _export(torch, model, torch.zeros(1, 3, crop, crop), out)
    data = out.getvalue()
    sample = np.random.default_rng(0).standard_normal((2, 3, crop, crop), dtype=np.float32)
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(model(torch.from_numpy(sample)).flatten(1))
    cosines = (OnnxEmbedder(data, embedder.dim).embed_inputs(sample) * expected.numpy()).sum(1)
    if float(cosines.min()) < MIN_COSINE:
        raise ExportMismatch(
            f"ONNX Runtime's vectors differ from torch's (cosine {float(cosines.min()):.5f})"
        )
    return data


def _export(torch: Any, model: Any, sample: Any, out: io.BytesIO) -> None:
    torch.onnx.export(
        model.eval(),
        (sample,),
        out,
        dynamo=False,
        input_names=[INPUT],
        output_names=[OUTPUT],
        dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
        opset_version=OPSET,
    )


class OnnxEmbedder:
    """An exported model in an ONNX Runtime session (CPU; CUDA first where the runtime has it)."""

    runtime = "onnxruntime"

    def __init__(
        self, model: bytes | str, dim: int, optimize: bool = True, threads: int | None = None
    ) -> None:
        """``model``: the ONNX file (its external weights beside it) or a whole model's bytes.
        ``threads``: the session's intra-op threads (None: ONNX Runtime's default, one per
        core). ``optimize``: all of ONNX Runtime's graph optimisations (its default), for many
        batches; else only the basic ones, which make the session 1.6-2.7x faster to create
        (mobilenet_v2 0.052 -> 0.019 s, vit_b_16 1.54 -> 0.97 s on this project's CPU), for a
        query's one photo (its run then takes 0.017 -> 0.030 s for mobilenet_v2, the same for
        vit_b_16)."""
        import onnxruntime

        available = onnxruntime.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings are not the user's business
        if threads is not None:
            options.intra_op_num_threads = threads
        if not optimize:
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
            # Nor are the weights re-laid for the matrix kernels: that copies them all, 0.4-0.8 s
            # of vit_b_16's session, for one photo's run (vectors within 3e-6).
            options.add_session_config_entry("session.disable_prepacking", "1")
        # No fallback: on a failure it prints to stdout and tries the same providers again.
        self.session = onnxruntime.InferenceSession(
            model, options, providers=providers, enable_fallback=0
        )
        self.dim = dim

    def embed_inputs(self, inputs: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) float32 model inputs -> (B, dim) float32 L2-normalised vectors."""
        [output] = self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(inputs, np.float32)})
        vectors = np.asarray(output, dtype=np.float32).reshape(len(inputs), -1)
        if vectors.shape[1] != self.dim:
            raise RuntimeError(f"the ONNX model gave {vectors.shape[1]}-d vectors, not {self.dim}")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)
