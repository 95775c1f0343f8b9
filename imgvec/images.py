"""Reading image files safely into RGB pictures the models can use."""

from __future__ import annotations

import io
import os
import struct
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

from imgvec.errors import ImageError
from imgvec.metadata import PhotoMetadata, read_exif, upright

MAX_PIXELS = 178_956_970
"""Pillow's own decompression-bomb error limit (2 x ``Image.MAX_IMAGE_PIXELS``), checked on the
header before any pixel is decoded. Pillow only warns between half this and this (100-megapixel
cameras are there); the check here is what refuses bombs."""

# Pillow's warning covers sizes we accept on purpose; the explicit check above is the guard.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
MAX_FILE_BYTES = 512 * 1024 * 1024
"""Files are read whole (hashed and decoded from one read); larger ones are refused."""

_WHITE = (255, 255, 255)


@dataclass(frozen=True)
class Picture:
    """A decoded image, upright (EXIF orientation applied) and in 8-bit RGB."""

    image: Image.Image
    width: int
    height: int
    format: str
    metadata: PhotoMetadata = field(default_factory=PhotoMetadata)


def read_file(path: str) -> bytes:
    """The file's bytes, or an :class:`ImageError` naming the reason it can't be read."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            raise ImageError("empty file (0 bytes)")
        if size > MAX_FILE_BYTES:
            raise ImageError(f"file too large ({size} bytes, limit {MAX_FILE_BYTES})")
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise ImageError(f"cannot read file: {error.strerror or error}") from error


def decode(data: bytes, min_side: int | None = None) -> Picture:
    """Decode image bytes; any problem becomes an :class:`ImageError` with a short reason.

    With ``min_side``, a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling,
    Pillow's ``draft``) as long as both sides stay at least ``min_side`` pixels; the picture's
    ``width`` and ``height`` are still those of the full image.
    """
    try:
        image = Image.open(io.BytesIO(data))
        fmt = image.format or "unknown"
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise ImageError(
                f"image too large ({width}x{height} pixels, limit {MAX_PIXELS}; "
                "possible decompression bomb)"
            )
        if min_side is not None:
            image.draft(None, (min_side, min_side))  # a no-op for formats other than JPEG
        image.load()
        metadata = read_exif(image)
        rgb = to_rgb(upright(image))
        if (rgb.width, rgb.height) != image.size:  # EXIF orientation turned it a quarter
            width, height = height, width
    except ImageError:
        raise
    except UnidentifiedImageError as error:
        raise ImageError("not an image, or an unsupported image format") from error
    except Image.DecompressionBombError as error:
        raise ImageError(f"image too large (possible decompression bomb): {error}") from error
    except OSError as error:
        raise ImageError(f"corrupt or truncated image: {error}") from error
    except (ValueError, SyntaxError, struct.error, MemoryError) as error:
        raise ImageError(f"corrupt image: {error}") from error
    return Picture(rgb, width, height, fmt, metadata)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: transparency composited on white, high bit depths scaled (not clipped)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        grey = _scale_to_uint8(np.asarray(image), unit_range=mode == "F")
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "P" or mode == "PA":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _scale_to_uint8(values: np.ndarray, *, unit_range: bool) -> np.ndarray:
    """Map 16-bit, 32-bit or float single-channel pixels to 0..255 by their nominal range."""
    values = values.astype(np.float64)
    peak = float(values.max(initial=0.0))
    top = 1.0 if unit_range and peak <= 1.0 else max(65535.0, peak)
    return np.clip(np.round(values * (255.0 / top)), 0, 255).astype(np.uint8)
