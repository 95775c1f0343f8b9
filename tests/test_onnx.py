"""The torch-free query path's pieces agree with the torch path: for every built-in model (and
the test model), the model exported to ONNX and run by ONNX Runtime on the arrays of
``imgvec.embed.pixels`` gives the vectors of ``Embedder`` in fp32, to cosine >= 0.9999."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import imgvec.embed.models.efficientnet_lite
import imgvec.embed.models.torchvision_models  # noqa: F401  (registers the torchvision models)
from imgvec.decode.images import decode, read_file
from imgvec.embed import exports
from imgvec.embed.onnx import OnnxEmbedder, export
from imgvec.embed.pixels import model_input
from imgvec.embed.registry import get_spec, resolve_weights
from imgvec.embed.runtime import Embedder
from tests.conftest import SHARED_EVAL

MOBILENET = SHARED_EVAL / "weights" / "mobilenet_v2-imagenet-dequantized.pth"
PHOTOS = SHARED_EVAL / "ukbench140" / "images"


def pictures() -> list[Image.Image]:
    """Real photos where the shared data is present, else seeded noise; and an odd shape."""
    if PHOTOS.is_dir():
        found = [decode(read_file(str(PHOTOS / f"ukbench{i:05d}.jpg"))).image for i in (0, 57)]
    else:
        rng = np.random.default_rng(0)
        found = [Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))]
    return [*found, Image.new("RGB", (90, 300), (200, 30, 60))]


@pytest.mark.parametrize(
    ("name", "weights"),
    [
        ("fake", "none"),
        ("efficientnet_lite0", "default"),  # its real weights install with imgvec
        ("mobilenet_v2", str(MOBILENET) if MOBILENET.is_file() else "none"),
        ("resnet50", "none"),
        ("vit_b_16", "none"),
        ("vgg16", "none"),
    ],
)
def test_onnx_runtime_gives_the_torch_vectors(name: str, weights: str, tmp_path: Path) -> None:
    """Both ways an export runs: ``add``'s (the whole model's bytes, every optimisation) and a
    query's (the files a library keeps, weights beside the graph, basic optimisations, no
    prepacking)."""
    spec = get_spec(name)
    embedder = Embedder(
        spec, spec.default_layer, resolve_weights(spec, weights), torch.device("cpu"), "fp32"
    )
    images = pictures()
    expected = embedder.embed(images)
    data = export(embedder)
    graph, weights_data = exports.split(data, "m1.weights")
    (tmp_path / "m1.onnx").write_bytes(graph)
    if weights_data:
        (tmp_path / "m1.weights").write_bytes(weights_data)
    inputs = np.stack([model_input(image, spec.preprocess) for image in images])
    for onnx in (
        OnnxEmbedder(data, embedder.dim),
        OnnxEmbedder(str(tmp_path / "m1.onnx"), embedder.dim, optimize=False),
    ):
        got = onnx.embed_inputs(inputs)
        assert got.shape == expected.shape and got.dtype == np.float32
        cosines = (got * expected).sum(axis=1)
        assert cosines.min() >= 0.9999, cosines
    np.testing.assert_array_equal(embedder.embed(images), expected)  # the export left it as it was


def test_running_an_exported_model_imports_no_torch(tmp_path) -> None:
    spec = get_spec("fake")
    embedder = Embedder(spec, spec.default_layer, resolve_weights(spec, "none"))
    (tmp_path / "fake.onnx").write_bytes(export(embedder))
    code = (
        "import sys, numpy as np; from PIL import Image; "
        "from imgvec.embed.onnx import OnnxEmbedder; from imgvec.embed.pixels import model_input; "
        "from imgvec.embed.spec import Preprocess; "
        f"m = OnnxEmbedder({str(tmp_path / 'fake.onnx')!r}, {embedder.dim}); "
        "x = model_input(Image.new('RGB', (64, 48), 'red'), Preprocess(resize=32, crop=32)); "
        "v = m.embed_inputs(x[None]); print(v.shape[1], round(float(np.linalg.norm(v)), 4), "
        "'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == [str(embedder.dim), "1.0", "False"]
