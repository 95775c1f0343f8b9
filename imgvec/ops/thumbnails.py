"""Thumbnails for the web page: a JPEG per (content, size), made once and cached on disk by
content hash, so an edited file gets a new thumbnail and a moved one keeps its old one.

The cache lives in the library folder (``thumbnails/<hash[:2]>/<hash>-<size>.jpg``); every file
is written atomically. A library that cannot be written still gets thumbnails, made each time.
The cache is not the library's data: a server that never writes to the library still fills it.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from imgvec import scan
from imgvec.atomic import atomic_write
from imgvec.decode.images import decode, read_file
from imgvec.errors import ImageError, ImageNotFound, ImgvecError
from imgvec.ops.parts import Parts
from imgvec.storage import store

SIZES = (128, 256, 512)
"""Longest side, pixels, of the sizes served (a fixed set: a URL cannot fill the disk)."""
JPEG_QUALITY = 82
CACHE_DIR = "thumbnails"


def thumbnail(parts: Parts, image_id: int, size: int) -> bytes:
    """The JPEG thumbnail (longest side ``size`` px, upright) of a library image.

    Raises :class:`ImgvecError` for a size not in :data:`SIZES`, :class:`ImageNotFound` for an
    unknown id or a file that is gone, and
    :class:`ImageError` when the file is gone, changed since it was added, or cannot be decoded.
    """
    if size not in SIZES:
        raise ImgvecError(f"thumbnail size must be one of {', '.join(map(str, SIZES))}")
    with parts.sessions() as session:
        row = store.image(session, image_id)
        if row is None or row.error is not None or row.content_hash is None:
            raise ImageNotFound(f"no image with id {image_id} in the library")
        path, content_hash = row.path, row.content_hash
    cached = cache_path(parts.root, content_hash, size)
    try:
        return cached.read_bytes()
    except OSError:
        pass
    if not os.path.isfile(path):
        raise ImageNotFound(f"image {image_id}'s file is gone: {path}")
    data = read_file(path)
    if scan.sha256_bytes(data) != content_hash:
        raise ImageError("the file changed since it was added; run imgvec add again")
    picture = decode(data, min_side=size)
    image = picture.image
    image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    made = out.getvalue()
    with contextlib.suppress(OSError):  # a full disk or a read-only library: no cache, still served
        atomic_write(cached, lambda temp: temp.write_bytes(made))
    return made


def cache_path(root: Path, content_hash: str, size: int) -> Path:
    return root / CACHE_DIR / content_hash[:2] / f"{content_hash}-{size}.jpg"
