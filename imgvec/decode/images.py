"""Reading image files safely into RGB pictures the models can use."""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from imgvec.decode.exif import PhotoMetadata, read_exif, upright
from imgvec.errors import ImageError, ImageTooLarge, NotAnImage

MAX_PIXELS = 178_956_970
"""Pillow's own decompression-bomb error limit (2 x ``Image.MAX_IMAGE_PIXELS``), checked on the
header before any pixel is decoded. Pillow only warns between half this and this (100-megapixel
cameras are there); the check here is what refuses bombs."""

# Pillow's warning covers sizes we accept on purpose; the explicit check above is the guard.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# Pillow warns about what it finds in damaged files (corrupt EXIF, odd tags, palettes with byte
# transparency, deprecated formats); each file's problems are reported as its reason instead.
# A module-wide filter, because decode runs on several threads at once and catch_warnings() is
# process-global (not thread-safe).
warnings.filterwarnings("ignore", module=r"PIL(\.|$)")

MAX_FILE_BYTES = 512 * 1024 * 1024
"""Files are read whole (hashed and decoded from one read); larger ones are refused."""

SHRINK_ABOVE_PIXELS = 32_000_000
"""With ``min_side``, images other than JPEG larger than this (more than most cameras' PNG and
TIFF exports) are box-reduced right after decoding, while both sides stay at least
``REDUCING_GAP * min_side``: their conversions to RGB then cost little, not 3-4 full-size copies."""
REDUCING_GAP = 2
"""Reduction leaves at least this many times ``min_side`` (Pillow's ``reducing_gap``): the final
antialiased resize then gives what it gives from the full image, to within rounding."""

_WHITE = (255, 255, 255)
_HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_REDUCIBLE_MODES = frozenset(["L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"])
_STRIP_PIXELS = 1 << 20
"""High bit depths are scaled this many pixels at a time (float64 temporaries of 8 MB)."""


@dataclass(frozen=True)
class Picture:
    """A decoded image, upright (EXIF orientation applied) and in 8-bit RGB.

    ``width`` and ``height`` are the full image's (upright); ``image`` may be smaller when it was
    decoded for a model (see :func:`decode`'s ``min_side``), and None in what a Ray worker sends
    back (:meth:`without_pixels`).
    """

    image: Image.Image | None
    width: int
    height: int
    format: str
    metadata: PhotoMetadata = field(default_factory=PhotoMetadata)

    def without_pixels(self) -> Picture:
        """What the library stores of the picture (sizes, format, EXIF columns), no pixels."""
        return replace(self, image=None)


def read_file(path: str) -> bytes:
    """The file's bytes, or an :class:`ImageError` naming the reason it can't be read."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise ImageError("not a regular file")
        size = info.st_size
        if size == 0:
            raise ImageError("empty file (0 bytes)")
        if size > MAX_FILE_BYTES:
            raise ImageError(f"file too large ({size} bytes, limit {MAX_FILE_BYTES})")
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise ImageError(f"cannot read file: {error.strerror or error}") from error


NOT_AN_IMAGE = "not an image, or an unsupported image format"


def probe(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[str, int, int]:
    """Format name, width and height (pixels, as stored) from the header alone, without decoding.

    Raises :class:`NotAnImage` when Pillow cannot identify the bytes, :class:`ImageTooLarge` over
    ``max_pixels``, :class:`ImageError` for another fault of the header."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt, (width, height) = image.format or "unknown", image.size
    except UnidentifiedImageError as error:
        raise NotAnImage(NOT_AN_IMAGE) from error
    except Image.DecompressionBombError as error:  # Pillow's own, far over max_pixels
        raise ImageTooLarge(
            f"image too large (over {max_pixels} pixels; possible decompression bomb)"
        ) from error
    except Exception as error:
        raise ImageError(f"corrupt image header: {one_line(error)}") from error
    _check_pixels(width, height, max_pixels)
    return fmt, width, height


def _check_pixels(width: int, height: int, limit: int) -> None:
    if width * height > limit:
        raise ImageTooLarge(
            f"image too large ({width}x{height} pixels, limit {limit}; possible decompression bomb)"
        )


