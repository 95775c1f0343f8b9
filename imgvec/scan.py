"""Finding image files: walking folders, recognising images, hashing; and telling what is gone.

An image is a file whose extension names a still-image format Pillow can decode (or that imgvec
reports as unsupported: HEIC), or a file whose first bytes Pillow recognises as one. Nothing is
decoded here.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

UNSUPPORTED_EXTENSIONS = frozenset([".heic", ".heif"])
"""Photo formats Pillow cannot decode: recognised, so that each file is reported, not ignored."""

NOT_PHOTOS = frozenset(["MPEG", "EPS"])
"""Formats Pillow opens that are not still images (video; PostScript documents, which need
Ghostscript)."""

_UNSUPPORTED_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (4, b"ftypheic"),
    (4, b"ftypheix"),
    (4, b"ftypmif1"),
)
_SNIFF_BYTES = 32

GONE_ERRNOS = frozenset([errno.ENOENT, errno.ENOTDIR])
"""A ``stat`` failing with these says the file is not there; any other error says nothing."""


@dataclass(frozen=True)
class FoundFile:
    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class PathProblem:
    """A path the walk could not use: a file (reported, the batch goes on) or a whole folder
    (``folder``: nothing under it was seen, so nothing under it may be taken as deleted)."""

    path: str
    reason: str
    folder: bool = False


@dataclass(frozen=True)
class Ignored:
    """A file in a walked folder that is not an image (or is hidden)."""

    path: str
    reason: str


@functools.cache
def _pillow_formats() -> tuple[frozenset[str], tuple[object, ...]]:
    """(extensions, accept functions) of every format Pillow can decode, stubs and
    :data:`NOT_PHOTOS` left out. Imports every Pillow plugin once (tens of ms)."""
    from PIL import Image, ImageFile

    Image.init()
    decodable = {
        name
        for name, (factory, _accept) in Image.OPEN.items()
        if name not in NOT_PHOTOS
        and not (isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile))
    }
    decodable.add("MPO")  # opened by the JPEG plugin, registered for saving only
    extensions = frozenset(
        ext for ext, name in Image.registered_extensions().items() if name in decodable
    )
    accepts = tuple(
        accept
        for name, (_factory, accept) in Image.OPEN.items()
        if name in decodable and accept is not None
    )
    return extensions | UNSUPPORTED_EXTENSIONS, accepts


def image_extensions() -> frozenset[str]:
    """Lower-case extensions, with the dot, of every still-image format imgvec recognises."""
    return _pillow_formats()[0]


def has_image_extension(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in image_extensions()


def has_image_signature(head: bytes) -> bool:
    """True when Pillow recognises ``head`` (a file's first bytes) as a format it decodes."""
    if any(head[offset : offset + len(sig)] == sig for offset, sig in _UNSUPPORTED_SIGNATURES):
        return True
    head = head.ljust(_SNIFF_BYTES, b"\x00")
    return any(accept(head) for accept in _pillow_formats()[1])  # type: ignore[operator]


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
) -> Iterator[FoundFile | PathProblem | Ignored]:
    """Yield the image files under ``roots`` (files or folders), recursively, with their stat;
    every path once, however often the roots name it.

    A file named directly is always yielded, so that its problems get reported. Inside folders,
    paths in ``known`` skip content sniffing: they are images already. Hidden files and folders
    are skipped, and symlinked folders are not followed (a file under them that the library holds
    is found by :func:`absence` instead). A folder that cannot be listed is a
    :class:`PathProblem` with ``folder=True``.
    """
    yielded: set[str] = set()
    for root in dict.fromkeys(roots):
        if os.path.isdir(root):
            items: Iterable[FoundFile | PathProblem | Ignored] = _walk_dir(root, known)
        elif os.path.lexists(root):
            items = [_stat(root)]
        else:
            items = [PathProblem(root, "no such file or directory")]
        for item in items:
            if item.path not in yielded:
                yielded.add(item.path)
                yield item


def _walk_dir(
    root: str, known: set[str] | frozenset[str]
) -> Iterator[FoundFile | PathProblem | Ignored]:
    problems: list[PathProblem] = []

    def on_error(error: OSError) -> None:
        reason = error.strerror or str(error)
        problems.append(PathProblem(error.filename or root, f"cannot list folder: {reason}", True))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        yield from problems
        problems.clear()
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if path in known:  # added before, perhaps by naming it although hidden
                yield _stat(path)
            elif name.startswith("."):
                yield Ignored(path, "hidden")
            elif looks_like_image(path):
                yield _stat(path)
            else:
                yield Ignored(path, "not an image")
    yield from problems  # os.walk reports a folder's error only when it moves on


def is_utf8(path: str) -> bool:
    """Whether a path (as Python decodes file names) can be stored as text: names that are not
    valid UTF-8 carry surrogate escapes, which no database column accepts."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _stat(path: str) -> FoundFile | PathProblem:
    if not is_utf8(path):
        return PathProblem(path, "file name is not valid UTF-8 (rename the file to add it)")
    try:
        info = os.stat(path)
    except OSError as error:
        return PathProblem(path, error.strerror or str(error))
    if not stat.S_ISREG(info.st_mode):
        return PathProblem(path, "not a regular file")
    return FoundFile(path, info.st_size, info.st_mtime_ns)


@dataclass(frozen=True)
class Absence:
    """What a path the walk did not yield says about itself (see :func:`absence`)."""

    found: FoundFile | None = None
    """The file is there after all (hidden, under a symlinked folder, named earlier)."""
    gone: bool = False
    """Positively gone: its own ``stat`` says so, and its folder is not an emptied one."""
    emptied: str | None = None
    """The missing or empty folder (an unmounted drive?) that hides it: kept without prune."""
    reason: str | None = None
    """Why nothing can be said (an access error, a name too long): kept, retried next time."""


def absence(path: str, roots: Sequence[str]) -> Absence:
    """Classify a library path that a walk of ``roots`` did not yield. Only an ENOENT/ENOTDIR
    from the file's own ``stat`` makes it gone, and only if the nearest folder above it that
    exists still has entries: a folder that reads as empty, or a root that is missing, is what an
    unmounted drive looks like (the folder and root are returned in ``emptied``)."""
    try:
        info = os.stat(path)
    except OSError as error:
        if error.errno not in GONE_ERRNOS:
            return Absence(reason=error.strerror or str(error))
    else:
        if stat.S_ISREG(info.st_mode):
            return Absence(found=FoundFile(path, info.st_size, info.st_mtime_ns))
        return Absence(gone=True)  # a folder (or a pipe) now: the image file is gone
    folder = os.path.dirname(path)
    while not os.path.isdir(folder):
        if folder in roots or os.path.dirname(folder) == folder:
            return Absence(emptied=folder)
        folder = os.path.dirname(folder)
    try:
        with os.scandir(folder) as entries:
            empty = next(entries, None) is None
    except OSError as error:
        return Absence(reason=error.strerror or str(error))
    return Absence(emptied=folder) if empty else Absence(gone=True)


def is_gone(path: str) -> bool:
    """True only when ``stat`` says there is no such file (an access error is not absence)."""
    try:
        os.stat(path)
    except OSError as error:
        return error.errno in GONE_ERRNOS
    return False


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
