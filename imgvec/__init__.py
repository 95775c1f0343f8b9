"""imgvec: local-first image similarity search.

The Python API mirrors the CLI: open a :class:`Library`, then ``add``, ``remove``, ``query`` and
``status``. The names below are imported on first use, so that ``import imgvec.<module>`` (and
the command's start-up) does not pay for SQLAlchemy, Alembic and Pillow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imgvec.api import (
        DEFAULT_MODEL,
        AddReport,
        FileError,
        Library,
        ModelInfo,
        QueryHit,
        QueryResult,
    )

__all__ = [
    "DEFAULT_MODEL",
    "AddReport",
    "FileError",
    "Library",
    "ModelInfo",
    "QueryHit",
    "QueryResult",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in __all__:
        from imgvec import api

        return getattr(api, name)
    raise AttributeError(f"module 'imgvec' has no attribute {name!r}")
