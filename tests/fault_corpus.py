"""A seeded generator of broken and odd image files: every format Pillow writes here, valid and
damaged (truncated, bit-flipped, zero-filled tail), plus hand-made special cases (an empty file,
extreme aspect ratios, a damaged AVIF, a decompression-bomb header, misleading extensions and odd
file names).

``build_fault_corpus(folder, seed)`` writes the same bytes under the same names for the same seed
and the same Pillow (its encoders make the valid files): 400 files, about 3 MB, in about 1 s.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (40, 30)
"""Width and height of the valid images."""
MODES = ("RGB", "L", "RGBA", "P", "I;16", "1")
"""Modes tried for every format; each format keeps those it can write and read back."""
DAMAGED_MODES = 2
"""How many of a format's modes get damaged copies (the first ones it supports)."""
TRUNCATIONS = 2
BIT_FLIP_COPIES = 3
SKIPPED_FORMATS = frozenset(["PDF", "EPS"])
"""Documents, not images: Pillow writes them but cannot open them without Ghostscript."""
_SIGNALLING_NAN = 0x7FA00000
"""A float32 NaN whose every conversion raises numpy's "invalid value" flag."""
_PREFERRED_EXTENSION = {
    "JPEG": ".jpg",
    "JPEG2000": ".jp2",
    "PNG": ".png",
    "PPM": ".ppm",
    "SGI": ".sgi",
    "TGA": ".tga",
    "TIFF": ".tif",
}


def sample_image(mode: str, size: tuple[int, int] = SIZE) -> Image.Image:
    """A deterministic picture in ``mode``: diagonal colour gradients with a dark square."""
    width, height = size
    x = np.linspace(0.0, 1.0, width)[None, :]
    y = np.linspace(0.0, 1.0, height)[:, None]
    rgb = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=-1)
    rgb[height // 4 : height // 2, width // 4 : width // 2] = 0.1
    image = Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB")
    if mode == "I;16":
        return Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
    if mode == "RGBA":
        image = image.convert("RGBA")
        image.putalpha(Image.fromarray((x * 255 + 0 * y).astype(np.uint8), "L"))
        return image
    return image.convert(mode)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes | None:
    """``image`` written as ``fmt``, or None when Pillow cannot write it or read it back."""
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():  # single-threaded test helper: global state is fine
            warnings.simplefilter("ignore")
            image.save(buffer, format=fmt, **params)
            data = buffer.getvalue()
            with Image.open(io.BytesIO(data)) as reopened:
                reopened.load()
    except Exception:
        return None
    return data


def extension(fmt: str) -> str:
    """The file extension Pillow registers for ``fmt`` (a made-up one where it has none)."""
    if fmt in _PREFERRED_EXTENSION:
        return _PREFERRED_EXTENSION[fmt]
    known = sorted(ext for ext, name in Image.registered_extensions().items() if name == fmt)
    return known[0] if known else "." + fmt.lower()


def writable_formats() -> list[str]:
    """Every format Pillow can write here, in a fixed order."""
    Image.init()
    return sorted(name for name in Image.SAVE if name not in SKIPPED_FORMATS)


def truncated(data: bytes, rng: np.random.Generator, count: int = TRUNCATIONS) -> list[bytes]:
    """Copies cut short at seeded positions (never empty, never whole)."""
    if len(data) < 2:
        return []
    cuts = rng.integers(1, len(data), size=count)
    return [data[: int(cut)] for cut in cuts]


def bit_flipped(data: bytes, rng: np.random.Generator, flips: int = 3) -> bytes:
    """A copy with ``flips`` bytes XORed with seeded non-zero masks; the first 8 bytes (the
    signature, mostly) are spared where the file is long enough, so the decoder gets a go."""
    damaged = bytearray(data)
    start = 8 if len(data) > 16 else 0
    for position in rng.integers(start, len(data), size=flips):
        damaged[int(position)] ^= int(rng.integers(1, 256))
    return bytes(damaged)


def zero_tail(data: bytes, rng: np.random.Generator) -> bytes:
    """A copy whose last 10-50% is zeros, as a file cut short by a crash often is."""
    keep = int(len(data) * rng.uniform(0.5, 0.9))
    return data[:keep] + bytes(len(data) - keep)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + payload))
    return struct.pack(">I", len(payload)) + kind + payload + crc


