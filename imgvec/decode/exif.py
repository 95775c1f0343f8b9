"""Photo metadata from EXIF: when and with what it was taken, and where."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from PIL import Image

_EXIF_IFD = 0x8769
_GPS_IFD = 0x8825
_MAKE, _MODEL, _ORIENTATION, _DATETIME = 0x010F, 0x0110, 0x0112, 0x0132
_DATETIME_ORIGINAL, _LENS_MODEL = 0x9003, 0xA434
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON = 1, 2, 3, 4


@dataclass(frozen=True)
class PhotoMetadata:
    taken_at: datetime | None = None
    """When the photo was taken (camera local time, as EXIF records it: no time zone)."""
    camera_make: str | None = None
    camera_model: str | None = None
    lens: str | None = None
    orientation: int | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None

    def columns(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


METADATA_COLUMNS = tuple(f.name for f in fields(PhotoMetadata))


def read_exif(image: Image.Image) -> PhotoMetadata:
    """Whatever EXIF the image carries; absent or malformed fields are None, never an error."""
    try:
        exif = image.getexif()
    except Exception:  # a broken EXIF block must not cost the picture
        return PhotoMetadata()
    if not exif:
        return PhotoMetadata()
    details = _ifd(exif, _EXIF_IFD)
    gps = _ifd(exif, _GPS_IFD)
    return PhotoMetadata(
        taken_at=_date(details.get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)),
        camera_make=_text(exif.get(_MAKE)),
        camera_model=_text(exif.get(_MODEL)),
        lens=_text(details.get(_LENS_MODEL)),
        orientation=_int(exif.get(_ORIENTATION)),
        gps_lat=_coordinate(gps.get(_GPS_LAT), gps.get(_GPS_LAT_REF), "S"),
        gps_lon=_coordinate(gps.get(_GPS_LON), gps.get(_GPS_LON_REF), "W"),
    )


def read_header(image: Image.Image) -> tuple[int, int, PhotoMetadata]:
    """Upright width and height and the EXIF of an opened (not decoded) image: cheap."""
    metadata = read_exif(image)
    width, height = image.size
    if metadata.orientation in (5, 6, 7, 8):  # rotated by 90 degrees
        width, height = height, width
    return width, height, metadata


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""How each EXIF orientation (2-8) is undone, as ``ImageOps.exif_transpose`` does it."""


def upright(image: Image.Image, orientation: int | None) -> Image.Image:
    """``image`` turned or flipped as its EXIF ``orientation`` (1-8, see :class:`PhotoMetadata`)
    says; the same object, not a copy, when there is nothing to do (1, None or out of range)."""
    method = _TRANSPOSE.get(orientation or 1)
    return image if method is None else image.transpose(method)


def _ifd(exif: Image.Exif, tag: int) -> dict[int, Any]:
    try:
        return dict(exif.get_ifd(tag))
    except Exception:
        return {}


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value[:200] or None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _date(value: Any) -> datetime | None:
    text = _text(value)
    if not text:
        return None
    try:
        return datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


def _coordinate(value: Any, reference: Any, negative: str) -> float | None:
    """Degrees, minutes, seconds (rationals) to signed decimal degrees."""
    try:
        degrees, minutes, seconds = (float(part) for part in value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    result = degrees + minutes / 60 + seconds / 3600
    if _text(reference) == negative:
        result = -result
    return round(result, 7) if -180 <= result <= 180 else None
