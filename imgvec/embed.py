"""Running an embedding model: weights loading, preprocessing, batched inference, normalisation."""

from __future__ import annotations

import urllib.error
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from imgvec.embedders.registry import RANDOM_SEED, ModelSpec, Preprocess, WeightsChoice
from imgvec.errors import WeightsUnavailable

PRECISIONS = ("fp32", "bf16")
"""bf16 runs the model under bfloat16 autocast; vectors are always returned as float32."""

OFFLINE_HINT = (
    "use the offline model, whose weights install with imgvec (--model efficientnet_lite0), or "
    "supply the weights as a local file with --weights PATH (a state dict for this architecture)"
)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def preprocess_image(image: Image.Image, prep: Preprocess) -> torch.Tensor:
    """RGB picture -> normalised CHW float tensor, as the model's training recipe did it."""
    image = F.resize(
        image, [prep.resize], interpolation=F.InterpolationMode.BILINEAR, antialias=True
    )
    image = F.center_crop(image, [prep.crop, prep.crop])
    tensor = F.to_dtype(F.pil_to_tensor(image), torch.float32, scale=True)
    return F.normalize(tensor, list(prep.mean), list(prep.std))


def _load_state(spec: ModelSpec, weights: WeightsChoice) -> Mapping[str, Any] | None:
    if weights.is_random:
        return None
    if weights.path is not None:
        try:
            state = torch.load(weights.path, map_location="cpu", weights_only=True)
        except FileNotFoundError as error:
            raise WeightsUnavailable(
                f"weights file {weights.path} is gone; pass it again with --weights PATH"
            ) from error
        except Exception as error:
            raise WeightsUnavailable(f"cannot load weights file {weights.path}: {error}") from error
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

    def __init__(
        self,
        spec: ModelSpec,
        layer: str,
        weights: WeightsChoice,
        device: torch.device | None = None,
        precision: str = "fp32",
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
        self.precision = precision
        self.spec = spec
        self.layer, layer_spec = spec.layer(layer)
        self.dim = layer_spec.dim
        self.device = device or pick_device()
        self.model = build_model(spec, self.layer, weights).to(self.device)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return preprocess_image(image, self.spec.preprocess)

    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16"),
        ):
            output = self.model(batch.to(self.device))
            output = torch.nn.functional.normalize(output.float().flatten(1), dim=1)
        vectors = output.cpu().numpy().astype(np.float32, copy=False)
        if vectors.shape[1] != self.dim:
            raise RuntimeError(
                f"{self.spec.name}/{self.layer} gave {vectors.shape[1]}-d vectors, "
                f"expected {self.dim}"
            )
        return vectors

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.embed_tensors(torch.stack([self.preprocess(image) for image in images]))
