"""Unit tests of imgvec.decode.images (decoding to upright 8-bit RGB, refusing bad input), of the
content sniffing in imgvec.scan that decides which files are tried at all, and of
imgvec.embed.pixels.prepare on a corpus of broken and odd files (tests/fault_corpus.py)."""

from __future__ import annotations

import io
import math
import struct
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from torchvision.transforms.v2 import functional as F

from imgvec import scan
from imgvec.decode import images
from imgvec.decode.images import MAX_PIXELS, Picture, decode, read_file, to_rgb
from imgvec.embed import pixels, runtime
from imgvec.embed.spec import Preprocess
from imgvec.errors import ImageError
from tests import fault_corpus as corpus

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


def bilevel_png(width: int, height: int, exif: bytes = b"") -> bytes:
    """A valid, all-black 1-bit PNG of any size, built without allocating the pixels in Pillow;
    ``exif`` (a TIFF-format block) goes into an eXIf chunk.

    14000x13000 compresses to ~22 kB: a decompression bomb.
    """
    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter type 0, then the packed bits
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + (_png_chunk(b"eXIf", exif) if exif else b"")
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
    assert scan.has_image_signature(path.read_bytes()[:16])
    assert scan.looks_like_image(str(path))


def test_text_file_without_image_extension_is_not_a_candidate(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("shopping list: eggs, milk\n")
    assert not scan.has_image_signature(path.read_bytes()[:16])
    assert not scan.looks_like_image(str(path))


def test_text_file_with_image_extension_is_a_candidate_that_decode_rejects(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fake.jpg"
    path.write_text("not really a jpeg\n")
    assert not scan.has_image_signature(path.read_bytes()[:16])
    assert scan.looks_like_image(str(path))  # by its extension
    with pytest.raises(ImageError, match="not an image"):
        decode(read_file(str(path)))


def test_extension_match_ignores_case(tmp_path: Path) -> None:
    path = tmp_path / "IMG_0001.JPEG"
    path.write_text("x")
    assert scan.looks_like_image(str(path))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"])
def test_signatures_of_common_formats(fmt: str) -> None:
    assert scan.has_image_signature(encode(Image.new("RGB", (4, 4)), fmt)[:16])


def test_walk_finds_images_by_content_and_skips_other_files(tmp_path: Path) -> None:
    (tmp_path / "scan").write_bytes(encode(Image.new("RGB", (4, 4)), "PNG"))
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "fake.jpg").write_text("not a jpeg\n")
    walked = list(scan.walk([str(tmp_path)]))
    found = [item for item in walked if isinstance(item, scan.FoundFile)]
    assert sorted(Path(item.path).name for item in found) == ["fake.jpg", "scan"]
    assert [(Path(i.path).name, i.reason) for i in walked if isinstance(i, scan.Ignored)] == [
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


def test_very_large_non_jpeg_is_reduced_for_the_model_keeping_its_true_size() -> None:
    """Over SHRINK_ABOVE_PIXELS, a PNG is box-reduced by an integer factor that keeps both sides
    at least REDUCING_GAP * min_side; the EXIF orientation still applies to size and pixels."""
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, shown rotated a quarter
    data = bilevel_png(9000, 4000, exif=exif.tobytes()[len(b"Exif\x00\x00") :])
    assert images.SHRINK_ABOVE_PIXELS < 9000 * 4000

    picture = decode(data, min_side=256)

    factor = 4000 // (images.REDUCING_GAP * 256)
    assert factor == 7
    assert picture.image.size == (math.ceil(4000 / factor), math.ceil(9000 / factor))
    assert (picture.width, picture.height) == (4000, 9000)
    assert picture.format == "PNG"


# --- any per-file problem is an ImageError -------------------------------------------------------


def _raise_on_load(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def load(*_args: object, **_kwargs: object) -> None:
        raise error

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (RuntimeError("Failed to decode image:\nMissing item"), "corrupt PNG image: Failed to"),
        (KeyError("tile"), "corrupt PNG image: 'tile'"),
        (ZeroDivisionError(), "corrupt PNG image: ZeroDivisionError"),
        (MemoryError(), "not enough memory to decode this PNG image"),
    ],
)
def test_any_exception_while_decoding_becomes_a_one_line_reason(
    monkeypatch: pytest.MonkeyPatch, error: Exception, reason: str
) -> None:
    data = encode(Image.new("RGB", (4, 4)), "PNG")
    _raise_on_load(monkeypatch, error)
    with pytest.raises(ImageError) as raised:
        decode(data)
    assert str(raised.value).startswith(reason)
    assert "\n" not in str(raised.value)
    assert raised.value.__cause__ is error


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), SystemExit(1)])
def test_interrupts_are_not_turned_into_reasons(
    monkeypatch: pytest.MonkeyPatch, stop: BaseException
) -> None:
    data = encode(Image.new("RGB", (4, 4)), "PNG")
    _raise_on_load(monkeypatch, stop)
    with pytest.raises(type(stop)):
        decode(data)


