"""Joint image-text models (OpenCLIP's CLIP and SigLIP) as ordinary imgvec models, and queries by
words (issue 18). Random weights (the architectures and CLIP's tokenizer work offline) prove the
plumbing; nothing here downloads. One library with clip_vit_b_32 is shared by the module's
tests: building and exporting the model once costs seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgvec.api import Library
from imgvec.embed.pixels import model_input
from imgvec.embed.registry import get_spec
from imgvec.errors import ModelError, WeightsUnavailable
from imgvec.ops.query import combine
from tests.conftest import SHARED_EVAL, make_image

open_clip = pytest.importorskip("open_clip", reason="OpenCLIP is not installed (the clip extra)")

CLIP = "clip_vit_b_32"
UKBENCH = SHARED_EVAL / "ukbench140" / "images"


@pytest.fixture(scope="module")
def clip_library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(library, photos): 8 photos added with clip_vit_b_32 (random weights), then fake's
    vectors beside them (``model use fake`` and back), so a switch is covered too."""
    root = tmp_path_factory.mktemp("clip")
    photos = root / "photos"
    for i in range(8):
        make_image(photos / f"p{i}.jpg", seed=400 + i, size=(160, 120))
    library = root / "library"
    with Library.open(library) as lib:
        report = lib.add([photos], model=CLIP, weights="none")
        assert report.added == 8 and not report.failed
        # Its image tower was exported, and the export checked against torch (cosine 0.9999).
        [status] = lib.models()
        assert status.query_runtime == "onnxruntime" and status.export["error"] is None
    return library, photos


def test_the_models_are_registered_with_their_text_towers(imgvec) -> None:
    listed = {m["name"]: m for m in imgvec("models", "--json").json()}
    for name, dim in (("clip_vit_b_32", 512), ("clip_vit_b_16", 512), ("siglip_vit_b_16", 768)):
        assert listed[name]["text"] is True
        assert listed[name]["layers"]["image"]["dim"] == dim
        assert listed[name]["default_weights"].startswith("openclip:")
    assert listed["efficientnet_lite0"]["text"] is False
    table = imgvec("models").stdout
    assert "text: takes words" in table


@pytest.mark.parametrize(
    ("name", "arch", "tag"),
    [
        ("clip_vit_b_32", "ViT-B-32", "laion2b_s34b_b79k"),
        ("siglip_vit_b_16", "ViT-B-16-SigLIP", "webli"),
    ],
)
def test_pictures_are_prepared_as_openclip_prepares_them(name: str, arch: str, tag: str) -> None:
    """Bicubic shortest-side resize and crop (CLIP), bicubic squash (SigLIP), their means and
    standard deviations: OpenCLIP's own transform for the pretrained tag, to float rounding."""
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    theirs = open_clip.image_transform(
        224,
        is_train=False,
        mean=cfg["mean"],
        std=cfg["std"],
        interpolation=cfg["interpolation"],
        resize_mode=cfg["resize_mode"],
    )
    rng = np.random.default_rng(3)
    for size in ((400, 300), (120, 500), (224, 224)):
        image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        mine = model_input(image, get_spec(name).preprocess)
        np.testing.assert_allclose(mine, theirs(image).numpy(), rtol=0, atol=2e-6)


def test_words_are_searched_in_the_image_index(imgvec, clip_library: tuple[Path, Path]) -> None:
    library, _photos = clip_library
    done = imgvec("query", "--text", "a red bicycle", "-k", "3", "--json", "--library", library)
    assert done.exit_code == 0, done.stderr
    [answer] = done.json()
    assert answer["query"] == 'text: "a red bicycle"' and answer["vector"] == "text"
    assert len(answer["results"]) == 3
    scores = [hit["score"] for hit in answer["results"]]
    assert scores == sorted(scores, reverse=True)
    with Library.open(library) as lib:  # the scores are cosines to the words' vector
        words = lib.embed_texts(["a red bicycle"])
        ids, vectors = lib.vectors()
    assert words.shape == (1, 512) and vectors.shape == (8, 512)
    expected = vectors @ words[0]
    for hit in answer["results"]:
        assert hit["score"] == pytest.approx(float(expected[list(ids).index(hit["id"])]), abs=1e-4)


