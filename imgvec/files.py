"""Finding image files: walking folders, recognising images by content, hashing."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

# Files with these extensions are always tried (and reported if they turn out to be unreadable);
# other files are tried only if their first bytes carry an image signature.
IMAGE_EXTENSIONS = frozenset(
    [
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".gif",
        ".bmp",
        ".dib",
        ".tif",
        ".tiff",
        ".webp",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".ico",
        ".tga",
        ".jp2",
        ".j2k",
        ".heic",
        ".heif",
        ".avif",
        ".psd",
    ]
)

# (offset, signature): enough to tell images from everything else without decoding.
_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (0, b"\xff\xd8\xff"),  # JPEG
    (0, b"\x89PNG\r\n\x1a\n"),
    (0, b"GIF87a"),
    (0, b"GIF89a"),
    (0, b"BM"),
    (0, b"II*\x00"),  # TIFF little-endian
    (0, b"MM\x00*"),  # TIFF big-endian
    (8, b"WEBP"),
    (4, b"ftypheic"),
    (4, b"ftypheix"),
    (4, b"ftypmif1"),
    (4, b"ftypavif"),
    (0, b"\x00\x00\x00\x0cjP  "),  # JPEG 2000
    (0, b"8BPS"),  # Photoshop
)
_SNIFF_BYTES = 16


@dataclass(frozen=True)
class FoundFile:
    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class PathProblem:
    path: str
    reason: str


def has_image_signature(head: bytes) -> bool:
    return any(head[offset : offset + len(sig)] == sig for offset, sig in _SIGNATURES)


def has_image_extension(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def looks_like_image(path: str) -> bool:
    """True for an image extension, else for an image signature in a regular file's first bytes.

    Only regular files are opened: opening a FIFO would block forever.
    """
    if has_image_extension(path):
        return True
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as handle:
            return has_image_signature(handle.read(_SNIFF_BYTES))
    except OSError:
        return False


def normalize(path: str | os.PathLike[str]) -> str:
    """The absolute, normalised form in which paths are stored (symlinks are not resolved)."""
    return os.path.normpath(os.path.abspath(os.fspath(path)))


def walk(
    roots: Iterable[str], *, known: set[str] | frozenset[str] = frozenset()
) -> Iterator[FoundFile | PathProblem]:
    """Yield the image files under ``roots`` (files or folders), recursively, with their stat.

    A file named directly is always yielded, so that its problems get reported. Inside folders,
    paths in ``known`` skip content sniffing: they are images already. Hidden folders are skipped.
    """
    for root in roots:
        if os.path.isdir(root):
            yield from _walk_dir(root, known)
        elif os.path.lexists(root):
            yield _stat(root)
        else:
            yield PathProblem(root, "no such file or directory")


def _walk_dir(root: str, known: set[str] | frozenset[str]) -> Iterator[FoundFile | PathProblem]:
    problems: list[PathProblem] = []

    def on_error(error: OSError) -> None:
        problems.append(PathProblem(error.filename or root, error.strerror or str(error)))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if name.startswith(".") or not (path in known or looks_like_image(path)):
                continue
            yield _stat(path)
        yield from problems
        problems.clear()


def _stat(path: str) -> FoundFile | PathProblem:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return PathProblem(path, "file name is not valid UTF-8 (rename the file to add it)")
    try:
        info = os.stat(path)
    except OSError as error:
        return PathProblem(path, error.strerror or str(error))
    if not stat.S_ISREG(info.st_mode):
        return PathProblem(path, "not a regular file")
    return FoundFile(path, info.st_size, info.st_mtime_ns)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
