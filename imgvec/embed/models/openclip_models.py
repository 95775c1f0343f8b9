"""Joint image-text models from OpenCLIP (``open_clip_torch``, the ``clip`` extra): CLIP ViT-B/32
and ViT-B/16 trained on LAION-2B, and SigLIP ViT-B/16 trained on WebLI.

Each is one :func:`register` call. The image tower is the embedding (its ``image`` layer); the
text tower puts words in the same space (:attr:`ModelSpec.encode_text`), so ``imgvec query
--text`` searches the image index. The architecture and tokenizer come with the package
(offline); the pretrained weights download from the Hugging Face Hub on first use and are cached
there (``~/.cache/huggingface``), as OpenCLIP does. Dimensions and preprocessing are OpenCLIP's
own configuration (``open_clip.get_model_config``, ``open_clip.get_pretrained_cfg``), written
out here so that listing the models imports neither torch nor OpenCLIP.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from imgvec.embed.registry import register
from imgvec.embed.spec import Layer, ModelSpec, Preprocess
from imgvec.errors import ModelError, WeightsUnavailable

if TYPE_CHECKING:
    from torch import nn

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
"""CLIP's normalisation (``open_clip.constants.OPENAI_DATASET_MEAN``/``STD``)."""
HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
"""The checkpoint files OpenCLIP looks for in a Hub repository, in its order."""


def _open_clip() -> Any:
    try:
        import open_clip  # here, not at module level: listing the models must stay light
    except ImportError as error:
        raise ModelError(
            "the CLIP and SigLIP models need OpenCLIP: pip install 'imgvec[clip]' "
            "(or pip install open_clip_torch)"
        ) from error
    return open_clip


@contextmanager
def _quiet() -> Iterator[None]:
    """Without OpenCLIP's log lines (it warns on the root logger that a model built without
    weights is random: imgvec loads them next): only imgvec's own lines reach the terminal."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _build(arch: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        # Random initialisation (fixed seed, by the caller); weights are loaded afterwards.
        with _quiet():
            return _open_clip().create_model(arch, pretrained=None)

    return build


def _image_tower(model: nn.Module) -> nn.Module:
    """The model whose forward is the image tower (``encode_image``, before normalisation); the
    text tower stays inside it for :func:`_encode_text`."""
    from torch import nn

    class ImageTower(nn.Module):
        def __init__(self, clip: nn.Module) -> None:
            super().__init__()
            self.clip = clip

        def forward(self, pixels):  # type: ignore[no-untyped-def]
            return self.clip.encode_image(pixels)

    return ImageTower(model)


def _text_encoder(arch: str) -> Callable[[nn.Module, Sequence[str]], Any]:
    def encode(tower: nn.Module, texts: Sequence[str]) -> Any:
        try:
            with _quiet():
                tokenizer = _open_clip().get_tokenizer(arch)
        except (ImportError, OSError) as error:  # SigLIP's tokenizer comes from the Hub
            raise WeightsUnavailable(
                f"the tokenizer of {arch} cannot be loaded ({error}); SigLIP's needs the "
                "transformers package and one download from the Hugging Face Hub"
            ) from error
        device = next(tower.parameters()).device
        return tower.clip.encode_text(tokenizer(list(texts)).to(device))

    return encode


def _file_loader(arch: str) -> Callable[[nn.Module, str], None]:
    def load(model: nn.Module, path: str) -> None:
        """A local checkpoint as OpenCLIP reads it (``.safetensors``, ``.bin``/``.pt``, with
        its conversions of third-party layouts); anything else in one short line."""
        try:
            _open_clip().load_checkpoint(model, path)
        except FileNotFoundError:
            raise
        except Exception as error:
            first = str(error).strip().splitlines()[0][:120] if str(error).strip() else ""
            raise ValueError(
                f"not an OpenCLIP checkpoint of {arch} ({type(error).__name__}: {first})"
            ) from error

    return load


def _pretrained(name: str, arch: str, tag: str, hub: str) -> Callable[[], Mapping[str, Any]]:
    def load() -> Mapping[str, Any]:
        open_clip = _open_clip()
        path = _cached(hub)
        if path is None:
            reason = _unreachable()
            if reason is None:
                try:
                    with _quiet():  # the Hub client's retries log warnings: not the user's
                        path = open_clip.download_pretrained(
                            open_clip.get_pretrained_cfg(arch, tag)
                        )
                except Exception as error:
                    reason = " ".join(f"{type(error).__name__}: {error}".split())[:160]
            if not path:
                raise WeightsUnavailable(
                    f"could not download the pretrained weights of {name} ({arch} {tag}) from "
                    f"the Hugging Face Hub ({reason or 'no download known'}). On a machine with "
                    f"network access, download {HF_FILES[0]} from https://huggingface.co/{hub}, "
                    f"then: imgvec add PHOTOS --model {name} --weights FILE"
                )
        return open_clip.factory.load_state_dict(path)

    return load


def _cached(hub: str) -> str | None:
    """The checkpoint from the Hugging Face cache, without asking the network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in HF_FILES:
        found = try_to_load_from_cache(hub, filename)
        if isinstance(found, str):
            return found
    return None


def _unreachable() -> str | None:
    """Why the Hub cannot be reached, found in a moment (offline, its name does not resolve),
    instead of a minute of the Hub client's retries; None: try it (behind a proxy, always)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    try:
        socket.getaddrinfo("huggingface.co", 443)
    except OSError as error:
        return f"no network: huggingface.co does not resolve ({error.strerror or error})"
    return None


def _clip(
    name: str,
    arch: str,
    tag: str,
    hub: str,
    dim: int,
    prep: Preprocess,
    description: str,
    onnx_batches: bool = False,
) -> None:
    register(
        ModelSpec(
            name=name,
            build=_build(arch),
            layers={"image": Layer(dim, _image_tower, "the image tower's projected embedding")},
            default_layer="image",
            preprocess=prep,
            description=description,
            pretrained_id=f"openclip:{arch}/{tag}",
            load_pretrained=_pretrained(name, arch, tag, hub),
            encode_text=_text_encoder(arch),
            load_weights_file=_file_loader(arch),
            onnx_batches=onnx_batches,
        )
    )


_CLIP_PREP = Preprocess(
    resize=224, crop=224, mean=OPENAI_MEAN, std=OPENAI_STD, interpolation="bicubic"
)
_clip(
    "clip_vit_b_32",
    "ViT-B-32",
    "laion2b_s34b_b79k",
    "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    512,
    _CLIP_PREP,
    "CLIP ViT-B/32 (OpenCLIP, LAION-2B): 512-d, images and words in one space",
    onnx_batches=True,  # 12.9 against torch's 10.5 images/s (BENCHMARKS.md, "CLIP")
)
_clip(
    "clip_vit_b_16",
    "ViT-B-16",
    "laion2b_s34b_b88k",
    "laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
    512,
    _CLIP_PREP,
    "CLIP ViT-B/16 (OpenCLIP, LAION-2B): 512-d, images and words in one space",
)
_clip(
    "siglip_vit_b_16",
    "ViT-B-16-SigLIP",
    "webli",
    "timm/ViT-B-16-SigLIP",
    768,
    Preprocess(
        resize=224,
        crop=224,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        interpolation="bicubic",
        resize_mode="squash",
    ),
    "SigLIP ViT-B/16 (OpenCLIP, WebLI): 768-d, images and words in one space",
)
