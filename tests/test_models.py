"""The model registry: every built-in model builds, has its dimension, and fails clearly."""

from __future__ import annotations

import urllib.error
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgvec.embed.registry import available, get_spec, resolve_weights
from imgvec.embed.runtime import (
    Embedder,
    auto_precision,
    build_model,
    fold_batchnorm,
    keep_freed_memory,
)
from imgvec.errors import ModelError, WeightsUnavailable
from tests.conftest import SHARED_EVAL

MOBILENET_WEIGHTS = SHARED_EVAL / "weights" / "mobilenet_v2-imagenet-dequantized.pth"


def builtin_layers() -> list[tuple[str, str]]:
    return [
        (name, layer)
        for name, spec in available().items()
        if name != "fake"
        for layer in spec.layers
    ]


def test_the_issue_s_models_are_registered() -> None:
    specs = available()
    assert specs["vit_b_16"].layers["cls"].dim == 768
    assert specs["mobilenet_v2"].layers["pool"].dim == 1280
    assert {"avgpool", "fc"} <= set(specs["resnet50"].layers)
    assert {"pool5", "fc7"} <= set(specs["vgg16"].layers)


@pytest.mark.parametrize(("name", "layer"), builtin_layers())
def test_each_model_and_layer_gives_normalised_vectors_of_its_dimension(
    name: str, layer: str
) -> None:
    spec = get_spec(name)
    embedder = Embedder(spec, layer, resolve_weights(spec, "none"), device=torch.device("cpu"))
    pictures = [Image.new("RGB", (300, 200), colour) for colour in ("red", "navy")]
    vectors = embedder.embed(pictures)
    assert vectors.shape == (2, spec.layers[layer].dim)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_random_weights_are_the_same_every_time() -> None:
    spec = get_spec("mobilenet_v2")
    first = build_model(spec, "pool", resolve_weights(spec, "none"))
    second = build_model(spec, "pool", resolve_weights(spec, "none"))
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.skipif(not MOBILENET_WEIGHTS.is_file(), reason="../shared/eval is not present")
def test_local_weights_file_is_identified_by_content(tmp_path: Path) -> None:
    spec = get_spec("mobilenet_v2")
    choice = resolve_weights(spec, str(MOBILENET_WEIGHTS))
    assert choice.identity == (
        "sha256:6ee1afba555b88fd54b18f598e521bfb8a42d43b7e48d5c6164c638ff1f7fb40"
    )
    assert choice.path == str(MOBILENET_WEIGHTS)


def test_weights_that_do_not_fit_are_a_clear_error(tmp_path: Path) -> None:
    wrong = tmp_path / "resnet.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    spec = get_spec("mobilenet_v2")
    with pytest.raises(WeightsUnavailable, match="do not fit mobilenet_v2"):
        build_model(spec, "pool", resolve_weights(spec, str(wrong)))


def test_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailable, match="cannot read weights file"):
        resolve_weights(get_spec("vit_b_16"), str(tmp_path / "absent.pth"))


def test_failed_download_says_how_to_supply_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*_args: object, **_kwargs: object) -> None:
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    spec = get_spec("vit_b_16")
    with pytest.raises(WeightsUnavailable) as caught:
        build_model(spec, "cls", resolve_weights(spec, "default"))
    message = str(caught.value)
    assert "could not download" in message and "ViT_B_16_Weights.IMAGENET1K_V1" in message
    assert "--weights PATH" in message and "--model efficientnet_lite0" in message


