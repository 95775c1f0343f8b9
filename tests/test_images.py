"""Unit tests of imgvec.images (decoding to upright 8-bit RGB, refusing bad input) and of the
content sniffing in imgvec.files that decides which files are tried at all."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from imgvec import files
from imgvec.errors import ImageError
from imgvec.images import MAX_PIXELS, Picture, decode, read_file, to_rgb

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)

# --- helpers ---------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def noise_jpeg(size: tuple[int, int] = (200, 200), seed: int = 0) -> bytes:
    """A JPEG full of noise, so that its scan data is most of the file."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels, "RGB"), "JPEG", quality=90)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bilevel_png(width: int, height: int) -> bytes:
    """A valid, all-black 1-bit PNG of any size, built without allocating the pixels in Pillow.

    14000x13000 compresses to ~22 kB: a decompression bomb.
    """
    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter type 0, then the packed bits
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(row * height, 9))
        + _png_chunk(b"IEND", b"")
    )


BOMB_SIZE = (14000, 13000)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return bilevel_png(*BOMB_SIZE)


def assert_rgb(picture: Picture) -> None:
    assert picture.image.mode == "RGB"
    assert (picture.width, picture.height) == picture.image.size


def pixel(picture: Picture, xy: tuple[int, int]) -> tuple[int, int, int]:
    value = picture.image.getpixel(xy)
    assert isinstance(value, tuple)
    return value  # type: ignore[return-value]


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


# --- EXIF orientation ------------------------------------------------------------------------


def _left_red_right_blue() -> Image.Image:
    image = Image.new("RGB", (60, 40), BLUE)
    image.paste(RED, (0, 0, 30, 40))
    return image


@pytest.mark.parametrize(
    ("orientation", "top", "bottom"),
    [
        (6, RED, BLUE),  # rotate 90 degrees clockwise: the left edge becomes the top
        (8, BLUE, RED),  # rotate 90 degrees counter-clockwise: the left edge becomes the bottom
    ],
)
def test_exif_orientation_is_applied(
    orientation: int, top: tuple[int, int, int], bottom: tuple[int, int, int]
) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(_left_red_right_blue(), "JPEG", exif=exif.tobytes(), quality=95)
    assert Image.open(io.BytesIO(data)).size == (60, 40)  # stored sideways

    picture = decode(data)

    assert_rgb(picture)
    assert (picture.width, picture.height) == (40, 60)
    assert close_to(pixel(picture, (20, 10)), top, 10)
    assert close_to(pixel(picture, (20, 50)), bottom, 10)
    assert picture.format == "JPEG"


def test_image_without_orientation_is_left_as_stored() -> None:
    picture = decode(encode(_left_red_right_blue(), "PNG"))
    assert (picture.width, picture.height) == (60, 40)
    assert pixel(picture, (5, 20)) == RED
    assert pixel(picture, (55, 20)) == BLUE


# --- mode conversions ------------------------------------------------------------------------


def test_palette_image() -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 10, 20, 30, 200, 100, 50] + [0] * (3 * 253))
    image.putpixel((1, 1), 1)
    image.putpixel((2, 2), 2)
    picture = decode(encode(image, "PNG"))
    assert_rgb(picture)
    assert pixel(picture, (0, 0)) == (0, 0, 0)
    assert pixel(picture, (1, 1)) == (10, 20, 30)
    assert pixel(picture, (2, 2)) == (200, 100, 50)


def test_palette_transparency_is_composited_on_white() -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 10, 20, 30] + [0] * (3 * 254))
    image.putpixel((1, 1), 1)
    data = encode(image, "PNG", transparency=0)  # palette entry 0 (black) is transparent
    assert Image.open(io.BytesIO(data)).mode == "P"
    picture = decode(data)
    assert_rgb(picture)
    assert pixel(picture, (0, 0)) == WHITE
    assert pixel(picture, (1, 1)) == (10, 20, 30)


def test_rgba_transparency_is_composited_on_white() -> None:
    image = Image.new("RGBA", (3, 1))
    image.putpixel((0, 0), (200, 0, 0, 0))  # fully transparent: its colour must not show
    image.putpixel((1, 0), (200, 0, 0, 255))
    image.putpixel((2, 0), (0, 0, 0, 128))  # half transparent black: mid grey
    picture = decode(encode(image, "PNG"))
    assert_rgb(picture)
    assert pixel(picture, (0, 0)) == WHITE
    assert pixel(picture, (1, 0)) == (200, 0, 0)
    assert close_to(pixel(picture, (2, 0)), (127, 127, 127), 1)


