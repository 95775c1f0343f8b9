"""Schema migrations (Alembic) agree with the models, round-trip, and work from the alembic CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from imgvec.storage.engine import (
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
    newest_revision,
    upgrade_schema,
)
from imgvec.storage.schema import Base
from tests.conftest import FAKE_ARGS

ROOT = Path(__file__).resolve().parent.parent


def url_for(database: str, tmp_path: Path) -> str:
    return os.environ["IMGVEC_DB"] if database == "postgresql" else f"sqlite:///{tmp_path / 'db'}"


@pytest.mark.databases
def test_models_and_migrations_agree(tmp_path: Path, database: str) -> None:
    engine = make_engine(url_for(database, tmp_path))
    upgrade_schema(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


@pytest.mark.databases
def test_downgrade_and_upgrade_round_trip(tmp_path: Path, database: str) -> None:
    url = url_for(database, tmp_path)
    engine = make_engine(url)
    upgrade_schema(engine)
    config = alembic_config(url)
    head = head_revision(config)
    tables = set(inspect(engine).get_table_names())
    assert {
        "images",
        "embeddings",
        "models",
        "changes",
        "index_versions",
        "index_segments",
    } <= tables

    command.downgrade(config, "base")
    assert current_revision(engine) is None
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}

    command.upgrade(config, "head")
    assert current_revision(engine) == head
    assert set(inspect(engine).get_table_names()) == tables


def test_opening_an_old_library_upgrades_it_and_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = make_engine(url)
    upgrade_schema(engine)
    command.downgrade(alembic_config(url), "base")
    command.stamp(alembic_config(url), "base")
    messages: list[str] = []
    upgrade_schema(engine, messages.append)
    assert messages and "revision" in messages[0]


def test_alembic_cli_upgrade_and_check_against_a_library(tmp_path: Path) -> None:
    env = {**os.environ, "IMGVEC_LIBRARY": str(tmp_path / "lib")}
    env.pop("IMGVEC_DB", None)
    for args in (["upgrade", "head"], ["check"], ["current"]):
        done = subprocess.run(
            [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), *args],
            env=env,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "lib" / "imgvec.db").is_file()
    assert "(head)" in done.stdout


@pytest.mark.databases
def test_schema_round_trip_keeps_images_and_vectors(imgvec, tmp_path: Path, database: str) -> None:
    """Batch mode rebuilds tables on SQLite; with foreign keys on, that would cascade-delete."""
    from sqlalchemy import text

    from tests.conftest import FAKE_ARGS, make_image

    for i in range(5):
        make_image(tmp_path / "p" / f"{i}.jpg", seed=i)
    assert imgvec("add", tmp_path / "p", *FAKE_ARGS).exit_code == 0
    url = url_for(database, tmp_path / "library")
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'library' / 'imgvec.db'}"
    config = alembic_config(url)
    engine = make_engine(url)

    def counts() -> tuple[int, int]:
        with engine.connect() as connection:
            return (
                connection.scalar(text("SELECT count(*) FROM images")),
                connection.scalar(text("SELECT count(*) FROM embeddings")),
            )

    assert counts() == (5, 5)
    command.downgrade(config, "0001")
    assert counts() == (5, 5)
    command.upgrade(config, "head")
    assert counts() == (5, 5)
    with engine.connect() as connection:  # 0006 counted each model's vectors
        assert connection.scalar(text("SELECT vector_count FROM models")) == 5


def test_an_interrupted_upgrade_leaves_the_old_schema_and_can_run_again(tmp_path: Path) -> None:
    """A Ctrl-C between two statements of a migration: SQLite keeps none of it (Python's sqlite3
    would have committed each ALTER on its own, leaving a schema no revision describes)."""
    from sqlalchemy import event

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = make_engine(url)
    upgrade_schema(engine)
    command.downgrade(alembic_config(url), "0002")
    columns = {c["name"] for c in inspect(engine).get_columns("images")}

    def interrupt(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if "CREATE INDEX" in statement:  # after the new columns went in
            raise KeyboardInterrupt

    event.listen(engine, "before_cursor_execute", interrupt)
    with pytest.raises(KeyboardInterrupt):
        upgrade_schema(engine)
    event.remove(engine, "before_cursor_execute", interrupt)

    assert current_revision(engine) == "0002"
    assert {c["name"] for c in inspect(engine).get_columns("images")} == columns
    upgrade_schema(engine)
    assert current_revision(engine) == head_revision(alembic_config(url))


def test_two_processes_creating_one_library_at_once_both_succeed(tmp_path: Path) -> None:
    """The second waits for the first one's transaction, then finds nothing left to do."""
    script = (
        "import sys; from imgvec.storage.engine import make_engine, upgrade_schema; "
        "upgrade_schema(make_engine(sys.argv[1]))"
    )
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    runs = [
        subprocess.Popen([sys.executable, "-c", script, url], stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    for run in runs:
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 0, stderr
    assert current_revision(make_engine(url)) == head_revision(alembic_config(url))


def test_the_head_read_from_file_names_is_alembics_head(tmp_path: Path) -> None:
    assert newest_revision() == head_revision(alembic_config(f"sqlite:///{tmp_path / 'x.db'}"))


def test_opening_a_current_library_imports_no_alembic(imgvec, photos: Path, library: Path) -> None:
    assert imgvec("add", photos, *FAKE_ARGS).exit_code == 0
    code = (
        "import sys; from imgvec.api import Library; "
        f"Library.open({str(library)!r}, create=False).status(); "
        "print('alembic' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_library_from_a_newer_imgvec_is_refused_with_the_reason(tmp_path: Path) -> None:
    from sqlalchemy import text

    from imgvec.errors import ImgvecError

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = make_engine(url)
    upgrade_schema(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(ImgvecError, match="revision 9999 is newer than this imgvec knows"):
        upgrade_schema(engine)