def test_any_exception_while_preprocessing_becomes_a_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_args: object) -> np.ndarray:
        raise ValueError("bad\nsize")

    monkeypatch.setattr(pixels, "model_input", broken)
    with pytest.raises(ImageError, match=r"^cannot prepare the image for the model: bad size$"):
        pixels.prepare(encode(Image.new("RGB", (4, 4)), "PNG"), Preprocess(32, 32))


def test_avif_without_its_image_item_is_a_corrupt_image() -> None:
    valid = corpus.encode(Image.new("RGB", (40, 30), (90, 140, 30)), "AVIF")
    if valid is None:
        pytest.skip("this Pillow cannot write AVIF")
    assert decode(valid).format == "AVIF"
    damaged = corpus.damaged_avifs(valid)
    assert {"iloc_zeroed", "iinf_removed", "mdat_removed"} <= set(damaged)
    for name, data in damaged.items():
        with pytest.raises(ImageError) as raised:
            decode(data)
        reason = str(raised.value)
        assert reason.startswith(("corrupt", "not an image")), (name, reason)


def test_float_pixels_that_are_not_numbers_are_mapped_without_warnings() -> None:
    values = np.array([[np.nan, np.inf, -np.inf, 0.5, -1.0, 0.0]], dtype=np.float32)
    values.view(np.uint32)[0, 5] = 0x7FA00000  # a signalling NaN: converting it flags "invalid"
    with np.errstate(all="raise"):  # the caller's numpy settings, not a filter in decode
        rgb = to_rgb(Image.fromarray(values, "F"))
    assert [rgb.getpixel((x, 0)) for x in range(6)] == [
        (0, 0, 0),
        WHITE,
        (0, 0, 0),
        (128, 128, 128),
        (0, 0, 0),
        (0, 0, 0),
    ]


# --- the fault corpus ----------------------------------------------------------------------------

CORPUS_PREP = Preprocess(resize=32, crop=32)
_DAMAGED_MARKS = ("_truncated", "_flipped", "_zero_tail", "damaged_", "ftyp_only", "empty.")
_REFUSED = ("bomb_", "zero_width", "text.jpg")


@pytest.fixture(scope="module")
def fault_corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return corpus.build_fault_corpus(tmp_path_factory.mktemp("faults"), seed=0)


def test_fault_corpus_is_deterministic_and_small(fault_corpus: list[Path], tmp_path: Path) -> None:
    again = corpus.build_fault_corpus(tmp_path / "again", seed=0)
    assert [p.name for p in again] == [p.name for p in fault_corpus]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(again, fault_corpus, strict=True))
    assert 300 <= len(fault_corpus) <= 500
    assert sum(p.stat().st_size for p in fault_corpus) < 50 * 2**20


# pytest shows every DeprecationWarning, ahead of imgvec's filter (Pillow deprecates the IM
# format); what reaches a terminal is tested in a fresh interpreter below.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_every_corpus_file_decodes_or_gives_a_reason(fault_corpus: list[Path]) -> None:
    """Each file gives a picture and a finite (3, 32, 32) tensor, or an ImageError whose reason
    is one non-empty line; nothing else. Undamaged files always give the picture."""
    reasons: dict[str, str] = {}
    for path in fault_corpus:
        try:
            picture, inputs = pixels.prepare(read_file(str(path)), CORPUS_PREP)
        except ImageError as error:
            reasons[path.name] = str(error)
            continue
        assert isinstance(picture, Picture), path.name
        assert picture.image.mode == "RGB", path.name
        assert inputs.shape == (3, 32, 32), path.name
        assert inputs.dtype == np.float32, path.name
        assert np.isfinite(inputs).all(), path.name

    assert all(reason.strip() and "\n" not in reason for reason in reasons.values()), reasons
    refused_valid = {
        name: reason
        for name, reason in reasons.items()
        if not any(mark in name for mark in _DAMAGED_MARKS + _REFUSED)
    }
    assert refused_valid == {}
    assert reasons["empty.jpg"].startswith("empty file")
    assert reasons["text.jpg"].startswith("not an image")
    assert reasons["bomb_100000x100000.png"].startswith("image too large")
    assert reasons["damaged_iloc_zeroed.avif"].startswith("corrupt")
    assert 50 < len(reasons) < len(fault_corpus) - 150  # damage is seen, and not everywhere


_DECODE_ALL = """
import os, sys
from pathlib import Path
from imgvec.errors import ImageError
from imgvec.decode.images import decode, read_file
# libtiff prints on file descriptor 2 itself (the command line holds that back, see
# test_faults); sys.stderr, where Python's warnings go, stays the captured pipe.
sys.stderr = os.fdopen(os.dup(2), "w")
os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
for path in sorted(Path(sys.argv[1]).iterdir()):
    try:
        decode(read_file(str(path)), min_side=32)
    except ImageError:
        pass
"""


def test_decoding_the_corpus_prints_no_warnings(fault_corpus: list[Path]) -> None:
    """Pillow's warnings (corrupt EXIF, odd tags, deprecated formats) never reach the terminal,
    even with every warning shown each time (-W always): a fresh interpreter, whose filters are
    only Python's, the command line's and imgvec's own, not pytest's."""
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", _DECODE_ALL, str(fault_corpus[0].parent)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout == ""


