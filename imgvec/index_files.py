"""The index folder's files: which names are imgvec's, and deleting what a crashed writer left.

Light on purpose (no FAISS import): every writing command cleans up through it.
"""

from __future__ import annotations

import re
from pathlib import Path

from imgvec.atomic import TEMP_PREFIX

INDEX_DIR = "index"
OUR_FILE = re.compile(r"m\d+-(base|delta)-[0-9a-f]{12}\.faiss|model\d+-g\d+-[0-9a-f]{8}\.faiss")
"""Names imgvec gives index files (the second: revision 0001's single artifacts)."""


def index_files(root: Path) -> list[Path]:
    """The files in a library's index folder, by name."""
    directory = root / INDEX_DIR
    return sorted(p for p in directory.iterdir() if p.is_file()) if directory.is_dir() else []


def is_ours(path: Path) -> bool:
    """A temporary file or a segment file by imgvec's naming."""
    return path.name.startswith(TEMP_PREFIX) or OUR_FILE.fullmatch(path.name) is not None


def relative(path: Path) -> str:
    """How ``index_segments.path`` names a file of the index folder."""
    return f"{INDEX_DIR}/{path.name}"


def remove_orphans(root: Path, known: set[str]) -> tuple[int, int]:
    """Delete imgvec's files in the index folder that no row in ``known`` names (left by a
    killed writer); (files, bytes) deleted. The caller holds the write lock."""
    removed = freed = 0
    for path in index_files(root):
        if is_ours(path) and relative(path) not in known:
            freed += path.stat().st_size
            path.unlink(missing_ok=True)
            removed += 1
    return removed, freed
