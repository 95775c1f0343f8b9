"""imgvec: local-first image similarity search.

The Python API mirrors the CLI: open a :class:`Library`, then ``add``, ``remove``, ``query`` and
``status``.
"""

from imgvec.library import AddReport, Library, QueryHit, QueryResult

__all__ = ["AddReport", "Library", "QueryHit", "QueryResult"]
__version__ = "0.1.0"
