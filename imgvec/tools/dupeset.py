"""A seeded near-duplicate evaluation set built from labelled photos (``imgvec eval --dupes``).

For every source photo, :data:`VARIANTS` writes one file each: the same picture as a user's
library holds it twice (a byte copy, a low-quality re-encode, a half-size copy, a 90% crop, a copy
turned by its EXIF orientation tag, a copy with its metadata stripped, a PNG export). A photo and
its variants are **duplicates** of each other; two different photos are not, and photos of the
same object from another viewpoint (UKBench's groups of four) are the **hard negatives** that a
duplicate finder must keep apart.

Each variant's randomness comes from ``(seed, photo index, variant name)`` alone, so a set is
reproducible whole or in part.
"""

from __future__ import annotations

import io
import shutil
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from imgvec.decode.images import to_rgb

JPEG_LOW_QUALITY = 30
"""The re-encode's JPEG quality: what a messaging app or an "optimiser" leaves."""
RESIZE = 0.5
CROP_SIDE = 0.9
WRITE_QUALITY = 92
"""JPEG quality of variants whose pixels changed (resize, crop, EXIF rotation)."""

Variant = Callable[[bytes, np.random.Generator], tuple[bytes, str]]
"""Source file bytes, generator -> (variant file bytes, file suffix)."""


def _picture(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return to_rgb(image)


def _jpeg(image: Image.Image, quality: int, exif: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, **({"exif": exif} if exif else {}))
    return buffer.getvalue()


def exact(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """A byte-for-byte copy (an exact duplicate: same content hash)."""
    del rng
    return data, ".jpg"


def jpeg_low(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """Decoded and re-encoded as JPEG at quality 30 (Pillow's 4:2:0 subsampling)."""
    del rng
    return _jpeg(_picture(data), JPEG_LOW_QUALITY), ".jpg"


def resize(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """Half of each side (Lanczos), JPEG quality 92."""
    del rng
    image = _picture(data)
    size = (max(1, round(image.width * RESIZE)), max(1, round(image.height * RESIZE)))
    return _jpeg(image.resize(size, Image.Resampling.LANCZOS), WRITE_QUALITY), ".jpg"


def crop(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """90% of each side (81% of the area) at a uniform random position, JPEG quality 92."""
    image = _picture(data)
    width, height = round(image.width * CROP_SIDE), round(image.height * CROP_SIDE)
    left = int(rng.integers(0, image.width - width + 1))
    top = int(rng.integers(0, image.height - height + 1))
    return _jpeg(image.crop((left, top, left + width, top + height)), WRITE_QUALITY), ".jpg"


def exif_rotate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """The pixels stored turned a quarter (either way, at random) with the EXIF orientation tag
    (6 or 8) that turns them back: the same photo on screen, different pixels in the file."""
    image = _picture(data)
    clockwise = bool(rng.random() < 0.5)
    # Orientation 6: rotate 90 degrees clockwise to display, so the file holds it turned back.
    stored = image.transpose(Image.Transpose.ROTATE_90 if clockwise else Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = 6 if clockwise else 8
    return _jpeg(stored, WRITE_QUALITY, exif.tobytes()), ".jpg"


def strip_metadata(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """The same JPEG with every APPn segment but JFIF (EXIF, XMP, ICC, maker notes) and every
    comment removed: identical pixels, different bytes. Other formats are returned as they are."""
    del rng
    return _without_metadata(data), ".jpg"


def png(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """The decoded pixels as a PNG (lossless; no metadata)."""
    del rng
    buffer = io.BytesIO()
    _picture(data).save(buffer, format="PNG")
    return buffer.getvalue(), ".png"


VARIANTS: dict[str, Variant] = {
    "exact": exact,
    "jpeg_q30": jpeg_low,
    "resize_50": resize,
    "crop_90": crop,
    "exif_rotate": exif_rotate,
    "strip_metadata": strip_metadata,
    "png": png,
}
"""Every variant by name, in the order reports list them."""


def _without_metadata(data: bytes) -> bytes:
    """A JPEG's bytes without APP1-APP15 and COM segments (APP0, JFIF, stays)."""
    if data[:2] != b"\xff\xd8":
        return data
    out, position = bytearray(data[:2]), 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xDA:  # start of scan: the rest is entropy-coded data
            break
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        end = position + 2 + length
        if not (0xE1 <= marker <= 0xEF or marker == 0xFE):
            out += data[position:end]
        position = end
    return bytes(out + data[position:])


@dataclass(frozen=True)
class DupeFile:
    """One file of the set: the photo it shows (``source``) and how it was made (``variant``:
    ``original`` or a name of :data:`VARIANTS`)."""

    path: Path
    source: str
    variant: str
    group: str
    """The photo's ground-truth group (UKBench: the object); same group, other source: a hard
    negative."""


def generator(seed: int, index: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, index, zlib.crc32(name.encode())])


def build(
    sources: Sequence[tuple[Path, str]], out: Path, seed: int = 0, variants: Sequence[str] = ()
) -> list[DupeFile]:
    """Write ``out/original/NAME`` and ``out/VARIANT/NAME`` for every ``(photo, group)`` in
    ``sources`` and every variant (all of :data:`VARIANTS` by default); returns the files."""
    names = list(variants) or list(VARIANTS)
    files: list[DupeFile] = []
    for index, (source, group) in enumerate(sources):
        data = source.read_bytes()
        target = out / "original" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        files.append(DupeFile(target, source.name, "original", group))
        for name in names:
            variant, suffix = VARIANTS[name](data, generator(seed, index, name))
            target = (out / name / source.name).with_suffix(suffix)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(variant)
            files.append(DupeFile(target, source.name, name, group))
    return files
