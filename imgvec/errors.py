"""Exceptions that carry a message meant for the user (the CLI prints them as one line)."""


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
