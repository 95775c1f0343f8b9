"""A picture as a model's input with Pillow and NumPy alone: no torch, so that a query can run a
model without importing torch (issue 15), and the torch path uses the same code, so the two agree
to the bit.

The recipe is torchvision's, reproduced exactly (``tests/test_images.py`` holds it to
torchvision's own functions): the shorter side resized to ``prep.resize`` pixels (Pillow's
bilinear or bicubic resize, which torchvision calls for PIL images; the long side
``int(resize * long / short)``), or in ``squash`` mode the whole picture to ``prep.crop``
square; the centred ``prep.crop`` square cut out (``round((size - crop) / 2)``, zero-padded
where the picture is smaller: torchvision's ``center_crop``), scaled to 0..1 by multiplying by
``float32(1 / 255)`` (``to_dtype(..., scale=True)``) and normalised as ``(x - mean) / std`` in
float32.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from imgvec.decode.images import Picture, decode, one_line
from imgvec.embed.spec import Preprocess
from imgvec.errors import ImageError

WHOLE_RESIZE_ASPECT = 16
"""Pictures up to this aspect ratio (long side / short side: every photo and panorama) are
resized whole; longer ones only where the centre crop needs them (:func:`model_input`)."""
_TO_UNIT = np.float32(1 / 255)
_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
"""Pillow's filter for each :attr:`Preprocess.interpolation` (torchvision calls the same for
PIL images)."""


def prepare(data: bytes, prep: Preprocess) -> tuple[Picture, np.ndarray]:
    """Image bytes -> the decoded picture and the model's input (float32, shape
    ``(3, prep.crop, prep.crop)``, see :func:`model_input`).

    JPEGs are decoded at a reduced size that still covers the resize (``draft``), so a
    12-megapixel photo costs a fraction of a full decode; very large images of other formats are
    box-reduced likewise (:func:`imgvec.decode.images.decode`).

    Raises :class:`ImageError` with a one-line reason for anything wrong with this one file,
    ``MemoryError`` included; only ``KeyboardInterrupt`` and ``SystemExit`` pass through.
    """
    picture = decode(data, min_side=prep.resize)
    try:
        return picture, model_input(picture.image, prep)
    except MemoryError as error:
        raise ImageError(
            f"not enough memory to prepare this {picture.width}x{picture.height} image"
        ) from error
    except Exception as error:
        raise ImageError(f"cannot prepare the image for the model: {one_line(error)}") from error


def model_input(image: Image.Image, prep: Preprocess) -> np.ndarray:
    """RGB picture -> normalised CHW float32 array of shape ``(3, prep.crop, prep.crop)``.

    Pictures longer than :data:`WHOLE_RESIZE_ASPECT` to one have only the part the crop keeps
    resampled (:func:`_resize_cropped_part`), so memory stays about
    ``WHOLE_RESIZE_ASPECT * prep.resize**2`` pixels beyond the picture itself, whatever its
    shape: resizing the whole of a 1x60000 line to a short side of 256 would take 12 GB.
    """
    width, height = image.size
    if prep.resize_mode == "squash":
        if (width, height) != (prep.crop, prep.crop):
            image = image.resize((prep.crop, prep.crop), _FILTERS[prep.interpolation])
    elif max(width, height) <= WHOLE_RESIZE_ASPECT * min(width, height):
        size = _resized_size(width, height, prep.resize)
        if size != (width, height):
            image = image.resize(size, _FILTERS[prep.interpolation])
    else:
        image = _resize_cropped_part(image, prep)
    pixels = _center_crop(np.asarray(image, dtype=np.uint8), prep.crop)
    unit = pixels.transpose(2, 0, 1).astype(np.float32) * _TO_UNIT
    mean = np.asarray(prep.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(prep.std, dtype=np.float32)[:, None, None]
    return np.ascontiguousarray((unit - mean) / std)


def _resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the shorter side ``short_side`` (torchvision's arithmetic)."""
    short, long = min(width, height), max(width, height)
    new_long = int(short_side * long / short)
    return (short_side, new_long) if width <= height else (new_long, short_side)


def _center_crop(pixels: np.ndarray, crop: int) -> np.ndarray:
    """The centred ``crop`` x ``crop`` square of an HWC array, zero-padded where smaller."""
    height, width = pixels.shape[:2]
    if crop > width or crop > height:
        pad_w, pad_h = max(crop - width, 0), max(crop - height, 0)
        pads = ((pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2), (0, 0))
        pixels = np.pad(pixels, pads)
        height, width = pixels.shape[:2]
    top, left = round((height - crop) / 2.0), round((width - crop) / 2.0)
    return pixels[top : top + crop, left : left + crop]


def _resize_cropped_part(image: Image.Image, prep: Preprocess) -> Image.Image:
    """The pixels of the centre crop of the whole resize, without resizing the whole picture:
    Pillow's ``resize`` with a source ``box`` samples the same positions with the same kernels.
    Its two passes (across, then down, or the other way) may run in another order than for the
    whole picture, so a pixel may round to a level or two (of 255) apart. At most ``prep.crop``
    pixels each way; a side shorter than that (a crop larger than the resize) is left to the
    crop to pad."""
    width, height = image.size
    resized_w, resized_h = _resized_size(width, height, prep.resize)
    kept_w, left, right = _crop_span(width, resized_w, prep.crop)
    kept_h, top, bottom = _crop_span(height, resized_h, prep.crop)
    box = (left, top, right, bottom)
    return image.resize((kept_w, kept_h), _FILTERS[prep.interpolation], box=box)


def _crop_span(length: int, resized: int, crop: int) -> tuple[int, float, float]:
    """Along one axis of ``length`` pixels resized to ``resized``: how many resized pixels the
    centre crop keeps, and the source span (start, end, in source pixels) they are taken from."""
    kept = min(crop, resized)
    offset = round((resized - kept) / 2.0)  # torchvision's centre-crop anchor
    scale = length / resized
    return kept, offset * scale, (offset + kept) * scale
