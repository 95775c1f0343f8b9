"""Shared fixtures: a temporary library, real image files, and the CLI runner."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import tests.fake_model  # noqa: F401  (registers the "fake" model)
from imgvec.cli.app import app

SHARED_EVAL = Path(__file__).resolve().parent.parent.parent / "shared" / "eval"
FAKE_ARGS = ["--model", "fake", "--weights", "none"]


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def json(self):  # type: ignore[no-untyped-def]
        return json.loads(self.stdout)


POSTGRES_ENV = "IMGVEC_TEST_POSTGRES"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``databases`` run on SQLite and on PostgreSQL (``database`` says which)."""
    if metafunc.definition.get_closest_marker("databases"):
        if "database" not in metafunc.fixturenames:
            metafunc.fixturenames.append("database")
        metafunc.parametrize("database", ["sqlite", "postgresql"])


SLOWEST_FIRST = (
    "test_benchmarks_models.py",
    "test_ray.py",
    "test_benchmarks_index.py",
    "test_onnx.py",
    "test_milvus.py",
    "test_crash_safety.py",
    "test_benchmarks_serve.py",
    "test_faults.py",
)
"""Files that take a minute or more, run first: the two xdist workers take whole files in
collection order as they free up, so no long file is left to run alone at the end."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: position for position, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole
    for item in items:
        on_postgres = getattr(item, "callspec", None) and item.callspec.params.get("database")
        if on_postgres == "postgresql" and item.get_closest_marker("sqlite_only"):
            item.add_marker(pytest.mark.skip(reason="reads or writes the SQLite file itself"))


@pytest.fixture(autouse=True)
def _isolated(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Every test gets its own library, no network-backed torch cache, and, when it runs on
    PostgreSQL, a fresh database (set up here, before any other fixture uses the library)."""
    monkeypatch.setenv("IMGVEC_LIBRARY", str(tmp_path / "library"))
    monkeypatch.delenv("IMGVEC_DB", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    callspec = getattr(request.node, "callspec", None)
    if callspec is None or callspec.params.get("database") != "postgresql":
        yield
        return
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(f"no PostgreSQL server: set {POSTGRES_ENV} (.ci/postgres starts one)")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"imgvec_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
    except Exception as error:  # the server went away: skip, saying why
        admin.dispose()
        pytest.skip(f"PostgreSQL at {admin_url} is not usable: {error}")
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    monkeypatch.setenv("IMGVEC_DB", url)
    try:
        yield
        # Everything the test did went to PostgreSQL, none of it to the default SQLite file.
        assert not (tmp_path / "library" / "imgvec.db").exists()
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


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
