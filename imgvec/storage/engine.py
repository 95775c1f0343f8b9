"""Engines and schema upgrades: opening a database brings its schema to the newest revision."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url

from imgvec.errors import ImgvecError
from imgvec.storage.snapshot import MIGRATIONS_DIR, newest_revision, read_only_flag

if TYPE_CHECKING:
    from alembic.config import Config


def make_engine(url: str, read_only: bool = False, frozen: bool = False) -> Engine:
    """An engine; SQLite gets WAL (readers never block the writer), foreign keys and a busy wait.

    ``read_only`` opens a SQLite file that cannot be written (a backup, a read-only mount, a full
    disk): ``mode=ro``, or ``immutable=1`` where WAL's ``-shm`` file cannot be made either (its
    folder is read-only, or ``frozen``: the disk is full) and no ``-wal`` file holds commits
    (SQLite's URI filenames; https://www.sqlite.org/wal.html#readonly).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    database = parsed.database
    if read_only and database and database != ":memory:":
        flag = read_only_flag(Path(os.path.abspath(database)), frozen)
        url = f"sqlite:///file:{quote(os.path.abspath(database))}?{flag}&uri=true"
    elif database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        if not read_only:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    return engine


def sqlite_file(url: str) -> str | None:
    """The file of a SQLite URL (None for other databases and in-memory SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return parsed.database


@contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection to migrate with, all in one transaction: an interrupted upgrade leaves the
    old schema, never half of the new one.

    On SQLite, Python's sqlite3 module would commit each CREATE or ALTER on its own (it only
    opens transactions before INSERT, UPDATE and DELETE), so the connection is put in autocommit
    mode and the transaction is opened here with BEGIN IMMEDIATE, which also makes a second
    process that upgrades at the same moment wait, then find nothing left to do. Foreign keys are
    off meanwhile: batch mode rebuilds a table by copying it and dropping the old one, and with
    foreign keys on that DROP would cascade (deleting every embedding of the images table); the
    pragma only takes effect outside a transaction."""
    with engine.connect() as connection:
        raw = (
            connection.connection.dbapi_connection if connection.dialect.name == "sqlite" else None
        )
        if raw is not None:
            raw.isolation_level = None
            raw.execute("PRAGMA foreign_keys=OFF")
            raw.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        finally:
            # An interrupt invalidates the connection: closing it rolled the transaction back.
            if raw is not None and not connection.invalidated:
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
                raw.execute("PRAGMA foreign_keys=ON")
                raw.isolation_level = ""


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision(config: Config) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database's schema is at (None: no imgvec schema yet), by plain SQL."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade_schema(
    engine: Engine, notify: Callable[[str], None] = lambda _msg: None, read_only: bool = False
) -> None:
    """Upgrade the schema to head if needed, saying so through ``notify``. A ``read_only``
    database that needs an upgrade raises :class:`ImgvecError`."""
    current, head = current_revision(engine), newest_revision()
    if current == head:
        return
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    url = engine.url.render_as_string(hide_password=False)
    config = alembic_config(url)
    # Alembic reads every migration file for each ScriptDirectory: a new library (every test
    # makes one) needs only the one ``command.upgrade`` makes.
    if current is not None:
        known = {rev.revision for rev in ScriptDirectory.from_config(config).walk_revisions()}
        if current not in known:
            raise ImgvecError(
                f"the library's schema revision {current} is newer than this imgvec knows; "
                "upgrade imgvec"
            )
    if read_only:
        raise ImgvecError(
            "the library was made by an older imgvec and is read-only here; its schema must be "
            "upgraded once by a command with write access (imgvec status)"
        )
    with migration_connection(engine) as connection:
        if MigrationContext.configure(connection).get_current_revision() == head:
            return  # another process upgraded it while this one waited
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        connection.commit()
    if current is None:
        notify(f"Created library schema (revision {head})")
    else:
        notify(f"Upgraded library schema from revision {current} to {head}")
