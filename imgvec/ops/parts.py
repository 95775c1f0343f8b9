"""What an operation gets from a library: its parts, never the library itself.

:class:`imgvec.api.Library` makes one :class:`Parts` when it opens and passes it to the
operations in :mod:`imgvec.ops`; the operations import nothing above them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from imgvec.embed.loader import Models
from imgvec.index.indexes import Indexes
from imgvec.reporting import Reporter
from imgvec.types import FileError


@dataclass
class Parts:
    root: Path
    """The library folder (index files live under it)."""
    sessions: sessionmaker[Session]
    """New ORM sessions on the library database; the caller manages transactions."""
    reporter: Reporter
    models: Models
    indexes: Indexes

    def fail(self, errors: list[FileError], path: str, reason: str) -> None:
        """THE recording of a per-file problem: kept in the operation's report (``errors``) and
        told to the reporter (one line on the terminal), once."""
        errors.append(FileError(path, reason))
        self.reporter.file_error(path, reason)
