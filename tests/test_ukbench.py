"""Retrieval quality on real photos with real weights, through the CLI (offline: ../shared/eval)."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import SHARED_EVAL

UKBENCH = SHARED_EVAL / "ukbench140"
WEIGHTS = SHARED_EVAL / "weights" / "mobilenet_v2-imagenet-dequantized.pth"

pytestmark = pytest.mark.skipif(
    not (UKBENCH / "groundtruth.csv").is_file() or not WEIGHTS.is_file(),
    reason="../shared/eval (UKBench photos and MobileNetV2 weights) is not present",
)


def ns_score(results: list[dict], group_of: dict[str, int]) -> float:
    """UKBench N-S score: per query, how many of its group's 4 images are in the top 4."""
    total = 0
    for result in results:
        group = group_of[Path(result["query"]).name]
        total += sum(group_of[Path(hit["path"]).name] == group for hit in result["results"][:4])
    return total / len(results)


def ukbench_ns_through_cli(imgvec, *model_args: object) -> float:  # type: ignore[no-untyped-def]
    """Add the 140 photos with a model through the CLI, query each with k=4: the N-S score."""
    with open(UKBENCH / "groundtruth.csv", newline="") as handle:
        group_of = {row["filename"]: int(row["group_id"]) for row in csv.DictReader(handle)}
    sizes = defaultdict(int)
    for group in group_of.values():
        sizes[group] += 1
    assert set(sizes.values()) == {4}

    added = imgvec("add", UKBENCH / "images", *model_args, "--json")
    assert added.exit_code == 0, added.stderr
    assert added.json()["added"] == len(group_of) == 140

    images = sorted((UKBENCH / "images").glob("*.jpg"))
    queried = imgvec("query", *images, "-k", "4", "--json")
    assert queried.exit_code == 0, queried.stderr
    results = queried.json()
    assert all(r["vector"] == "stored" for r in results)
    return ns_score(results, group_of)


def test_ukbench_ns_score_through_add_and_query(imgvec) -> None:
    score = ukbench_ns_through_cli(imgvec, "--model", "mobilenet_v2", "--weights", WEIGHTS)
    print(f"UKBench140 N-S score (mobilenet_v2, real weights): {score:.3f}")
    assert score >= 3.95
