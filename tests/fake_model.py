"""A tiny deterministic embedding model for plumbing tests: no weights, nothing to download.

Its vector is the image's 4x4 grid of mean colours (48-d), so different pictures get different
vectors and identical pictures identical ones.
"""

from torch import nn

from imgvec.embedders.registry import Layer, ModelSpec, Preprocess, register

FAKE = "fake"
FAKE_DIM = 48

register(
    ModelSpec(
        name=FAKE,
        build=lambda: nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten()),
        layers={"grid": Layer(FAKE_DIM, lambda model: model, "4x4 grid of mean colours")},
        default_layer="grid",
        preprocess=Preprocess(resize=32, crop=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        description="test model: colour layout",
    )
)

FAKE3 = "fake3"
FAKE3_DIM = 27

register(
    ModelSpec(
        name=FAKE3,
        build=lambda: nn.Sequential(nn.AdaptiveAvgPool2d(3), nn.Flatten()),
        layers={"grid": Layer(FAKE3_DIM, lambda model: model, "3x3 grid of mean colours")},
        default_layer="grid",
        preprocess=Preprocess(resize=24, crop=24, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        description="second test model: coarser colour layout, another dimension",
    )
)
