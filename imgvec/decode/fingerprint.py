"""Pixel fingerprints that tell the same picture from a similar one (``imgvec dupes``).

An embedding says two photos show the same thing; it cannot say they are the same photo: four
shots of one object from other angles score as high as a re-encoded copy (BENCHMARKS.md, "Near
duplicates"). Two pixel signals decide instead:

- :func:`phash`, the DCT perceptual hash (``imagehash.phash``: 32x32 greyscale, 8x8 lowest
  frequencies against their median; Zauner, "Implementation and Benchmarking of Perceptual Image
  Hash Functions", 2010). Re-encoding, resizing, format changes and metadata edits move it by a
  few bits; a crop or another viewpoint by many.
- :func:`crop_match`, the best normalised cross-correlation of one picture's greyscale thumbnail
  placed inside the other's, over scales from :data:`MIN_CROP_SIDE` to 1: a crop of the same
  photo lines up almost exactly (0.9+), another shot of the scene does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageFilter

THUMB_WIDTH = 64
"""Width of the greyscale thumbnails :func:`crop_match` aligns (pixels)."""
MIN_CROP_SIDE = 0.7
"""The smallest crop :func:`crop_match` looks for: 70% of each side of the other picture."""
SCALE_STEP = 0.02
HASH_BITS = 64


def phash(image: Image.Image) -> int:
    """The 64-bit DCT perceptual hash of an image, as a signed int64 (for SQL columns)."""
    import imagehash  # imports SciPy: only where a hash is made

    bits = imagehash.phash(image).hash.ravel()
    value = int("".join("1" if b else "0" for b in bits), 2)
    return value - (1 << HASH_BITS) if value >= 1 << (HASH_BITS - 1) else value


def stored_phash(image: Image.Image | None) -> int | None:
    """:func:`phash` as ``add`` stores it: None when there are no pixels or the hash cannot be
    made (``dupes`` makes it again when it needs it)."""
    if image is None:
        return None
    try:
        return phash(image)
    except Exception:
        return None


def hamming(a: int, b: int) -> int:
    """Bits that differ between two hashes from :func:`phash` (0..64)."""
    return ((a ^ b) & ((1 << HASH_BITS) - 1)).bit_count()


class Thumbnail:
    """What :func:`crop_match` compares of one picture: greyscale, at most 4x
    :data:`THUMB_WIDTH` wide (box-reduced; enough for every scale it tries), with its coarse
    pyramid made once (a picture is usually compared with several others)."""

    def __init__(self, image: Image.Image) -> None:
        grey = image.convert("L")
        if grey.width > 4 * THUMB_WIDTH:
            height = max(1, round(grey.height * 4 * THUMB_WIDTH / grey.width))
            grey = grey.resize((4 * THUMB_WIDTH, height), Image.Resampling.BOX)
        self.image = grey
        self._pyramid: list[tuple[float, np.ndarray]] | None = None

    @property
    def frame(self) -> np.ndarray:
        """The picture :data:`THUMB_WIDTH` wide, float32 (h, w)."""
        return self.pyramid[0][1]

    @property
    def pyramid(self) -> list[tuple[float, np.ndarray]]:
        """(side, picture at ``side`` x :data:`THUMB_WIDTH` wide) for each coarse scale, 1 first."""
        if self._pyramid is None:
            self._pyramid = [
                (float(side), _at_width(self.image, max(8, round(THUMB_WIDTH * side))))
                for side in np.arange(1.0, MIN_CROP_SIDE - 1e-9, -SCALE_STEP)
            ]
        return self._pyramid


def thumbnail(image: Image.Image) -> Thumbnail:
    return Thumbnail(image)


def _at_width(image: Image.Image, width: int) -> np.ndarray:
    height = max(1, round(width * image.height / image.width))
    return np.asarray(image.resize((width, height), Image.Resampling.BOX), np.float32)


FINE_WIDTH = 128
"""Width of the outer picture in the fine alignment (pixels)."""
FINE_BLUR = 1.0
"""Gaussian blur radius (pixels) before the fine alignment: re-encoding noise must not count."""
BLOCKS = 4
"""The aligned overlap is cut into BLOCKS x BLOCKS blocks; each textured one must agree too."""
FLAT_BLOCK_STD = 2.0
"""A block whose grey levels spread less than this (0-255) is sky or wall: it cannot disagree."""
COARSE_MIN = 0.85
"""A coarse score below this ends the check early (measured: siblings' median 0.58, the lowest
true crop 0.91; BENCHMARKS.md, "Near duplicates")."""
CROP_NCC = 0.98
"""Fine-alignment correlation a crop must reach."""
CROP_BLOCK_MIN = 0.8
"""Correlation every textured block of a crop must reach: a nearby shot of the same scene
aligns well overall (0.98+) but not block by block (parallax, motion)."""


PARALLAX_WIDTH = 256
"""Width of the outer picture when block shifts are compared (pixels)."""
PARALLAX_BLOCKS = 6
PARALLAX_REACH = 3
"""How far (pixels) each block's own best shift is looked for around the global alignment."""
MAX_PARALLAX = 1.5
"""A crop's block shifts follow one offset and scale within this (pixels at
:data:`PARALLAX_WIDTH`; resampling and a scale error of the alignment are linear, parallax is
not). Measured on the UKBench near-duplicate set: true crops 0.5-0.9, the near-burst sibling
pair that passed every other test 2.5."""


