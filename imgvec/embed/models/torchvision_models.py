"""The built-in models: torchvision architectures, their layers and pretrained weights.

Each model is one :func:`register` call. A layer's ``head`` edits the freshly built model so that
its output is the embedding (for example replacing the classifier with ``Identity``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from imgvec.embed.registry import register
from imgvec.embed.spec import Layer, ModelSpec, Preprocess

if TYPE_CHECKING:  # torch is imported when a model is built, not when it is registered
    from torch import nn


def _torchvision_model(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return torchvision.models.get_model(name, weights=None)

    return build


def _torchvision_weights(enum_name: str) -> Callable[[], Mapping[str, Any]]:
    def load() -> Mapping[str, Any]:
        import torchvision

        return torchvision.models.get_weight(enum_name).get_state_dict(progress=True)

    return load


def _replace(attribute: str) -> Callable[[nn.Module], nn.Module]:
    """A head that swaps ``model.<attribute>`` for Identity (drops the classifier)."""

    def head(model: nn.Module) -> nn.Module:
        from torch import nn

        setattr(model, attribute, nn.Identity())
        return model

    return head


def _unchanged(model: nn.Module) -> nn.Module:
    return model


def _vgg_layer(fc_end: int | None) -> Callable[[nn.Module], nn.Module]:
    """A head that cuts VGG16 at a fully connected layer (``fc_end`` modules of the
    classifier), or at pool5 (global average pooling of conv5_3) for None."""

    def head(vgg: nn.Module) -> nn.Module:
        from torch import nn

        if fc_end is None:
            return nn.Sequential(vgg.features, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        return nn.Sequential(vgg.features, vgg.avgpool, nn.Flatten(1), vgg.classifier[:fc_end])

    return head


def _tv(
    name: str,
    weights: str,
    layers: dict[str, Layer],
    default: str,
    prep: Preprocess,
    description: str,
    channels_last: bool = True,
    near_duplicate_cosine: float | None = None,
) -> None:
    register(
        ModelSpec(
            name=name,
            build=_torchvision_model(name),
            layers=layers,
            default_layer=default,
            preprocess=prep,
            description=description,
            pretrained_id=f"torchvision:{weights}",
            load_pretrained=_torchvision_weights(weights),
            channels_last=channels_last,
            near_duplicate_cosine=near_duplicate_cosine,
        )
    )


_tv(
    "vit_b_16",
    "ViT_B_16_Weights.IMAGENET1K_V1",
    {"cls": Layer(768, _replace("heads"), "class token after the final LayerNorm")},
    "cls",
    Preprocess(resize=256, crop=224),
    "Vision Transformer B/16 (ImageNet-1k): 768-d class token",
    channels_last=False,  # a transformer: no convolutions after the patch embedding
)
_tv(
    "resnet50",
    "ResNet50_Weights.IMAGENET1K_V2",
    {
        "avgpool": Layer(2048, _replace("fc"), "global-average-pooled last convolutional block"),
        "fc": Layer(1000, _unchanged, "fully connected classifier output (logits)"),
    },
    "avgpool",
    Preprocess(resize=232, crop=224),
    "ResNet-50 (ImageNet-1k V2 weights): pooled 2048-d features",
)
_tv(
    "vgg16",
    "VGG16_Weights.IMAGENET1K_V1",
    {
        "pool5": Layer(512, _vgg_layer(None), "global-average-pooled conv5_3"),
        "fc6": Layer(4096, _vgg_layer(2), "first fully connected layer, after ReLU"),
        "fc7": Layer(4096, _vgg_layer(5), "second fully connected layer, after ReLU"),
    },
    "fc7",
    Preprocess(resize=256, crop=224),
    "VGG16 (ImageNet-1k): fc7 4096-d, or pooled conv features",
)
_tv(
    "mobilenet_v2",
    # V1's recipe (resize 256) is the classic one that external state dicts follow too.
    "MobileNet_V2_Weights.IMAGENET1K_V1",
    {"pool": Layer(1280, _replace("classifier"), "global-average-pooled features")},
    "pool",
    Preprocess(resize=256, crop=224),
    "MobileNetV2 (ImageNet-1k): pooled 1280-d features; small and fast",
    # imgvec eval --dupes at cut 0.6 on ukbench140 (1,120 files; ImageNet weights from
    # ../shared/eval): recall 0.9518 up to 0.8, 0.9505 at 0.85, 0.9278 at 0.9; precision 1.0
    # and no sibling pair at every cut.
    near_duplicate_cosine=0.85,
)
