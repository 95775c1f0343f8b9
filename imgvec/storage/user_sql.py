"""Users' own SQL over the library's metadata, run read-only: the database refuses writes.

SQLite connections get ``PRAGMA query_only`` (and run one statement at a time), and an
authorizer that allows reading and nothing else: no ``ATTACH`` (which would create a file
anywhere, as would ``VACUUM INTO``), no pragma that sets anything. PostgreSQL runs the statement
in a ``READ ONLY`` transaction as a prepared statement (psycopg 3's extended protocol), which
refuses a second statement, so no ``COMMIT; DELETE ...`` can escape the transaction. (Without
``prepare``, psycopg sends a statement without parameters through the simple protocol, which
runs several.)

A time limit (:data:`TIMEOUT_OPTION`, an execution option of the engine: ``imgvec serve`` sets
one, the CLI none, since Ctrl-C stops it) stops a runaway statement: SQLite's progress handler,
PostgreSQL's ``statement_timeout``.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from imgvec.errors import ImgvecError

MAX_ROWS = 100_000
TIMEOUT_OPTION = "imgvec_user_sql_timeout_s"
"""Engine execution option: seconds a user's statement may run (absent: no limit)."""
_PROGRESS_STEPS = 10_000
"""SQLite virtual-machine steps between two looks at the clock (well under a millisecond)."""
_ALLOWED = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_RECURSIVE,
}
_TABLE_PRAGMAS = {
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "integrity_check",
    "quick_check",
}
"""Pragmas that only read, and take an argument (a table, or how many problems to list)."""
_READ_PRAGMAS = _TABLE_PRAGMAS | {
    "database_list",
    "collation_list",
    "function_list",
    "pragma_list",
    "compile_options",
    "user_version",
    "schema_version",
    "page_count",
    "page_size",
    "freelist_count",
    "encoding",
}


@dataclass(frozen=True)
class SqlResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool

    def to_json(self) -> list[dict[str, Any]]:
        """One object per row, by column name (what ``imgvec sql --json`` prints)."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def _authorize(action: int, first: str | None, second: str | None, *_: object) -> int:
    """SQLite's authorizer for users' statements: reading only (see the module docstring)."""
    if action in _ALLOWED:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and first is not None:
        name = first.lower()
        if name in _READ_PRAGMAS and (second is None or name in _TABLE_PRAGMAS):
            return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


@contextmanager
def read_only(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        timeout = connection.get_execution_options().get(TIMEOUT_OPTION)
        raw = connection.connection.driver_connection
        if sqlite:
            connection.exec_driver_sql("PRAGMA query_only = ON")
            raw.set_authorizer(_authorize)
            if timeout is not None:
                deadline = time.monotonic() + timeout
                raw.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
        else:
            connection.exec_driver_sql("SET TRANSACTION READ ONLY")
            if timeout is not None:
                connection.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout * 1000)}")
        try:
            yield connection
        finally:
            connection.rollback()
            if sqlite:  # the connection goes back to the pool
                raw.set_authorizer(None)
                raw.set_progress_handler(None, 0)
                connection.exec_driver_sql("PRAGMA query_only = OFF")
                connection.commit()


def run(engine: Engine, statement: str, max_rows: int = MAX_ROWS) -> SqlResult:
    """Run one read-only statement; a bad or writing statement is an :class:`ImgvecError`."""
    if engine.dialect.name != "sqlite" and engine.dialect.driver != "psycopg":
        raise ImgvecError(
            "imgvec sql needs SQLite, or PostgreSQL through psycopg 3 "
            "(postgresql+psycopg://...), to guarantee read-only access"
        )
    try:
        with read_only(engine) as connection:
            cursor = connection.connection.driver_connection.cursor()
            if connection.dialect.name == "sqlite":
                cursor.execute(statement)
            else:
                cursor.execute(statement, prepare=True)
            if cursor.description is None:
                return SqlResult([], [], False)
            columns = [column[0] for column in cursor.description]
            rows = [tuple(row) for row in cursor.fetchmany(max_rows + 1)]
    except (DBAPIError, SQLAlchemyError, *_driver_errors()) as error:
        reason = _first_line(error)
        if reason == "interrupted" or "statement timeout" in reason:
            limit = engine.get_execution_options().get(TIMEOUT_OPTION)
            reason = f"the statement ran longer than {limit:g} s and was stopped"
        elif reason in ("not authorized", "authorization denied"):
            reason = "not authorized: only reading statements run here"
        raise ImgvecError(f"SQL error: {reason}") from error
    return SqlResult(columns, rows[:max_rows], len(rows) > max_rows)


def matching_ids(engine: Engine, condition: str) -> set[int]:
    """Ids of the readable images (the ``photos`` view) for which ``condition`` holds.
    Raises ImgvecError for an empty condition or one the database rejects."""
    if not condition.strip():
        raise ImgvecError("--where needs a condition, e.g. \"folder LIKE '%/2024/%'\"")
    result = run(engine, f"SELECT id FROM photos WHERE ({condition})", max_rows=10**9)
    return {int(row[0]) for row in result.rows}


def _driver_errors() -> tuple[type[Exception], ...]:
    """The drivers' own error classes (the raw cursor bypasses SQLAlchemy's wrapping)."""
    psycopg = sys.modules.get("psycopg")
    return (sqlite3.Error, psycopg.Error) if psycopg else (sqlite3.Error,)


def _first_line(error: Exception) -> str:
    original = getattr(error, "orig", None) or error
    return str(original).strip().splitlines()[0]