@dataclass(frozen=True)
class CropMatch:
    """How one picture lines up inside the other (see :func:`crop_match`)."""

    coarse: float
    """Best NCC of the coarse search (64 px), -1..1."""
    ncc: float
    """NCC of the fine alignment (128 px, blurred), -1..1; -1 when the coarse one failed."""
    block_min: float
    """Lowest NCC of the fine alignment's textured blocks, -1..1 (1: none textured)."""
    scale: float
    """Side of the inner picture relative to the outer one at the best alignment (0.7..1)."""
    parallax: float = -1.0
    """Largest shift of a block that one offset and scale per axis do not explain (pixels at
    :data:`PARALLAX_WIDTH`; -1: not measured, the fine alignment failed)."""

    @property
    def is_crop(self) -> bool:
        """The rule: ``ncc >= CROP_NCC``, ``block_min >= CROP_BLOCK_MIN`` and
        ``0 <= parallax <= MAX_PARALLAX``."""
        return (
            self.ncc >= CROP_NCC
            and self.block_min >= CROP_BLOCK_MIN
            and 0 <= self.parallax <= MAX_PARALLAX
        )


SMALL_FRAME = 64 * 64
"""Up to this many pixels, direct correlation beats SciPy's call overhead (measured)."""


def _window_sums(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Sum of ``values`` over every window of ``shape`` (an integral image)."""
    table = np.zeros((values.shape[0] + 1, values.shape[1] + 1), np.float64)
    table[1:, 1:] = values.cumsum(0).cumsum(1)
    h, w = shape
    return table[h:, w:] - table[:-h, w:] - table[h:, :-w] + table[:-h, :-w]


def _ncc_map(frame: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of ``template`` at every position inside ``frame``
    (window sums from integral images, products by SciPy's FFT or direct correlation)."""
    from scipy.signal import correlate  # SciPy comes with imagehash

    n = template.size
    centred = template - template.mean()
    norm = float(np.sqrt((centred * centred).sum()))
    if norm < 1e-3:  # a flat template matches nothing in particular
        return np.zeros((1, 1), np.float32)
    sums = _window_sums(frame, template.shape)
    squares = _window_sums(frame * frame, template.shape)
    if frame.size <= SMALL_FRAME:
        windows = sliding_window_view(frame, template.shape)
        products = np.einsum("ijkl,kl->ij", windows, centred)
    else:
        products = correlate(frame, centred, mode="valid")
    spread = np.sqrt(np.maximum(squares - sums * sums / n, 1e-6))
    return products / (spread * norm)


def _blurred(image: Image.Image, width: int) -> np.ndarray:
    height = max(1, round(width * image.height / image.width))
    small = image.resize((width, height), Image.Resampling.BOX)
    return np.asarray(small.filter(ImageFilter.GaussianBlur(FINE_BLUR)), np.float32)


def _block_min(a: np.ndarray, b: np.ndarray) -> float:
    h, w = a.shape
    lowest = 1.0
    for i in range(BLOCKS):
        for j in range(BLOCKS):
            rows = slice(i * h // BLOCKS, (i + 1) * h // BLOCKS)
            cols = slice(j * w // BLOCKS, (j + 1) * w // BLOCKS)
            x, y = a[rows, cols] - a[rows, cols].mean(), b[rows, cols] - b[rows, cols].mean()
            sx, sy = float(np.sqrt((x * x).sum())), float(np.sqrt((y * y).sum()))
            if min(sx, sy) / np.sqrt(max(x.size, 1)) < FLAT_BLOCK_STD:
                continue
            lowest = min(lowest, float((x * y).sum() / (sx * sy)))
    return lowest


def crop_match(a: Thumbnail, b: Thumbnail) -> CropMatch:
    """Whether one picture is a crop (or a resize) of the other: :attr:`CropMatch.is_crop`.

    Coarse: each picture is tried inside the other, the outer one :data:`THUMB_WIDTH` pixels
    wide, the inner one at every width from :data:`MIN_CROP_SIDE` to 1 times that in steps of
    :data:`SCALE_STEP`, at every position. Below :data:`COARSE_MIN` the answer is no. Fine: the
    best pair again at :data:`FINE_WIDTH` pixels, blurred, scale within one coarse step (steps of
    0.002), best position; then the correlation of each textured block of the overlap.
    Takes two :class:`Thumbnail` objects. About 60 ms for a pair that passes the coarse stage,
    13 ms for one that does not, pyramids made (this machine, NumPy).
    """
    coarse, best = -1.0, None
    for outer, inner in ((a, b), (b, a)):
        frame = outer.frame
        for side, template in inner.pyramid:
            if template.shape[0] > frame.shape[0] or template.shape[0] < 4:
                continue
            score = float(_ncc_map(frame, template).max())
            if score > coarse:
                coarse, best = score, (outer, inner, float(side))
    if best is None or coarse < COARSE_MIN:
        return CropMatch(coarse, -1.0, -1.0, best[2] if best else 0.0)
    outer, inner, side = best[0].image, best[1].image, best[2]
    frame = _blurred(outer, FINE_WIDTH)
    ncc, block_min, scale = -1.0, -1.0, side
    for s in np.arange(side - SCALE_STEP, side + SCALE_STEP + 1e-6, SCALE_STEP / 10):
        if s > 1.0 + 1e-6:
            continue
        template = _blurred(inner, round(FINE_WIDTH * s))
        if template.shape[0] > frame.shape[0] or template.shape[1] > frame.shape[1]:
            continue
        scores = _ncc_map(frame, template)
        y, x = np.unravel_index(int(scores.argmax()), scores.shape)
        if scores[y, x] > ncc:
            window = frame[y : y + template.shape[0], x : x + template.shape[1]]
            ncc, block_min, scale = float(scores[y, x]), _block_min(window, template), float(s)
    parallax = _parallax(outer, inner, scale) if ncc >= CROP_NCC else -1.0
    return CropMatch(coarse, ncc, block_min, scale, parallax)


def _parallax(outer: Image.Image, inner: Image.Image, scale: float) -> float:
    """How far (pixels at :data:`PARALLAX_WIDTH`) the best local shifts of the
    :data:`PARALLAX_BLOCKS` squared textured blocks of the aligned inner picture stray from one
    offset and scale per axis (:func:`_nonlinear_shift`). A crop moves every block alike, up to
    resampling and a small scale error; another shot of the scene from a step aside moves near
    and far things differently (parallax)."""
    frame = _blurred(outer, PARALLAX_WIDTH)
    template = _blurred(inner, round(PARALLAX_WIDTH * scale))
    if template.shape[0] > frame.shape[0] or template.shape[1] > frame.shape[1]:
        return -1.0
    scores = _ncc_map(frame, template)
    y, x = np.unravel_index(int(scores.argmax()), scores.shape)
    h, w = template.shape
    reach = PARALLAX_REACH
    found = []
    for i in range(PARALLAX_BLOCKS):
        for j in range(PARALLAX_BLOCKS):
            rows = slice(i * h // PARALLAX_BLOCKS, (i + 1) * h // PARALLAX_BLOCKS)
            cols = slice(j * w // PARALLAX_BLOCKS, (j + 1) * w // PARALLAX_BLOCKS)
            block = template[rows, cols]
            top, left = y + rows.start - reach, x + cols.start - reach
            bottom = top + block.shape[0] + 2 * reach
            right = left + block.shape[1] + 2 * reach
            if block.std() < 2 * FLAT_BLOCK_STD or top < 0 or left < 0:
                continue
            if bottom > frame.shape[0] or right > frame.shape[1]:
                continue
            local = _ncc_map(frame[top:bottom, left:right], block)
            dy, dx = np.unravel_index(int(local.argmax()), local.shape)
            centre = ((rows.start + rows.stop) / 2, (cols.start + cols.stop) / 2)
            found.append((dy, dx, *centre))
    if len(found) < 4:
        return 0
    return _nonlinear_shift(np.array(found, np.float64))


def _nonlinear_shift(found: np.ndarray) -> float:
    """What a per-axis linear model (shift = a + b * position: an offset and a small scale
    error of the alignment) leaves unexplained of the blocks' shifts: the largest residual
    (pixels). Rows of ``found``: (dy, dx, centre y, centre x)."""
    worst = 0.0
    for shift, position in ((found[:, 0], found[:, 2]), (found[:, 1], found[:, 3])):
        design = np.stack([np.ones_like(position), position], axis=1)
        coefficients, *_ = np.linalg.lstsq(design, shift, rcond=None)
        worst = max(worst, float(np.abs(shift - design @ coefficients).max()))
    return worst