def test_an_image_and_words_are_combined_as_documented(clip_library: tuple[Path, Path]) -> None:
    library, photos = clip_library
    with Library.open(library) as lib:
        [result] = lib.query([photos / "p3.jpg"], k=8, text=["at night", "blurred"])
        words = lib.embed_texts(["at night", "blurred"])
        ids, vectors = lib.vectors()
        by_path = dict(lib.sql("SELECT path, id FROM images").rows)
    image = vectors[list(ids).index(by_path[str(photos / "p3.jpg")])]
    query = combine([image, *words])
    expected = np.linalg.norm(image + words[0] + words[1])  # each part has unit length already
    np.testing.assert_allclose(query, (image + words[0] + words[1]) / expected, atol=1e-6)
    assert result.vector_source == "stored"
    for hit in result.hits:
        assert hit.score == pytest.approx(float(vectors[list(ids).index(hit.id)] @ query), abs=1e-4)


def test_words_with_a_model_without_a_text_tower_are_a_clear_error(imgvec, photos: Path) -> None:
    assert imgvec("add", photos, "--model", "fake", "--weights", "none").exit_code == 0
    result = imgvec("query", "--text", "a dog")
    assert result.exit_code != 0
    assert "model fake takes no words" in result.stderr
    assert "clip_vit_b_32" in result.stderr and "siglip_vit_b_16" in result.stderr
    nothing = imgvec("query")
    assert nothing.exit_code != 0 and "give query images, words, or both" in nothing.stderr


def test_a_switch_from_a_classifier_to_clip_and_back(clip_library: tuple[Path, Path]) -> None:
    """On the shared library (left as found: clip_vit_b_32 active): to efficientnet_lite0,
    where words are refused, and back, where they work again without embedding anything."""
    library, _photos = clip_library
    with Library.open(library) as lib:
        switched = lib.use_model("efficientnet_lite0")
        assert switched.switched and switched.embedded == 8
        with pytest.raises(ModelError, match="efficientnet_lite0 takes no words"):
            lib.query(text=["a cat"])
        [other] = lib.query(text=["a cat"], model=CLIP, k=2)  # another complete model
        assert len(other.hits) == 2
        back = lib.use_model(CLIP, weights="none")
        assert back.switched and back.embedded == 0  # its vectors were kept
        [words] = lib.query(text=["a cat"], k=3)
        assert len(words.hits) == 3 and words.hits[0].score == other.hits[0].score


def test_siglip_embeds_images_and_says_what_its_text_tower_needs() -> None:
    import torch

    from imgvec.embed.registry import resolve_weights
    from imgvec.embed.runtime import Embedder

    spec = get_spec("siglip_vit_b_16")
    embedder = Embedder(spec, "image", resolve_weights(spec, "none"), torch.device("cpu"), "fp32")
    pictures = [Image.new("RGB", (200, 100), c) for c in ("red", "navy")]
    vectors = embedder.embed(pictures)
    assert vectors.shape == (2, 768)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    try:
        import transformers  # noqa: F401
    except ImportError:
        with pytest.raises(WeightsUnavailable, match="tokenizer of ViT-B-16-SigLIP cannot be"):
            embedder.embed_text(["a dog"])


