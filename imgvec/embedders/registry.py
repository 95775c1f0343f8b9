"""The embedding-model registry: what a model is, and how its weights are chosen.

Nothing here imports torch, so commands that embed nothing stay fast. To add a model, call
:func:`register` with a :class:`ModelSpec` (see ``torchvision_models.py`` for examples);
packages can do so from an ``imgvec.models`` entry point.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from imgvec.errors import ModelError, WeightsUnavailable
from imgvec.files import normalize, sha256_file

if TYPE_CHECKING:
    from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_SEED = 0
PRECISIONS = ("auto", "fp32", "bf16")
"""How a model computes: bf16 under bfloat16 autocast (vectors are float32 either way); auto is
bf16 where the hardware has bfloat16 arithmetic (:func:`imgvec.embed.auto_precision`)."""
ENTRY_POINT_GROUP = "imgvec.models"


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side, centre-crop a square, scale to 0..1, normalise per channel."""

    resize: int
    crop: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def describe(self) -> str:
        mean = ",".join(f"{v:g}" for v in self.mean)
        std = ",".join(f"{v:g}" for v in self.std)
        return f"resize={self.resize};crop={self.crop};mean={mean};std={std};bilinear"


@dataclass(frozen=True)
class Layer:
    """Which output is the embedding: ``head`` turns the full model into that extractor."""

    dim: int
    head: Callable[[nn.Module], nn.Module]
    description: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[], nn.Module]
    """The architecture with freshly initialised weights."""
    layers: Mapping[str, Layer]
    default_layer: str
    preprocess: Preprocess
    description: str
    pretrained_id: str | None = None
    """Identity of ``--weights default``, e.g. ``torchvision:ViT_B_16_Weights.IMAGENET1K_V1``."""
    load_pretrained: Callable[[], Mapping[str, Any]] | None = None
    """Returns the state dict of ``--weights default`` (may download and cache it)."""
    extra: Mapping[str, str] = field(default_factory=dict)
    channels_last: bool = False
    """Run in NHWC memory layout: faster for convolutional networks on CPU (oneDNN), in fp32 and
    more so in bf16; no effect on the result."""

    def layer(self, name: str | None) -> tuple[str, Layer]:
        chosen = name or self.default_layer
        if chosen not in self.layers:
            raise ModelError(
                f"model {self.name} has no layer {chosen!r}; choose one of: "
                + ", ".join(self.layers)
            )
        return chosen, self.layers[chosen]


@dataclass(frozen=True)
class WeightsChoice:
    """Resolved ``--weights``: an identity to store, and a file to load from (for local files)."""

    identity: str
    path: str | None = None

    @property
    def is_random(self) -> bool:
        return self.identity.startswith("none:")


_REGISTRY: dict[str, ModelSpec] = {}
_plugins_loaded = False


def register(spec: ModelSpec) -> ModelSpec:
    if spec.default_layer not in spec.layers:
        raise ValueError(f"{spec.name}: default layer {spec.default_layer!r} is not in its layers")
    _REGISTRY[spec.name] = spec
    return spec


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from imgvec.embedders import efficientnet_lite, torchvision_models  # noqa: F401  (built-ins)

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        entry.load()


def available() -> dict[str, ModelSpec]:
    _load_plugins()
    return dict(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    specs = available()
    if name not in specs:
        raise ModelError(f"unknown model {name!r}; available: {', '.join(sorted(specs))}")
    return specs[name]


def resolve_weights(spec: ModelSpec, weights: str) -> WeightsChoice:
    """``default`` (pretrained weights), ``none`` (random, fixed seed) or a file path."""
    if weights == "default":
        if spec.pretrained_id is None:
            raise WeightsUnavailable(
                f"model {spec.name} has no default weights; use --weights PATH or --weights none"
            )
        return WeightsChoice(spec.pretrained_id)
    if weights == "none":
        return WeightsChoice(f"none:seed={RANDOM_SEED}")
    path = normalize(os.path.expanduser(weights))
    try:
        digest = sha256_file(path)
    except OSError as error:
        raise WeightsUnavailable(
            f"cannot read weights file {weights}: {error.strerror or error} "
            "(--weights takes 'default', 'none' or the path of a state dict)"
        ) from error
    return WeightsChoice(f"sha256:{digest}", path)
