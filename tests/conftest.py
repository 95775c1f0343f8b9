"""Shared fixtures: a temporary library, real image files, and the CLI runner."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import tests.fake_model  # noqa: F401  (registers the "fake" model)
from imgvec.cli import app

SHARED_EVAL = Path(__file__).resolve().parent.parent.parent / "shared" / "eval"
FAKE_ARGS = ["--model", "fake", "--weights", "none"]


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def json(self):  # type: ignore[no-untyped-def]
        return json.loads(self.stdout)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own default library and no network-backed torch cache."""
    monkeypatch.setenv("IMGVEC_LIBRARY", str(tmp_path / "library"))
    monkeypatch.delenv("IMGVEC_DB", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


@pytest.fixture
def library(tmp_path: Path) -> Path:
    return tmp_path / "library"


@pytest.fixture
def imgvec() -> Callable[..., Run]:
    """Run the CLI in-process: ``imgvec("add", path)``."""
    runner = CliRunner()

    def run(*args: object) -> Run:
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        return Run(result.exit_code, result.stdout, result.stderr)

    return run


def make_image(
    path: Path,
    seed: int,
    size: tuple[int, int] = (96, 64),
    fmt: str | None = None,
    mode: str = "RGB",
) -> Path:
    """A picture with a seeded random colour layout (distinct seeds, distinct vectors)."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(grid).resize(size, Image.Resampling.NEAREST).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    return path


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder of 6 distinct photos, two of them in a subfolder."""
    root = tmp_path / "photos"
    for i in range(4):
        make_image(root / f"p{i}.jpg", seed=i)
    for i in range(4, 6):
        make_image(root / "sub" / f"p{i}.png", seed=i)
    return root


def set_mtime(path: Path, mtime_ns: int) -> None:
    os.utime(path, ns=(mtime_ns, mtime_ns))
