"""Exceptions that carry a message meant for the user (the CLI prints them as one line)."""

import errno


class ImgvecError(Exception):
    """Base class: an error with a message fit to show a user as is."""


class ModelError(ImgvecError):
    """Unknown model or layer, or a model request that conflicts with the library's model."""


class WeightsUnavailable(ImgvecError):
    """Weights could not be loaded (download failed, file missing or mismatched)."""


class LibraryLocked(ImgvecError):
    """Another process is writing to the library."""


class ImageError(ImgvecError):
    """An image file could not be used; the message is the reason."""


class NotAnImage(ImageError):
    """The bytes are not an image, or not in a format imgvec reads."""


class ImageTooLarge(ImageError):
    """Too many bytes or pixels (a possible decompression bomb)."""


class ImageNotFound(ImgvecError):
    """No readable library image has that id (or no vector of the model asked for)."""


class ClusterError(ImgvecError):
    """``--ray``: Ray is not installed, the cluster cannot be reached, or a worker failed in a
    way that is not one file's (its model cannot load). Committed batches stay."""


class VectorStoreError(ImgvecError):
    """The library's Milvus store cannot be reached or used; the message says which and why."""


class StorageError(ImgvecError):
    """The library's storage refused a write: disk full, read-only, I/O error. Nothing
    committed is lost; the command stops."""


_STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
}
_STORAGE_MESSAGES = (
    "database or disk is full",
    "no space left on device",
    "attempt to write a readonly database",
    "disk i/o error",
)


def cannot_write(problem: str) -> str:
    """The message for a write the storage refused (``problem``: from :func:`storage_problem`)."""
    return (
        f"cannot write ({problem}); everything the library had committed is kept: free some "
        "space (or make it writable) and run the command again"
    )


def storage_problem(error: BaseException) -> str | None:
    """A one-line description when ``error`` says the library's storage cannot be written
    (SQLite's or PostgreSQL's full disk, a read-only file, FAISS's failed write), else None.
    Errors are matched by errno and by the messages SQLite and FAISS give (sqlite3.c, faiss
    ``index_write.cpp``)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, StorageError):
            return str(seen)
        number = getattr(seen, "errno", None)
        if isinstance(seen, OSError) and number in _STORAGE_ERRNOS:
            return f"{_STORAGE_ERRNOS[number]}: {seen.strerror or seen}"
        text = str(seen).lower()
        for message in _STORAGE_MESSAGES:
            if message in text:
                return message
        seen = getattr(seen, "orig", None) or seen.__cause__
    return None
