"""What an embedding model is: its architecture, layers, preprocessing and weights identity.

Plain data, no torch: a :class:`ModelSpec` says how to build a model, not the model itself.
:mod:`imgvec.embed.registry` keeps the specs by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imgvec.errors import ModelError

if TYPE_CHECKING:
    from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_SEED = 0


INTERPOLATIONS = ("bilinear", "bicubic")
RESIZE_MODES = ("shortest", "squash")


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side, centre-crop a square, scale to 0..1, normalise per channel.

    ``resize_mode`` ``squash`` resizes the whole picture to ``crop`` x ``crop`` instead,
    ignoring its aspect ratio (SigLIP's recipe; ``resize`` is then unused); ``interpolation``
    is Pillow's filter for the resize (CLIP's recipes use bicubic)."""

    resize: int
    crop: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    resize_mode: str = "shortest"

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS or self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"unknown interpolation or resize mode in {self}")

    def describe(self) -> str:
        mean = ",".join(f"{v:g}" for v in self.mean)
        std = ",".join(f"{v:g}" for v in self.std)
        squash = ";squash" if self.resize_mode == "squash" else ""
        return (
            f"resize={self.resize};crop={self.crop};mean={mean};std={std};"
            f"{self.interpolation}{squash}"
        )


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
    near_duplicate_cosine: float | None = None
    """Cosine cut for ``imgvec dupes`` candidates with the default layer and pretrained weights,
    measured on the UKBench near-duplicate set (``imgvec eval --dupes``, BENCHMARKS.md "Near
    duplicates"); None: not measured."""
    channels_last: bool = False
    """Run in NHWC memory layout: faster for convolutional networks on CPU (oneDNN), in fp32 and
    more so in bf16; no effect on the result."""
    onnx_batches: bool | None = None
    """Run ``add``'s batches on ONNX Runtime (on a CPU, in fp32): None follows
    ``channels_last`` (convolutional networks, 1.23-1.51x torch: BENCHMARKS.md "ONNX Runtime
    against torch"); True or False where measured otherwise (clip_vit_b_32: 1.23x, "CLIP")."""
    encode_text: Callable[[nn.Module, Sequence[str]], Any] | None = None
    """A joint image-text model's text tower: (the model as its layer's ``head`` made it, the
    texts) -> a (N, dim) float tensor in the images' space (not yet normalised); None: the model
    takes no words (``query --text`` says which models do)."""
    load_weights_file: Callable[[nn.Module, str], None] | None = None
    """Loads a ``--weights FILE`` into the freshly built model, for checkpoint formats a plain
    state dict load cannot read (None: ``torch.load`` and a strict ``load_state_dict``)."""

    def to_json(self) -> dict[str, Any]:
        """What ``imgvec models --json`` prints of the model."""
        return {
            "name": self.name,
            "description": self.description,
            "default_layer": self.default_layer,
            "layers": {
                n: {"dim": la.dim, "description": la.description} for n, la in self.layers.items()
            },
            "default_weights": self.pretrained_id,
            "preprocessing": self.preprocess.describe(),
            "text": self.encode_text is not None,
        }

    @property
    def prefers_onnx_batches(self) -> bool:
        return self.channels_last if self.onnx_batches is None else self.onnx_batches

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
