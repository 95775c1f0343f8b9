"""Running an embedding model: weights loading, preprocessing, batched inference, normalisation."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
import urllib.error
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from PIL import Image

from imgvec.config import PRECISIONS
from imgvec.embed.pixels import model_input
from imgvec.embed.spec import RANDOM_SEED, ModelSpec, Preprocess, WeightsChoice
from imgvec.errors import ModelError, WeightsUnavailable

OFFLINE_HINT = (
    "use the offline model, whose weights install with imgvec (--model efficientnet_lite0), or "
    "supply the weights as a local file with --weights PATH (a state dict for this architecture)"
)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def auto_precision(device: torch.device) -> str:
    """bf16 where the hardware computes in bfloat16 natively, fp32 elsewhere.

    On CPUs that is AVX512-BF16 or AMX: there bf16 runs every registered model 1.6 to 2.4x faster
    than fp32 and changes retrieval by nothing measurable (BENCHMARKS.md, precision section).
    CPUs without them emulate bf16 more slowly than fp32. On CUDA, GPUs from Ampere on.
    """
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bf16" if native else "fp32"


@functools.cache
def keep_freed_memory() -> bool:
    """Tell glibc malloc to reuse freed memory instead of returning it to the kernel.

    By default every batch's large activation buffers are mmap'd and unmapped again, so each
    batch page-faults all of them back in (10k-30k minor faults per image): that costs the
    small models on CPU up to half their speed (BENCHMARKS.md, allocator check). The price is
    that the process keeps its peak heap size. Once per process; a no-op (False) outside glibc,
    or when the environment variable ``IMGVEC_KEEP_FREED_MEMORY`` is ``0``.
    """
    if platform.libc_ver()[0] != "glibc" or os.environ.get("IMGVEC_KEEP_FREED_MEMORY") == "0":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    return bool(libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 1 << 30))


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """The model with each BatchNorm folded into the convolution before it (inference only):
    one pass over the activations instead of two, 1.4x the speed of mobilenet_v2 on CPU, same
    vectors. Models that torch.fx cannot trace stay as they are."""
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model)
    except Exception:  # not traceable (data-dependent control flow, such as timm's padding)
        return model


def preprocess_image(image: Image.Image, prep: Preprocess) -> torch.Tensor:
    """RGB picture -> normalised CHW float32 tensor of shape ``(3, prep.crop, prep.crop)``, as
    the model's training recipe did it (:func:`imgvec.embed.pixels.model_input`, which runs
    without torch)."""
    return torch.from_numpy(model_input(image, prep))


@contextmanager
def _reading(path: str, into: str = "") -> Iterator[None]:
    """THE errors of reading a ``--weights`` file, as :class:`WeightsUnavailable` in one line."""
    try:
        yield
    except FileNotFoundError as error:
        raise WeightsUnavailable(
            f"weights file {path} is gone; pass it again with --weights PATH"
        ) from error
    except WeightsUnavailable:
        raise
    except Exception as error:
        detail = " ".join(str(error).split())[:300]
        raise WeightsUnavailable(f"cannot load weights file {path}{into}: {detail}") from error


def _load_state(spec: ModelSpec, weights: WeightsChoice) -> Mapping[str, Any] | None:
    if weights.is_random:
        return None
    if weights.path is not None:
        with _reading(weights.path):
            state = torch.load(weights.path, map_location="cpu", weights_only=True)
        if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
            state = state["state_dict"]
        if not isinstance(state, Mapping):
            raise WeightsUnavailable(f"weights file {weights.path} does not hold a state dict")
        return state
    assert spec.load_pretrained is not None
    try:
        return spec.load_pretrained()
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        raise WeightsUnavailable(
            f"could not download the pretrained weights of {spec.name} "
            f"({weights.identity.removeprefix('torchvision:')}): {error}. To work offline, "
            + OFFLINE_HINT
        ) from error


def build_model(spec: ModelSpec, layer: str, weights: WeightsChoice) -> torch.nn.Module:
    """The model with its weights loaded and cut at ``layer``, in eval mode."""
    _, layer_spec = spec.layer(layer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        model = spec.build()
    if weights.path is not None and spec.load_weights_file is not None:
        with _reading(weights.path, f" into {spec.name}"):
            spec.load_weights_file(model, weights.path)
        return layer_spec.head(model).eval()
    state = _load_state(spec, weights)
    if state is not None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            detail = " ".join(str(error).split())[:300]
            raise WeightsUnavailable(
                f"weights {weights.path or weights.identity} do not fit {spec.name}: {detail}"
            ) from error
    return layer_spec.head(model).eval()


class Embedder:
    """A loaded model that turns pictures into L2-normalised float32 vectors."""

    runtime = "torch"

    def __init__(
        self,
        spec: ModelSpec,
        layer: str,
        weights: WeightsChoice,
        device: torch.device | None = None,
        precision: str = "auto",
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
        self.spec = spec
        self.layer, layer_spec = spec.layer(layer)
        self.dim = layer_spec.dim
        self.device = device or pick_device()
        self.precision = auto_precision(self.device) if precision == "auto" else precision
        self.memory_format = torch.channels_last if spec.channels_last else torch.contiguous_format
        keep_freed_memory()
        model = fold_batchnorm(build_model(spec, self.layer, weights))
        self.model = model.to(self.device, memory_format=self.memory_format)

    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16"),
        ):
            output = self.model(batch.to(self.device, memory_format=self.memory_format))
            output = torch.nn.functional.normalize(output.float().flatten(1), dim=1)
        vectors = output.cpu().numpy().astype(np.float32, copy=False)
        if vectors.shape[1] != self.dim:
            raise RuntimeError(
                f"{self.spec.name}/{self.layer} gave {vectors.shape[1]}-d vectors, "
                f"expected {self.dim}"
            )
        return vectors

    def embed_inputs(self, inputs: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) float32 model inputs (:func:`imgvec.embed.pixels.model_input`) ->
        (B, dim) float32 L2-normalised vectors."""
        return self.embed_tensors(torch.from_numpy(inputs))

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (N, dim) float32 L2-normalised vectors in the images' space, by the model's
        text tower. Raises :class:`ModelError` for a model without one."""
        if self.spec.encode_text is None:
            raise ModelError(f"model {self.spec.name} takes no words")
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16"),
        ):
            output = self.spec.encode_text(self.model, list(texts))
            output = torch.nn.functional.normalize(output.float().flatten(1), dim=1)
        return output.cpu().numpy().astype(np.float32, copy=False)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        prep = self.spec.preprocess
        return self.embed_tensors(torch.stack([preprocess_image(image, prep) for image in images]))
