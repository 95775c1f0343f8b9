"""Users' own SQL over the library's metadata, run read-only: the database refuses writes.

SQLite connections get ``PRAGMA query_only`` (and run one statement at a time); PostgreSQL runs
the statement in a ``READ ONLY`` transaction as a prepared statement (psycopg 3's extended
protocol), which refuses a second statement, so no ``COMMIT; DELETE ...`` can escape the
transaction. (Without ``prepare``, psycopg sends a statement without parameters through the
simple protocol, which runs several.)
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from imgvec.errors import ImgvecError

MAX_ROWS = 100_000


@dataclass(frozen=True)
class SqlResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool

    def to_json(self) -> list[dict[str, Any]]:
        """One object per row, by column name (what ``imgvec sql --json`` prints)."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@contextmanager
def read_only(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            connection.exec_driver_sql("PRAGMA query_only = ON")
        else:
            connection.exec_driver_sql("SET TRANSACTION READ ONLY")
        try:
            yield connection
        finally:
            connection.rollback()
            if sqlite:  # the connection goes back to the pool
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
        raise ImgvecError(f"SQL error: {_first_line(error)}") from error
    return SqlResult(columns, rows[:max_rows], len(rows) > max_rows)


def matching_ids(engine: Engine, condition: str) -> set[int]:
    """Ids of the readable images (the ``photos`` view) for which ``condition`` holds."""
    result = run(engine, f"SELECT id FROM photos WHERE ({condition})", max_rows=10**9)
    return {int(row[0]) for row in result.rows}


def _driver_errors() -> tuple[type[Exception], ...]:
    """The drivers' own error classes (the raw cursor bypasses SQLAlchemy's wrapping)."""
    psycopg = sys.modules.get("psycopg")
    return (sqlite3.Error, psycopg.Error) if psycopg else (sqlite3.Error,)


def _first_line(error: Exception) -> str:
    original = getattr(error, "orig", None) or error
    return str(original).strip().splitlines()[0]