def test_default_weights_offline_say_which_file_to_fetch(
    imgvec, tmp_path: Path, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imgvec.embed.models import openclip_models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing downloads, even with a network
    monkeypatch.setattr(openclip_models, "_cached", lambda _hub: None)  # nor comes from a cache
    offline = tmp_path / "offline"
    done = imgvec("add", photos, "--model", CLIP, "--library", offline)
    assert done.exit_code == 2
    message = " ".join(done.stderr.split())
    assert "could not download the pretrained weights of clip_vit_b_32 (ViT-B-32 laion2b" in message
    assert "(HF_HUB_OFFLINE is set)" in message
    assert "https://huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in message
    assert "imgvec add PHOTOS --model clip_vit_b_32 --weights FILE" in message
    assert "Traceback" not in done.stderr and message.count("error: ") == 1
    # The failed add embedded nothing, so the next one may choose another model or file.
    retry = imgvec("add", photos, "--model", "fake", "--weights", "none", "--library", offline)
    assert retry.exit_code == 0, retry.stderr
    assert "it embeds with fake/grid (none:seed=0" in " ".join(retry.stderr.split())
    models = imgvec("model", "list", "--json", "--library", offline).json()
    assert [m["model"]["name"] for m in models] == ["fake"]


def _cached_clip_weights() -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", name)
        if isinstance(found, str):
            return found
    return None


def test_real_weights_find_the_shoes(tmp_path: Path) -> None:
    """With the real ViT-B/32 weights in the Hugging Face cache: "a photo of a shoe" ranks
    UKBench's one shoe (object 25: ukbench00100-00103, four views of a trainer) first."""
    weights = _cached_clip_weights()
    if weights is None or not UKBENCH.is_dir():
        pytest.skip("the real clip_vit_b_32 weights are not in the Hugging Face cache here")
    with Library.open(tmp_path / "real") as lib:
        lib.add([UKBENCH], model=CLIP, weights=weights)
        [result] = lib.query(text=["a photo of a shoe"], k=4)
    shoes = {f"ukbench{i:05d}.jpg" for i in range(100, 104)}
    assert len({Path(hit.path).name for hit in result.hits} & shoes) >= 3, result.hits


def test_the_server_searches_by_words(clip_library: tuple[Path, Path]) -> None:
    from fastapi.testclient import TestClient

    from imgvec.serve.app import Server, Settings, create_app

    library, photos = clip_library
    settings = Settings(library=str(library))
    api = TestClient(create_app(settings, Server(settings)), base_url="http://127.0.0.1")
    words = api.get("/api/search", params={"text": ["a red bicycle", "at night"], "k": 3})
    assert words.status_code == 200, words.text
    answer = words.json()
    assert answer["query"] == 'text: "a red bicycle" + "at night"' and answer["vector"] == "text"
    assert len(answer["results"]) == 3
    with Library.open(library) as lib:
        [expected] = lib.query(text=["a red bicycle", "at night"], k=3)
        image_id = expected.hits[0].id
    assert [h["id"] for h in answer["results"]] == [h.id for h in expected.hits]
    both = api.get("/api/search", params={"id": image_id, "text": "at night", "k": 2})
    assert both.status_code == 200 and both.json()["vector"] == "stored"
    upload = (photos / "p2.jpg").read_bytes()
    alone = api.post("/api/search", params={"k": 1}, content=upload).json()
    combined = api.post("/api/search", params={"k": 1, "text": "at night"}, content=upload)
    assert combined.status_code == 200, combined.text
    assert alone["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)  # itself
    assert combined.json()["results"][0]["score"] < 0.9  # the words pull it away
    blank = api.get("/api/search", params={"id": image_id, "text": " "})
    assert blank.status_code == 400 and "must not be empty" in blank.json()["error"]


def test_a_local_checkpoint_is_loaded_as_openclip_reads_it(tmp_path: Path) -> None:
    """``--weights FILE``: a checkpoint saved from the architecture (here the seeded random
    one) gives the same vectors as the model it was saved from, through OpenCLIP's loader."""
    import torch

    from imgvec.embed.registry import resolve_weights
    from imgvec.embed.runtime import Embedder, build_model

    spec = get_spec(CLIP)
    source = build_model(spec, "image", resolve_weights(spec, "none")).clip
    for parameter in source.parameters():  # not the seeded init: the file must be read
        parameter.data.add_(0.01)
    checkpoint = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(source.state_dict(), checkpoint)
    weights = resolve_weights(spec, str(checkpoint))
    assert weights.identity.startswith("sha256:")
    loaded = Embedder(spec, "image", weights, torch.device("cpu"), "fp32")
    pictures = [Image.new("RGB", (120, 90), c) for c in ("red", "teal")]
    with torch.inference_mode():
        inputs = torch.from_numpy(np.stack([model_input(p, spec.preprocess) for p in pictures]))
        expected = torch.nn.functional.normalize(source.eval().encode_image(inputs), dim=1)
    np.testing.assert_allclose(loaded.embed(pictures), expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(
        loaded.embed_text(["a cat"]),
        torch.nn.functional.normalize(
            source.encode_text(open_clip.get_tokenizer("ViT-B-32")(["a cat"])), dim=1
        )
        .detach()
        .numpy(),
        atol=1e-5,
    )
