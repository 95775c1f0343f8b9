"""Seeded image variants for copy-detection evaluation (``imgvec eval --transforms``).

Each transform is a pure function ``(image, rng) -> image``: it takes an RGB PIL image and a
numpy :class:`~numpy.random.Generator`, never touches global random state, and returns a new RGB
image. Its parameters are stated in its docstring, so a reported score says exactly what was
measured. :func:`make_variant` derives the generator from ``(seed, image index, transform name)``,
so every variant is reproducible on its own, whatever order or subset the caller makes.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from imgvec.errors import ImgvecError

Transform = Callable[[Image.Image, np.random.Generator], Image.Image]

CROP_SIDE = 0.7
ROTATE_DEGREES = (10.0, 20.0)
SCALE = 0.5
ENHANCE_FACTORS = (0.6, 1.4)
BLUR_RADIUS = 2.0
JPEG_QUALITY = 15
SAVE_QUALITY = 95
"""JPEG quality at which variants are written to files for querying (see :func:`file_quality`)."""


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random crop keeping 70% of each side (49% of the area), at a uniform random position."""
    image = _rgb(image)
    width, height = image.size
    new_w, new_h = max(1, round(width * CROP_SIDE)), max(1, round(height * CROP_SIDE))
    left = int(rng.integers(0, width - new_w + 1))
    top = int(rng.integers(0, height - new_h + 1))
    return image.crop((left, top, left + new_w, top + new_h))


def rotate(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Rotation by 10-20 degrees either way (uniform magnitude, random sign), bilinear, same size
    (``expand=False``: the corners are cut off); uncovered corners are filled with the image's
    mean colour so that the fill itself does not look like a black frame to the model."""
    image = _rgb(image)
    angle = float(rng.uniform(*ROTATE_DEGREES)) * (1 if rng.random() < 0.5 else -1)
    mean = np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    fill = tuple(mean.round().astype(int).tolist())
    return image.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False, fillcolor=fill)


def scale(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Downscale to 50% of each side (rounded, at least 1 pixel), Lanczos; ``rng`` is unused."""
    del rng
    image = _rgb(image)
    width, height = image.size
    size = (max(1, round(width * SCALE)), max(1, round(height * SCALE)))
    return image.resize(size, Image.Resampling.LANCZOS)


def brightness_contrast(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Brightness then contrast, each by an independent uniform factor in [0.6, 1.4]
    (PIL ``ImageEnhance``; 1.0 is unchanged)."""
    image = _rgb(image)
    brightness = float(rng.uniform(*ENHANCE_FACTORS))
    contrast = float(rng.uniform(*ENHANCE_FACTORS))
    image = ImageEnhance.Brightness(image).enhance(brightness)
    return ImageEnhance.Contrast(image).enhance(contrast)


def flip(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Horizontal mirror; ``rng`` is unused. Equal to the input only for a symmetric image."""
    del rng
    return ImageOps.mirror(_rgb(image))


def blur(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Gaussian blur of radius 2 pixels (at the image's own resolution); ``rng`` is unused."""
    del rng
    return _rgb(image).filter(ImageFilter.GaussianBlur(BLUR_RADIUS))


def grayscale(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Luminance only (PIL ``L``: ITU-R 601-2), returned as RGB with three equal channels;
    ``rng`` is unused. Equal to the input when the input is already grey."""
    del rng
    return _rgb(image).convert("L").convert("RGB")


def jpeg(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Re-encoded as JPEG at quality 15 (Pillow defaults otherwise: 4:2:0 chroma subsampling)
    and decoded again; ``rng`` is unused."""
    del rng
    buffer = io.BytesIO()
    _rgb(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


TRANSFORMS: dict[str, Transform] = {
    "crop": crop,
    "rotate": rotate,
    "scale": scale,
    "brightness_contrast": brightness_contrast,
    "flip": flip,
    "blur": blur,
    "grayscale": grayscale,
    "jpeg": jpeg,
}
"""Every transform by name, in the order reports list them."""

FILE_QUALITY: dict[str, int] = {"jpeg": JPEG_QUALITY}
"""Transforms that are themselves a JPEG encoding: their variant file is the source image encoded
at this quality (whose decoded pixels are exactly the transform's output), not a second,
quality-95 encoding of it."""


def check_names(names: list[str] | None) -> list[str]:
    """The transform names to run (all when ``names`` is None); unknown names are an error."""
    if names is None:
        return list(TRANSFORMS)
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        raise ImgvecError(
            f"unknown transform {', '.join(unknown)}; choose from {', '.join(TRANSFORMS)}"
        )
    return list(dict.fromkeys(names))


def generator(name: str, seed: int, index: int) -> np.random.Generator:
    """The generator for one (transform, image) pair: independent of every other pair."""
    return np.random.default_rng([seed, index, zlib.crc32(name.encode())])


def make_variant(image: Image.Image, name: str, seed: int, index: int) -> Image.Image:
    """The ``name`` variant of ``image``, the ``index``-th image of a run seeded with ``seed``."""
    check_names([name])
    return TRANSFORMS[name](image, generator(name, seed, index))


def file_quality(name: str) -> int:
    """The JPEG quality a variant file of this transform is written at."""
    return FILE_QUALITY.get(name, SAVE_QUALITY)