def decode(data: bytes, min_side: int | None = None) -> Picture:
    """Decode image bytes into an upright 8-bit RGB :class:`Picture`.

    Raises :class:`ImageError` with a short, one-line reason for every problem of the file
    (any ``Exception`` raised while opening, decoding, reading EXIF, orienting or converting,
    ``MemoryError`` included); only ``KeyboardInterrupt`` and ``SystemExit`` pass through.

    With ``min_side`` (pixels), the picture may be decoded smaller, as long as both sides stay at
    least ``min_side``: a JPEG at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, Pillow's
    ``draft``), another format over :data:`SHRINK_ABOVE_PIXELS` box-reduced by an integer factor
    keeping ``REDUCING_GAP * min_side``. The picture's ``width`` and ``height`` are still those
    of the full image.
    """
    fmt, kind = "unknown", "image"
    try:
        image = Image.open(io.BytesIO(data))
        if image.format:
            fmt, kind = image.format, f"{image.format} image"
        width, height = image.size
        _check_pixels(width, height, MAX_PIXELS)
        if min_side is not None:
            image.draft(None, (min_side, min_side))  # a no-op for formats other than JPEG
        image.load()
        metadata = read_exif(image)
        image = _to_8_bit(image)
        if min_side is not None:
            image = _shrink(image, min_side)
        rgb = _detached(to_rgb(upright(image, metadata.orientation)))
        if metadata.orientation in (5, 6, 7, 8):  # EXIF orientation turned it a quarter
            width, height = height, width
    except ImageError:
        raise
    except UnidentifiedImageError as error:
        raise NotAnImage(NOT_AN_IMAGE) from error
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(f"image too large (possible decompression bomb): {error}") from error
    except MemoryError as error:
        raise ImageError(f"not enough memory to decode this {kind}") from error
    except OSError as error:
        raise ImageError(f"corrupt or truncated image: {one_line(error)}") from error
    except Exception as error:  # a decoder's complaint (AVIF: RuntimeError) costs one file
        raise ImageError(f"corrupt {kind}: {one_line(error)}") from error
    return Picture(rgb, width, height, fmt, metadata)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: transparency composited on white, high bit depths scaled (not clipped)."""
    image = _to_8_bit(image)
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _detached(image: Image.Image) -> Image.Image:
    """The decoded pixels without the file they came from (no copy): an image file object can
    keep the file's bytes alive (AVIF's decoder, a multi-frame file's handle) for as long as the
    picture lives."""
    return image._new(image.im) if isinstance(image, ImageFile.ImageFile) else image


def _to_8_bit(image: Image.Image) -> Image.Image:
    """The image in a mode with 8-bit channels: high bit depths scaled to L, bilevel as L,
    palettes as RGBA when they have transparency, else RGB; other modes as they are."""
    mode = image.mode
    if mode in _HIGH_BIT_MODES:
        return _scale_to_uint8(image, unit_range=mode == "F")
    if mode == "1":
        return image.convert("L")
    if mode == "PA" or (mode == "P" and _has_transparency(image)):
        return image.convert("RGBA")
    if mode == "P":
        return image.convert("RGB")  # what compositing the opaque RGBA on white would give
    return image


def _has_transparency(palette_image: Image.Image) -> bool:
    palette = palette_image.palette
    return "transparency" in palette_image.info or (palette is not None and palette.mode == "RGBA")


def _shrink(image: Image.Image, min_side: int) -> Image.Image:
    """``image`` box-reduced by the largest integer factor that keeps both sides at least
    ``REDUCING_GAP * min_side``, when it has more than :data:`SHRINK_ABOVE_PIXELS` pixels."""
    factor = min(image.size) // (REDUCING_GAP * min_side)
    if factor < 2 or image.width * image.height <= SHRINK_ABOVE_PIXELS:
        return image
    if image.mode not in _REDUCIBLE_MODES:
        return image
    return image.reduce(factor)


def _scale_to_uint8(image: Image.Image, *, unit_range: bool) -> Image.Image:
    """An L image from 16-bit, 32-bit or float single-channel pixels, mapped to 0..255 by their
    nominal range (0..65535, or the largest value when higher; 0..1 for floats that fit).

    NaN becomes 0 and infinities the ends of the range; the largest value is that of the finite
    pixels. Works in strips of rows, so memory beyond the result stays a few tens of MB.
    """
    width, height = image.size
    rows = max(1, _STRIP_PIXELS // max(width, 1))
    strips = [(0, top, width, min(top + rows, height)) for top in range(0, height, rows)]

    def strip(box: tuple[int, int, int, int]) -> np.ndarray:
        with np.errstate(invalid="ignore"):  # signalling NaNs (damaged files) flag the cast
            return np.asarray(image.crop(box)).astype(np.float64)

    peak = 0.0
    for box in strips:
        values = strip(box)
        finite = values[np.isfinite(values)]
        peak = max(peak, float(finite.max(initial=0.0)))
    top = 1.0 if unit_range and peak <= 1.0 else max(65535.0, peak)
    result = np.empty((height, width), dtype=np.uint8)
    for box in strips:
        values = np.nan_to_num(strip(box), nan=0.0, posinf=top, neginf=0.0)
        scaled = np.clip(np.round(values * (255.0 / top)), 0, 255)
        result[box[1] : box[3]] = scaled.astype(np.uint8)
    return Image.fromarray(result, "L")


def one_line(error: BaseException, limit: int = 200) -> str:
    """The error's message on one line, at most ``limit`` characters (its type if it has none)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
