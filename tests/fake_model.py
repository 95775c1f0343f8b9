"""Tiny deterministic embedding models for plumbing tests: no weights, nothing to download.

A vector is the image's grid of mean colours (``fake``: 4x4, 48-d; ``fake3``: 3x3, 27-d, a second
model of another dimension), so different pictures get different vectors and identical pictures
identical ones.
"""

from typing import Any

from imgvec.embed.registry import register
from imgvec.embed.spec import Layer, ModelSpec, Preprocess


def grid_model(cells: int) -> Any:
    """Imported on use: a command that runs no model must not pay for torch."""
    from torch import nn

    return nn.Sequential(nn.AdaptiveAvgPool2d(cells), nn.Flatten())


def register_grid_model(name: str, cells: int, description: str) -> int:
    """Register a model whose embedding is the cells x cells grid of mean colours; its dim."""
    dim = 3 * cells * cells
    register(
        ModelSpec(
            name=name,
            build=lambda: grid_model(cells),
            layers={
                "grid": Layer(dim, lambda model: model, f"{cells}x{cells} grid of mean colours")
            },
            default_layer="grid",
            preprocess=Preprocess(
                resize=8 * cells, crop=8 * cells, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
            ),
            description=description,
        )
    )
    return dim


FAKE, FAKE3 = "fake", "fake3"
FAKE_DIM = register_grid_model(FAKE, 4, "test model: colour layout")
FAKE3_DIM = register_grid_model(FAKE3, 3, "second test model: coarser colour layout, another dim")
