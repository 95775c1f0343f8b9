"""The models of a library, each loaded once: its input preparation and its network.

Imports torch only when a model is first needed (timed: the first import takes seconds).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from imgvec.embed.registry import get_spec
from imgvec.embed.spec import WeightsChoice
from imgvec.errors import WeightsUnavailable
from imgvec.reporting import Reporter, Stopwatch
from imgvec.scan import sha256_file
from imgvec.types import ModelInfo, ModelRow

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor

    from imgvec.decode.images import Picture
    from imgvec.embed.runtime import Embedder

Prepare = Callable[[bytes], "tuple[Picture, Tensor]"]
"""Image bytes -> (decoded picture, the model's input tensor (3, crop, crop) float32)."""


class Models:
    """Loads models by their stored identity (a :class:`~imgvec.types.ModelRow` with an ``id``).

    ``precision``: ``auto``, ``fp32`` or ``bf16`` (see :func:`imgvec.embed.runtime.auto_precision`);
    it applies to models loaded after it is set.
    """

    def __init__(self, reporter: Reporter, stopwatch: Stopwatch, precision: str = "auto") -> None:
        self.reporter = reporter
        self.stopwatch = stopwatch
        self.precision = precision
        self._loaded: dict[int, Embedder] = {}

    def preparer(self, row: ModelRow) -> Prepare:
        """The model's input preparation, without loading the model (see
        :func:`imgvec.embed.runtime.prepare`)."""
        with self.stopwatch("import torch"):  # the first time: seconds, often more than the model
            from imgvec.embed.runtime import prepare

        return functools.partial(prepare, prep=get_spec(row.name).preprocess)

    def embedder(self, row: ModelRow) -> Embedder:
        """The model, loaded on first use. Raises :class:`WeightsUnavailable` when its weights
        file is missing or changed, or its weights cannot be fetched."""
        if row.id not in self._loaded:
            from imgvec.embed.runtime import Embedder

            if row.weights_path is not None:
                try:
                    found = "sha256:" + sha256_file(row.weights_path)
                except OSError:
                    found = None
                if found != row.weights:
                    raise WeightsUnavailable(
                        f"the weights file {row.weights_path} is missing or has changed; pass the "
                        f"original file again with --weights PATH ({row.weights})"
                    )
            self.reporter.notice(f"Loading model {ModelInfo.of(row).label()}")
            with self.stopwatch("model load"):
                self._loaded[row.id] = Embedder(
                    get_spec(row.name),
                    row.layer,
                    WeightsChoice(row.weights, row.weights_path),
                    precision=self.precision,
                )
        return self._loaded[row.id]

    def embed(self, row: ModelRow, batch: Tensor) -> np.ndarray:
        """Vectors (B, dim) float32, L2-normalised, of a prepared batch (B, 3, H, W); the model
        is loaded first if needed (timed apart, as ``model load``)."""
        embedder = self.embedder(row)
        with self.stopwatch("embed"):
            return embedder.embed_tensors(batch)

    def forget(self, model_id: int) -> None:
        self._loaded.pop(model_id, None)
