"""The embedding-model registry: the specs by name, and how a model's weights are chosen.

The registry imports only :mod:`imgvec.embed.spec`. Each model module registers itself with
:func:`register` when imported: the built-ins listed in :data:`BUILTIN_MODELS` (imported by name
on first use, as llm loads its default plugins), and third-party packages from an
``imgvec.models`` entry point.
"""

from __future__ import annotations

import importlib
import os
import sys

from imgvec.embed.spec import RANDOM_SEED, ModelSpec, WeightsChoice
from imgvec.errors import ModelError, WeightsUnavailable
from imgvec.scan import normalize, sha256_file

ENTRY_POINT_GROUP = "imgvec.models"
BUILTIN_MODELS = (
    "imgvec.embed.models.efficientnet_lite",
    "imgvec.embed.models.torchvision_models",
    "imgvec.embed.models.openclip_models",
)
"""Modules of the built-in models, imported on first use (each registers its models)."""

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
    for module in BUILTIN_MODELS:
        importlib.import_module(module)
    from importlib.metadata import entry_points  # 0.03 s: only when a model is looked up

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()
        except Exception as error:  # one broken plugin must not take the built-ins with it
            sys.stderr.write(f"warning: model plugin {entry.value} not loaded: {error}\n")


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
