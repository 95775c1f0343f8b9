"""Evaluation metrics, ground-truth loading, copy-detection transforms (imgvec.tools.evaluate)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgvec.api import Library
from imgvec.errors import ImgvecError
from imgvec.index import recall
from imgvec.tools.evaluate import (
    average_precision,
    copy_detection,
    evaluate,
    load_groundtruth,
)
from imgvec.tools.perturb import TRANSFORMS, make_variant
from tests.conftest import SHARED_EVAL, make_image

GROUPS = 5
PER_GROUP = 4


def _perturb(path: Path, variant: int) -> None:
    """A near-identical copy: a small brightness change and/or a one-pixel shift."""
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(np.int16)
    if variant in (1, 3):
        pixels = pixels + (4 if variant == 1 else -4)
    if variant in (2, 3):
        pixels = np.roll(pixels, 1, axis=1)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)


@pytest.fixture
def labelled(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """5 groups of 4 near-identical PNGs (one random colour layout each): the answer is known."""
    folder = tmp_path / "labelled"
    groundtruth = {}
    for group in range(GROUPS):
        for member in range(PER_GROUP):
            name = f"g{group}_{member}.png"
            _perturb(make_image(folder / name, seed=50 + group), member)
            groundtruth[name] = f"group-{group}"
    return folder, groundtruth


def _library(tmp_path: Path, folder: Path) -> Library:
    lib = Library.open(tmp_path / "lib")
    report = lib.add([folder], model="fake", weights="none")
    assert not report.errors
    return lib


# --- metric math -----------------------------------------------------------------------------


def test_average_precision_on_a_hand_made_ranking() -> None:
    assert average_precision([True, False, True], 2) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision([True, True, False], 2) == 1.0
    assert average_precision([False, True], 1) == 0.5
    # a relevant item missing from a truncated ranking counts as 0, not ignored
    assert average_precision([True, False], 2) == 0.5
    with pytest.raises(ValueError):
        average_precision([True], 0)


def test_recall_at_k_on_a_hand_made_ranking() -> None:
    ranking = [[5, 1, 6, 2]]  # relevant: 1, 2, 3
    assert recall.recall_at_k([{1, 2, 3}], ranking, 1) == 0.0
    assert recall.recall_at_k([{1, 2, 3}], ranking, 2) == pytest.approx(1 / 3)
    assert recall.recall_at_k([{1, 2, 3}], ranking, 10) == pytest.approx(2 / 3)


# --- ground truth ----------------------------------------------------------------------------


def test_load_groundtruth_accepts_group_and_group_id(tmp_path: Path) -> None:
    plain = tmp_path / "plain.csv"
    plain.write_text("filename,group\na.jpg,x\nb.jpg,x\nc.jpg,y\n")
    assert load_groundtruth(plain) == {"a.jpg": "x", "b.jpg": "x", "c.jpg": "y"}
    ukbench = tmp_path / "ukbench.csv"
    ukbench.write_text("filename,group_id,cs676_split\nu0.jpg,0,query\nu1.jpg,0,database\n")
    assert load_groundtruth(ukbench) == {"u0.jpg": "0", "u1.jpg": "0"}


def test_load_groundtruth_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ImgvecError, match="not found"):
        load_groundtruth(tmp_path / "missing.csv")
    no_group = tmp_path / "no-group.csv"
    no_group.write_text("filename,label\na.jpg,x\n")
    with pytest.raises(ImgvecError, match="'group'"):
        load_groundtruth(no_group)
    no_filename = tmp_path / "no-filename.csv"
    no_filename.write_text("file,group\na.jpg,x\n")
    with pytest.raises(ImgvecError, match="'filename'"):
        load_groundtruth(no_filename)


# --- evaluate --------------------------------------------------------------------------------


def test_evaluate_scores_a_known_answer_perfectly(
    tmp_path: Path, labelled: tuple[Path, dict[str, str]]
) -> None:
    folder, groundtruth = labelled
    with _library(tmp_path, folder) as lib:
        report = evaluate(lib, folder, groundtruth)
    assert report.images == GROUPS * PER_GROUP
    assert report.groups == GROUPS
    assert report.map == 1.0
    assert report.ns_score == 4.0
    # 3 other members: at most 1 of them fits in the top 1, all of them in the top 4
    assert report.recall_at == {1: pytest.approx(1 / 3), 4: 1.0, 10: 1.0}
    assert report.model.startswith("fake/")
    data = json.loads(report.to_json())
    assert data["map"] == 1.0 and data["recall_at"]["4"] == 1.0 and data["transforms"] is None


def test_evaluate_with_wrong_labels_scores_clearly_lower(
    tmp_path: Path, labelled: tuple[Path, dict[str, str]]
) -> None:
    """Relabel so that every group mixes 4 different layouts: the metric must notice."""
    folder, groundtruth = labelled
    wrong = {}
    for name in groundtruth:
        group, member = (int(x) for x in name[1:-4].split("_"))
        wrong[name] = f"mixed-{(group + member) % GROUPS}"
    with _library(tmp_path, folder) as lib:
        right = evaluate(lib, folder, groundtruth)
        shuffled = evaluate(lib, folder, wrong)
    assert right.map == 1.0
    assert shuffled.map < 0.5
    assert shuffled.ns_score is not None and shuffled.ns_score < 2.0
    assert shuffled.recall_at[1] < right.recall_at[1]


def test_ns_score_only_when_every_group_has_four(
    tmp_path: Path, labelled: tuple[Path, dict[str, str]]
) -> None:
    folder, groundtruth = labelled
    del groundtruth["g0_3.png"]  # still in the library: a distractor now
    with _library(tmp_path, folder) as lib:
        report = evaluate(lib, folder, groundtruth)
    assert report.ns_score is None
    assert report.images == GROUPS * PER_GROUP
    assert report.map < 1.0  # the unlabelled near-duplicate g0_3 now outranks group-0 members


def test_evaluate_refuses_a_groundtruth_image_missing_from_the_folder(
    tmp_path: Path, labelled: tuple[Path, dict[str, str]]
) -> None:
    folder, groundtruth = labelled
    with _library(tmp_path, folder) as lib, pytest.raises(ImgvecError, match="not in"):
        evaluate(lib, folder, {**groundtruth, "nope.png": "group-0"})


def test_evaluate_refuses_images_the_library_does_not_hold(
    tmp_path: Path, labelled: tuple[Path, dict[str, str]]
) -> None:
    folder, groundtruth = labelled
    make_image(folder / "late.png", seed=999)  # in the folder, never added
    with Library.open(tmp_path / "lib") as lib:
        lib.add([folder / "g0_0.png", folder / "g0_1.png"], model="fake", weights="none")
        with pytest.raises(ImgvecError, match="not in the library"):
            evaluate(lib, folder, {**groundtruth, "late.png": "group-0"})


# --- transforms ------------------------------------------------------------------------------


@pytest.fixture
def picture(tmp_path: Path) -> Image.Image:
    return Image.open(make_image(tmp_path / "src.png", seed=7, size=(96, 64))).convert("RGB")


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_transform_is_valid_deterministic_and_changes_the_image(
    name: str, picture: Image.Image
) -> None:
    first = make_variant(picture, name, seed=3, index=5)
    again = make_variant(picture, name, seed=3, index=5)
    assert first.mode == "RGB" and first.width > 0 and first.height > 0
    assert np.array_equal(np.asarray(first), np.asarray(again))
    if first.size == picture.size:
        assert not np.array_equal(np.asarray(first), np.asarray(picture))
    assert np.asarray(picture).shape == (64, 96, 3)  # the input is not modified


def test_transform_sizes_and_exact_behaviour(picture: Image.Image) -> None:
    assert make_variant(picture, "crop", 0, 0).size == (67, 45)  # 70% of 96x64, rounded
    assert make_variant(picture, "scale", 0, 0).size == (48, 32)
    for name in ("rotate", "brightness_contrast", "flip", "blur", "grayscale", "jpeg"):
        assert make_variant(picture, name, 0, 0).size == picture.size
    flipped = make_variant(picture, "flip", 0, 0)
    assert np.array_equal(np.asarray(flipped)[:, ::-1], np.asarray(picture))
    grey = np.asarray(make_variant(picture, "grayscale", 0, 0))
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])


def test_random_transforms_depend_on_seed_and_index(picture: Image.Image) -> None:
    for name in ("crop", "rotate", "brightness_contrast"):
        outputs = {
            make_variant(picture, name, seed, index).tobytes()
            for seed in range(3)
            for index in range(3)
        }
        assert len(outputs) > 1, name


def test_unknown_transform_is_an_error(picture: Image.Image) -> None:
    with pytest.raises(ImgvecError, match="unknown transform"):
        make_variant(picture, "sepia", 0, 0)


# --- copy detection --------------------------------------------------------------------------


def test_copy_detection_reports_every_transform(tmp_path: Path) -> None:
    folder = tmp_path / "distinct"
    names = [make_image(folder / f"d{i}.png", seed=200 + i).name for i in range(10)]
    with _library(tmp_path, folder) as lib:
        scores = copy_detection(lib, folder, names, seed=1)
        again = copy_detection(lib, folder, names, seed=1)
        sampled = copy_detection(lib, folder, names, ["scale"], seed=1, per_transform=4)
        added = lib.status().images
    print("copy detection top-1 (fake model, 10 images):", scores)
    assert list(scores) == list(TRANSFORMS)
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert scores == again  # seeded: the same variants, the same answers
    # mild, layout-preserving edits keep the fake model's colour-grid vector close
    for mild in ("scale", "blur", "jpeg", "brightness_contrast"):
        assert scores[mild] >= 0.8, mild
    assert list(sampled) == ["scale"] and sampled["scale"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert added == 10  # the variants were never added to the library


# --- real weights ----------------------------------------------------------------------------

UKBENCH = SHARED_EVAL / "ukbench140"
WEIGHTS = SHARED_EVAL / "weights" / "mobilenet_v2-imagenet-dequantized.pth"


@pytest.mark.skipif(
    not (UKBENCH / "groundtruth.csv").is_file() or not WEIGHTS.is_file(),
    reason="../shared/eval (UKBench photos and MobileNetV2 weights) is not present",
)
def test_evaluate_ukbench140_with_mobilenet_v2(tmp_path: Path) -> None:
    groundtruth = load_groundtruth(UKBENCH / "groundtruth.csv")
    with Library.open(tmp_path / "lib") as lib:
        lib.add([UKBENCH / "images"], model="mobilenet_v2", weights=str(WEIGHTS))
        report = evaluate(lib, UKBENCH / "images", groundtruth)
    print(f"UKBench140 mobilenet_v2: {report.to_json()}")
    assert report.images == 140 and report.groups == 35
    assert report.ns_score is not None and report.ns_score >= 3.95
    assert report.map >= 0.9