def test_greyscale_with_alpha() -> None:
    image = Image.new("LA", (2, 1))
    image.putpixel((0, 0), (50, 0))
    image.putpixel((1, 0), (50, 255))
    picture = decode(encode(image, "PNG"))
    assert_rgb(picture)
    assert pixel(picture, (0, 0)) == WHITE
    assert pixel(picture, (1, 0)) == (50, 50, 50)


def test_cmyk_jpeg() -> None:
    data = encode(Image.new("CMYK", (8, 8), (255, 0, 0, 0)), "JPEG", quality=95)  # pure cyan
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    picture = decode(data)
    assert_rgb(picture)
    assert close_to(pixel(picture, (4, 4)), (0, 255, 255), 3)


def test_greyscale() -> None:
    image = Image.new("L", (2, 1), 77)
    image.putpixel((1, 0), 255)
    picture = decode(encode(image, "PNG"))
    assert_rgb(picture)
    assert pixel(picture, (0, 0)) == (77, 77, 77)
    assert pixel(picture, (1, 0)) == WHITE


def test_16_bit_greyscale_is_scaled_not_clipped() -> None:
    values = np.array([[0, 40000, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    picture = decode(data)
    assert_rgb(picture)
    expected = round(40000 * 255 / 65535)
    assert expected == 156
    assert pixel(picture, (0, 0)) == (0, 0, 0)
    assert pixel(picture, (1, 0)) == (expected,) * 3
    assert pixel(picture, (2, 0)) == WHITE


def test_dark_16_bit_image_is_not_stretched() -> None:
    """Scaling is by the nominal 16-bit range, not by the image's own maximum."""
    image = Image.fromarray(np.full((2, 2), 1000, dtype=np.uint16))
    picture = Picture(to_rgb(image), 2, 2, "test")
    assert pixel(picture, (0, 0)) == (round(1000 * 255 / 65535),) * 3


def test_bilevel() -> None:
    image = Image.new("1", (2, 1), 0)
    image.putpixel((1, 0), 1)
    picture = decode(encode(image, "PNG"))
    assert_rgb(picture)
    assert pixel(picture, (0, 0)) == (0, 0, 0)
    assert pixel(picture, (1, 0)) == WHITE


def test_float_tiff() -> None:
    values = np.array([[0.0, 0.25, 1.0]], dtype=np.float32)
    data = encode(Image.fromarray(values), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    picture = decode(data)
    assert_rgb(picture)
    assert [pixel(picture, (x, 0)) for x in range(3)] == [(0, 0, 0), (64, 64, 64), WHITE]


def _mode_images() -> dict[str, Callable[[], bytes]]:
    def make(mode: str, fmt: str = "PNG", size: tuple[int, int] = (7, 5)) -> Callable[[], bytes]:
        return lambda: encode(Image.new("RGB", size, (90, 140, 30)).convert(mode), fmt)

    return {
        "RGB jpeg": make("RGB", "JPEG"),
        "RGB png": make("RGB"),
        "RGBA": make("RGBA"),
        "P": make("P"),
        "L": make("L"),
        "LA": make("LA"),
        "1": make("1"),
        "CMYK jpeg": make("CMYK", "JPEG"),
        "I;16": lambda: encode(Image.fromarray(np.full((5, 7), 30000, np.uint16)), "PNG"),
        "F tiff": lambda: encode(Image.fromarray(np.full((5, 7), 0.5, np.float32)), "TIFF"),
        "RGB gif": make("RGB", "GIF"),
        "RGB bmp": make("RGB", "BMP"),
        "RGB webp": make("RGB", "WEBP"),
        "RGBA tiff": make("RGBA", "TIFF"),
    }


@pytest.mark.parametrize("name", list(_mode_images()))
def test_every_picture_is_8_bit_rgb_with_its_size(name: str) -> None:
    picture = decode(_mode_images()[name]())
    assert_rgb(picture)
    assert (picture.width, picture.height) == (7, 5)
    assert np.asarray(picture.image).dtype == np.uint8
    assert np.asarray(picture.image).shape == (5, 7, 3)


# --- unreadable input ------------------------------------------------------------------------


def test_read_file_refuses_an_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        read_file(str(empty))


def test_read_file_of_a_missing_file_names_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="cannot read file: No such file"):
        read_file(str(tmp_path / "missing.jpg"))


def test_read_file_returns_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"\x01\x02\x03")
    assert read_file(str(path)) == b"\x01\x02\x03"


def test_garbage_bytes_are_not_an_image() -> None:
    with pytest.raises(ImageError, match="not an image"):
        decode(b"this is plain text, not a picture\n" * 20)


def test_truncated_jpeg() -> None:
    data = noise_jpeg()
    decode(data)  # the whole file is fine
    with pytest.raises(ImageError, match="truncated"):
        decode(data[: int(len(data) * 0.6)])


def test_corrupt_jpeg_body() -> None:
    junk = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    with pytest.raises(ImageError, match="corrupt"):
        decode(b"\xff\xd8\xff\xe0" + junk)


def test_bomb_is_a_real_png_over_the_limit(bomb: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(bomb) < 100_000
    assert BOMB_SIZE[0] * BOMB_SIZE[1] > MAX_PIXELS
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    header = Image.open(io.BytesIO(bomb))
    assert (header.format, header.mode, header.size) == ("PNG", "1", BOMB_SIZE)


def _forbid_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("decode() decompressed an image it should have refused")

    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)
    monkeypatch.setattr(Image.Image, "load", forbidden)


def test_decompression_bomb_is_refused_before_decoding(
    bomb: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid_loading(monkeypatch)
    with pytest.raises(ImageError, match="too large"):
        decode(bomb)


def test_bomb_limit_does_not_depend_on_pillows_global_setting(
    bomb: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MAX_PIXELS is checked on the header size even where Pillow's own check is switched off."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    _forbid_loading(monkeypatch)
    with pytest.raises(ImageError, match="too large") as raised:
        decode(bomb)
    assert "14000x13000" in str(raised.value)


# --- which files are tried -------------------------------------------------------------------


def test_png_without_extension_is_recognised_by_content(tmp_path: Path) -> None:
    path = tmp_path / "scan"
    path.write_bytes(encode(Image.new("RGB", (4, 4)), "PNG"))
    assert files.has_image_signature(path.read_bytes()[:16])
    assert files.looks_like_image(str(path))


def test_text_file_without_image_extension_is_not_a_candidate(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("shopping list: eggs, milk\n")
    assert not files.has_image_signature(path.read_bytes()[:16])
    assert not files.looks_like_image(str(path))


def test_text_file_with_image_extension_is_a_candidate_that_decode_rejects(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fake.jpg"
    path.write_text("not really a jpeg\n")
    assert not files.has_image_signature(path.read_bytes()[:16])
    assert files.looks_like_image(str(path))  # by its extension
    with pytest.raises(ImageError, match="not an image"):
        decode(read_file(str(path)))


def test_extension_match_ignores_case(tmp_path: Path) -> None:
    path = tmp_path / "IMG_0001.JPEG"
    path.write_text("x")
    assert files.looks_like_image(str(path))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"])
def test_signatures_of_common_formats(fmt: str) -> None:
    assert files.has_image_signature(encode(Image.new("RGB", (4, 4)), fmt)[:16])


def test_walk_finds_images_by_content_and_skips_other_files(tmp_path: Path) -> None:
    (tmp_path / "scan").write_bytes(encode(Image.new("RGB", (4, 4)), "PNG"))
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "fake.jpg").write_text("not a jpeg\n")
    walked = list(files.walk([str(tmp_path)]))
    found = [item for item in walked if isinstance(item, files.FoundFile)]
    assert sorted(Path(item.path).name for item in found) == ["fake.jpg", "scan"]
    assert [(Path(i.path).name, i.reason) for i in walked if isinstance(i, files.Ignored)] == [
        ("notes.txt", "not an image")
    ]


# --- reduced-size JPEG decoding ----------------------------------------------------------------


def test_large_jpeg_decodes_at_reduced_size_that_still_covers_min_side() -> None:
    data = encode(_left_red_right_blue().resize((2400, 1600)), "JPEG", quality=90)

    picture = decode(data, min_side=256)

    assert picture.image.size == (600, 400)  # 1/8 would go below 256 on the short side: 1/4
    assert (picture.width, picture.height) == (2400, 1600)  # the file's true size is recorded
    assert close_to(pixel(picture, (10, 200)), RED, 10)
    assert close_to(pixel(picture, (590, 200)), BLUE, 10)


def test_reduced_decode_keeps_the_true_size_of_a_rotated_jpeg() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, shown rotated a quarter
    data = encode(_left_red_right_blue().resize((2400, 1600)), "JPEG", exif=exif.tobytes())

    picture = decode(data, min_side=256)

    assert picture.image.size == (400, 600)
    assert (picture.width, picture.height) == (1600, 2400)


def test_min_side_leaves_small_jpegs_and_other_formats_at_full_size() -> None:
    small = decode(encode(_left_red_right_blue().resize((400, 300)), "JPEG"), min_side=256)
    png = decode(encode(_left_red_right_blue().resize((2400, 1600)), "PNG"), min_side=256)

    assert small.image.size == (400, 300)  # half size would be 150 pixels high
    assert png.image.size == (2400, 1600)
