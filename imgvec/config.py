"""Where a library lives (its directory, its database URL and the files inside it), and the
defaults a user sees."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

LIBRARY_ENV = "IMGVEC_LIBRARY"
DB_ENV = "IMGVEC_DB"
VECTORS_ENV = "IMGVEC_VECTORS"
"""Where a library made without ``--vectors`` keeps its indexes (see ``Library.use_vectors``)."""
DB_FILENAME = "imgvec.db"
DEFAULT_MODEL = "vit_b_16"
"""The model a library embeds with unless told otherwise."""
PRECISIONS = ("auto", "fp32", "bf16")
"""How a model computes: bf16 under bfloat16 autocast (vectors are float32 either way); auto is
bf16 where the hardware has bfloat16 arithmetic (:func:`imgvec.embed.runtime.auto_precision`)."""
DEFAULT_K = 10
"""Results per query."""
DEFAULT_BATCH_SIZE = 32
"""Images per model call unless told otherwise (``--batch-size``), for add, model use and query."""


def default_library_dir() -> Path:
    """The per-user library: e.g. ``~/.local/share/imgvec`` on Linux."""
    return Path(platformdirs.user_data_dir("imgvec", appauthor=False))


@dataclass(frozen=True)
class LibraryPaths:
    """The files of one library. Index artifacts always live in ``root``; the metadata may not."""

    root: Path
    db_url: str

    @property
    def lock_file(self) -> Path:
        return self.root / "write.lock"

    @property
    def uses_default_sqlite(self) -> bool:
        return self.db_url == sqlite_url(self.root / DB_FILENAME)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def resolve_paths(
    library: str | os.PathLike[str] | None = None, db_url: str | None = None
) -> LibraryPaths:
    """Explicit arguments win, then ``IMGVEC_LIBRARY`` / ``IMGVEC_DB``, then the user default."""
    root_text = library or os.environ.get(LIBRARY_ENV) or default_library_dir()
    root = Path(root_text).expanduser().absolute()
    url = db_url or os.environ.get(DB_ENV) or sqlite_url(root / DB_FILENAME)
    return LibraryPaths(root=root, db_url=url)
