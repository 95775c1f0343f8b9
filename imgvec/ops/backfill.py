"""``imgvec backfill``: EXIF and pixel sizes for images added by an older imgvec, read from the
file headers (no decoding, no model)."""

from __future__ import annotations

from PIL import Image as PILImage

from imgvec.decode.exif import read_header
from imgvec.ops.parts import Parts
from imgvec.storage import store
from imgvec.types import BackfillReport, FileError

BATCH = 256


def backfill(parts: Parts) -> BackfillReport:
    """Headers of the images without metadata, committed every :data:`BATCH` images; a file that
    cannot be read gets its error and the rest go on. The caller holds the write lock."""
    errors: list[FileError] = []
    updated = 0
    with parts.sessions() as session:
        pending = store.images_without_metadata(session)
    for start in range(0, len(pending), BATCH):
        with parts.sessions() as session, session.begin():
            for image_id, path in pending[start : start + BATCH]:
                try:
                    with PILImage.open(path) as opened:
                        width, height, metadata = read_header(opened)
                        fmt = opened.format
                except (OSError, ValueError) as error:
                    parts.fail(errors, path, f"cannot read metadata: {error}")
                    continue
                store.set_metadata(
                    session,
                    image_id,
                    width=width,
                    height=height,
                    format=fmt,
                    **metadata.columns(),
                )
                updated += 1
    return BackfillReport(updated, errors)