def png_with_header(width: int, height: int, rows: bytes) -> bytes:
    """A 1-bit greyscale PNG declaring ``width`` x ``height`` whatever ``rows`` holds."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows, 9))
        + png_chunk(b"IEND", b"")
    )


def iso_boxes(
    data: bytes, start: int = 0, end: int | None = None
) -> Iterator[tuple[bytes, int, int]]:
    """(type, start, end) of the ISO-BMFF boxes (AVIF, HEIF) between ``start`` and ``end``."""
    end = len(data) if end is None else end
    position = start
    while position + 8 <= end:
        size, kind = struct.unpack(">I4s", data[position : position + 8])
        if size == 1 and position + 16 <= end:
            size = struct.unpack(">Q", data[position + 8 : position + 16])[0]
        elif size == 0:
            size = end - position
        if size < 8 or position + size > end:
            return
        yield kind, position, position + size
        position += size


def damaged_avifs(valid: bytes) -> dict[str, bytes]:
    """Variants of a valid AVIF whose image item is missing or broken: the ``iloc``, ``iinf``,
    ``pitm`` or ``iprp`` box (inside ``meta``) zeroed or removed, ``mdat`` removed or zeroed."""
    variants: dict[str, bytes] = {}
    top = {kind: (start, end) for kind, start, end in iso_boxes(valid)}
    if b"meta" in top:
        meta_start, meta_end = top[b"meta"]
        for kind, start, end in iso_boxes(valid, meta_start + 12, meta_end):  # full box: +4
            if kind in (b"iloc", b"iinf", b"pitm", b"iprp"):
                name = kind.decode()
                body = bytearray(valid)
                body[start + 8 : end] = bytes(end - start - 8)
                variants[f"{name}_zeroed"] = bytes(body)
                removed = valid[:start] + valid[end:]
                meta_size = meta_end - meta_start - (end - start)
                removed = (
                    removed[:meta_start] + struct.pack(">I", meta_size) + removed[meta_start + 4 :]
                )
                variants[f"{name}_removed"] = removed
    if b"mdat" in top:
        start, end = top[b"mdat"]
        variants["mdat_removed"] = valid[:start] + valid[end:]
        variants["mdat_zeroed"] = valid[: start + 8] + bytes(end - start - 8) + valid[end:]
    return variants


def handmade_avif() -> bytes:
    """An ``ftyp avif`` box followed by junk: what is left where Pillow cannot write AVIF."""
    ftyp = struct.pack(">I4s4sI", 24, b"ftyp", b"avif", 0) + b"avifmif1"
    return ftyp + b"\x00\x00\x00\x10meta" + bytes(range(200))


def _valid_and_damaged(rng: np.random.Generator) -> Iterator[tuple[str, bytes]]:
    for fmt in writable_formats():
        ext = extension(fmt)
        damaged = 0
        for mode in MODES:
            data = encode(sample_image(mode), fmt)
            if data is None:
                continue
            stem = f"{fmt.lower()}_{mode.replace(';', '')}"
            yield f"{stem}{ext}", data
            if damaged >= DAMAGED_MODES:
                continue
            damaged += 1
            for number, cut in enumerate(truncated(data, rng)):
                yield f"{stem}_truncated{number}{ext}", cut
            for number in range(BIT_FLIP_COPIES):
                flips = int(rng.integers(1, 5))
                yield f"{stem}_flipped{number}{ext}", bit_flipped(data, rng, flips)
            yield f"{stem}_zero_tail{ext}", zero_tail(data, rng)


def _special_cases(rng: np.random.Generator) -> Iterator[tuple[str, bytes]]:
    png = encode(sample_image("RGB"), "PNG")
    assert png is not None
    yield "empty.jpg", b""
    yield "empty.png", b""
    for width, height in ((1, 60000), (60000, 1), (10000, 1), (1, 1)):
        data = encode(Image.new("L", (width, height), 128), "PNG")
        assert data is not None
        yield f"line_{width}x{height}.png", data
    avif = encode(sample_image("RGB"), "AVIF")
    if avif is None:
        yield "damaged_handmade.avif", handmade_avif()
    else:
        for name, data in damaged_avifs(avif).items():
            yield f"damaged_{name}.avif", data
    yield "ftyp_only.avif", handmade_avif()
    yield "bomb_100000x100000.png", png_with_header(100_000, 100_000, b"\x00" * 100)
    yield "zero_width.png", png_with_header(0, 10, b"\x00" * 10)
    yield "text.jpg", b"not really a jpeg, just some words\n" * 4
    yield "png_named.txt", png
    yield "[old].png", png
    yield "[x]y.png", png
    yield "with space (1).png", png
    yield "unicode \u00e9t\u00e9 \u65e5\u672c.png", png
    yield "emoji \U0001f4f7.png", png
    # Pixel values and metadata that need care: palette transparency given as bytes, NaNs (a
    # signalling one too) and infinities in a float TIFF, negative 32-bit values, junk EXIF,
    # impossible orientations.
    palette = sample_image("P")
    data = encode(palette, "PNG", transparency=bytes(range(0, 256, 16)) * 16)
    if data is not None:
        yield "palette_transparency_bytes.png", data
    floats = np.asarray(sample_image("L"), dtype=np.float32) / 255
    floats[0, :5] = [np.nan, np.inf, -np.inf, -1.0, 1e30]
    floats.view(np.uint32)[0, 5] = _SIGNALLING_NAN
    data = encode(Image.fromarray(floats, "F"), "TIFF")
    if data is not None:
        yield "float_nan_inf.tif", data
    ints = (np.asarray(sample_image("L"), dtype=np.int32) - 128) * 100_000
    data = encode(Image.fromarray(ints, "I"), "TIFF")
    if data is not None:
        yield "int32_negative.tif", data
    junk_exif = b"Exif\x00\x00" + rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
    data = encode(sample_image("RGB"), "JPEG", exif=junk_exif)
    if data is not None:
        yield "junk_exif.jpg", data
    for orientation in (0, 6, 9, 65535):
        exif = Image.Exif()
        exif[0x0112] = orientation
        data = encode(sample_image("RGB"), "JPEG", exif=exif.tobytes())
        if data is not None:
            yield f"orientation_{orientation}.jpg", data
    frames = [sample_image("RGB"), sample_image("L").convert("RGB")]
    for fmt in ("GIF", "PNG", "WEBP"):
        data = encode(frames[0], fmt, save_all=True, append_images=frames[1:])
        if data is not None:
            yield f"animated{extension(fmt)}", data
            for number, cut in enumerate(truncated(data, rng)):
                yield f"animated_truncated{number}{extension(fmt)}", cut


LIBTIFF_COMPRESSIONS = ("tiff_lzw", "tiff_adobe_deflate", "jpeg", "packbits")
"""Compressed TIFFs are decoded by libtiff, which prints its complaints about damaged strips on
file descriptor 2 ("Using code not yet in table", "ZIPDecode: Decoding error ...")."""


def _libtiff_cases(rng: np.random.Generator) -> list[tuple[str, bytes]]:
    """Each compressed TIFF valid, and with bytes flipped in its pixel data (after the header)."""
    cases: list[tuple[str, bytes]] = []
    for compression in LIBTIFF_COMPRESSIONS:
        data = encode(sample_image("RGB"), "TIFF", compression=compression)
        if data is None:
            continue
        cases.append((f"libtiff_{compression}.tif", data))
        for number in range(3):
            cases.append((f"libtiff_{compression}_flipped{number}.tif", bit_flipped(data, rng)))
    return cases


def build_fault_corpus(folder: Path, seed: int = 0) -> list[Path]:
    """Write the corpus into ``folder`` (created if needed) and return the written paths, in a
    fixed order. Names the file system refuses (unicode on some systems) are left out."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written: list[Path] = []
    for name, data in (*_valid_and_damaged(rng), *_special_cases(rng), *_libtiff_cases(rng)):
        path = folder / name
        try:
            path.write_bytes(data)
        except (OSError, UnicodeEncodeError):
            continue
        written.append(path)
    return written