# --- preprocessing: unchanged for photos, bounded for extreme shapes -----------------------------

MODEL_PREP = Preprocess(resize=256, crop=224)


def _resize_whole_then_crop(image: Image.Image, prep: Preprocess) -> torch.Tensor:
    """The plain recipe: resize the whole picture, then centre-crop."""
    image = F.resize(image, [prep.resize], interpolation=F.InterpolationMode.BILINEAR)
    image = F.center_crop(image, [prep.crop, prep.crop])
    tensor = F.to_dtype(F.pil_to_tensor(image), torch.float32, scale=True)
    return F.normalize(tensor, list(prep.mean), list(prep.std))


def _noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


@pytest.mark.parametrize(
    "size",
    [(640, 480), (480, 640), (900, 300), (256, 256), (4096, 256), (257, 255), (100, 80), (7, 7)],
)
@pytest.mark.parametrize("prep", [MODEL_PREP, Preprocess(resize=232, crop=224)])
def test_ordinary_pictures_are_preprocessed_as_torchvision_does_to_the_bit(
    size: tuple[int, int], prep: Preprocess
) -> None:
    """The torch-free recipe (imgvec.embed.pixels) equals torchvision's functions exactly, small
    pictures (padded by the crop) included: vectors made either way are the same."""
    image = _noise(size)
    tensor = runtime.preprocess_image(image, prep)
    assert tensor.shape == (3, prep.crop, prep.crop)
    torch.testing.assert_close(tensor, _resize_whole_then_crop(image, prep), rtol=0, atol=0)


def test_the_model_input_is_made_without_torch() -> None:
    code = (
        "import sys, numpy as np; from PIL import Image; "
        "from imgvec.embed.pixels import model_input; from imgvec.embed.spec import Preprocess; "
        "x = model_input(Image.new('RGB', (64, 48)), Preprocess(resize=32, crop=24)); "
        "print(x.shape, x.dtype, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["(3,", "24,", "24)", "float32", "False"]


@pytest.mark.parametrize(
    ("size", "prep"),
    [
        ((4200, 250), MODEL_PREP),
        ((120, 3001), MODEL_PREP),
        ((5000, 7), MODEL_PREP),
        ((3000, 60), Preprocess(resize=64, crop=96)),  # a crop larger than the resize: padded
    ],
)
def test_extreme_pictures_give_the_pixels_of_the_whole_resize(
    size: tuple[int, int], prep: Preprocess
) -> None:
    """Past WHOLE_RESIZE_ASPECT only the cropped part is resampled, at the same positions as
    the whole resize: pixels are at most 2 of 255 levels apart (Pillow may run its two passes
    in the other order, rounding in between), 0.3 on average."""
    assert max(size) > pixels.WHOLE_RESIZE_ASPECT * min(size)
    image = _noise(size, seed=1)
    tensor = runtime.preprocess_image(image, prep)
    expected = _resize_whole_then_crop(image, prep)
    levels = (tensor - expected).abs() * torch.tensor(prep.std).view(3, 1, 1) * 255
    assert tensor.shape == (3, prep.crop, prep.crop)
    assert float(levels.max()) < 2.01
    assert float(levels.mean()) < 0.3


_PEAK_MEMORY = """
import io, resource, sys
import numpy as np
from PIL import Image
from imgvec.embed.pixels import prepare
from imgvec.embed.spec import Preprocess

def png(size):
    buffer = io.BytesIO()
    Image.new("L", size, 128).save(buffer, "PNG")
    return buffer.getvalue()

prep = Preprocess(resize=256, crop=224)
prepare(png((64, 48)), prep)  # lazy imports and first allocations belong to the baseline
baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:  # a regression fails fast with MemoryError instead of taking the machine's memory
    with open("/proc/self/status") as status:
        data_kb = next(int(line.split()[1]) for line in status if line.startswith("VmData"))
    hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
    resource.setrlimit(resource.RLIMIT_DATA, ((data_kb << 10) + (2 << 30), hard))
except (OSError, StopIteration, ValueError):
    pass
for size in [(1, 60000), (60000, 1), (10000, 1)]:
    data = png(size)
    assert len(data) < 1000
    picture, inputs = prepare(data, prep)
    assert tuple(inputs.shape) == (3, 224, 224), inputs.shape
    assert bool(np.isfinite(inputs).all())
    assert (picture.width, picture.height) == size
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_kb) // 1024)
"""
EXTREME_SHAPES_MEMORY_MB = 100
"""Peak memory of preparing 1x60000, 60000x1 and 10000x1 lines, above the baseline after imports
(resizing them whole to a short side of 256 took 15.5 GB and 2.6 GB)."""


@pytest.mark.skipif(sys.platform == "win32", reason="needs the resource module")
def test_extreme_aspect_ratios_are_prepared_in_bounded_memory() -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_PEAK_MEMORY)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) < EXTREME_SHAPES_MEMORY_MB, done.stdout