def test_failed_download_through_the_cli(
    imgvec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import make_image

    def offline(*_args: object, **_kwargs: object) -> None:
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    make_image(tmp_path / "p" / "a.jpg", seed=1)
    result = imgvec("add", tmp_path / "p", "--model", "resnet50")
    assert result.exit_code == 2
    assert "could not download the pretrained weights of resnet50" in result.stderr
    assert "--weights PATH" in result.stderr
    assert "efficientnet_lite0" in result.stderr


def test_unknown_names_list_the_choices() -> None:
    with pytest.raises(ModelError, match=r"available: .*mobilenet_v2"):
        get_spec("alexnet")
    with pytest.raises(ModelError, match="choose one of: pool5, fc6, fc7"):
        get_spec("vgg16").layer("fc9")


def test_models_command_lists_layers(imgvec) -> None:
    listing = imgvec("models", "--json").json()
    by_name = {entry["name"]: entry for entry in listing}
    assert by_name["vgg16"]["layers"]["fc7"]["dim"] == 4096
    assert by_name["vit_b_16"]["default_weights"] == "torchvision:ViT_B_16_Weights.IMAGENET1K_V1"
    assert "resnet50" in imgvec("models").stdout


def test_bf16_autocast_gives_nearly_the_same_vectors() -> None:
    spec = get_spec("mobilenet_v2")
    weights = resolve_weights(spec, "none")
    pictures = [Image.new("RGB", (256, 256), colour) for colour in ("red", "teal", "white")]
    cpu = torch.device("cpu")
    full = Embedder(spec, "pool", weights, device=cpu, precision="fp32").embed(pictures)
    half = Embedder(spec, "pool", weights, device=torch.device("cpu"), precision="bf16")
    reduced = half.embed(pictures)
    assert reduced.dtype == np.float32
    cosines = np.sum(full * reduced, axis=1)
    assert (cosines > 0.98).all() and not np.array_equal(full, reduced)


def test_auto_precision_is_bf16_only_where_the_cpu_has_bfloat16_units(monkeypatch) -> None:
    cpu = torch.device("cpu")
    for avx512_bf16, amx, expected in (
        (False, False, "fp32"),
        (True, False, "bf16"),
        (False, True, "bf16"),
    ):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert auto_precision(cpu) == expected


def test_embedder_resolves_auto_precision_and_refuses_unknown_ones() -> None:
    spec = get_spec("fake")
    weights = resolve_weights(spec, "none")
    cpu = torch.device("cpu")
    assert Embedder(spec, "grid", weights, device=cpu).precision == auto_precision(cpu)
    with pytest.raises(ValueError, match="auto, fp32, bf16"):
        Embedder(spec, "grid", weights, device=cpu, precision="fp16")


def test_channels_last_changes_speed_not_vectors(monkeypatch) -> None:
    spec = get_spec("resnet50")
    weights = resolve_weights(spec, "none")
    pictures = [Image.new("RGB", (256, 256), colour) for colour in ("red", "teal")]
    cpu = torch.device("cpu")
    nhwc = Embedder(spec, "avgpool", weights, device=cpu, precision="fp32")
    nchw = Embedder(
        replace(spec, channels_last=False), "avgpool", weights, device=cpu, precision="fp32"
    )
    assert spec.channels_last and nhwc.memory_format == torch.channels_last
    assert nchw.memory_format == torch.contiguous_format
    assert np.allclose(nhwc.embed(pictures), nchw.embed(pictures), atol=1e-4)


def test_malloc_is_told_to_keep_freed_memory_on_glibc() -> None:
    import platform

    assert keep_freed_memory() == (platform.libc_ver()[0] == "glibc")


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet50"])
def test_folding_batchnorm_into_convolutions_keeps_the_vectors(name: str) -> None:
    spec = get_spec(name)
    model = build_model(spec, spec.default_layer, resolve_weights(spec, "none"))
    folded = fold_batchnorm(model)
    count = sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert folded is not model and count == 0
    batch = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.allclose(folded(batch), model(batch), atol=1e-4)


def test_models_without_batchnorm_or_not_traceable_are_left_as_they_are() -> None:
    vit = build_model(get_spec("vit_b_16"), "cls", resolve_weights(get_spec("vit_b_16"), "none"))
    assert fold_batchnorm(vit) is vit

    class Branchy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.norm = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(self.conv(x)) if x.sum() > 0 else x  # fx cannot trace this

    branchy = Branchy().eval()
    assert fold_batchnorm(branchy) is branchy
