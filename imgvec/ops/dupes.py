"""``imgvec dupes``: groups of images that are the same photo (exact or near-duplicates).

Which signal decides what (measured on the UKBench near-duplicate set, BENCHMARKS.md "Near
duplicates"):

1. **Candidates** come from the index: every image's neighbours at cosine >= the model's cut
   (:func:`cosine_cut`), by batched k-NN (:func:`imgvec.index.neighbours.near_pairs`); nothing
   compares all pairs. The embedding cannot decide alone: re-encoded copies score as low as
   other shots of the same object score high.
2. **Exact**: the same content hash (SHA-256 of the file).
3. **phash**: DCT perceptual hashes at most :data:`PHASH_MAX` bits apart (re-encoding, resizing,
   format change, EXIF rotation, stripped metadata).
4. **crop**: one picture aligns inside the other as a crop of 70-100% of its side, block by
   block (:func:`imgvec.decode.fingerprint.crop_match`); other shots of a scene do not.

A pair is a duplicate when it passes 1 and one of 2-4. Groups are cliques (every member a
duplicate of every other: :func:`imgvec.ops.grouping.cliques`), the keeper first.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image as PILImage

from imgvec.decode import fingerprint
from imgvec.decode.images import decode, read_file
from imgvec.embed.batches import worker_count
from imgvec.embed.registry import available
from imgvec.errors import ImageError, ImgvecError
from imgvec.index.neighbours import near_pairs
from imgvec.ops import grouping
from imgvec.ops.parts import Parts
from imgvec.reporting import progress
from imgvec.storage import store
from imgvec.storage.schema import EmbeddingModel, IndexVersion
from imgvec.storage.store import DupeFacts
from imgvec.types import DupeGroup, DupeMember, DupesReport, FileError, PairSignals

PHASH_MAX = 2
"""Bits two phashes may differ by for a near-duplicate. Measured: every non-crop variant of the
evaluation set is within 2 bits of its source; the closest sibling shots are 4 apart."""
UNCALIBRATED_COSINE = 0.5
"""The cut for a model nobody measured: low, so that the pixel signals decide (slower)."""
THUMB_CACHE = 2048
"""Crop-check thumbnails (greyscale, 256 px wide, about 50 KB) kept in memory at once."""
DECODE_SIDE = 256
"""Smallest side decoded for pixel checks (JPEG DCT scaling makes this cheap)."""


def cosine_cut(model: EmbeddingModel) -> tuple[float, str]:
    """The model's calibrated cosine cut and ``"calibrated"``, or :data:`UNCALIBRATED_COSINE`
    and ``"uncalibrated"`` for a model, layer or weights without a measured cut."""
    spec = available().get(model.name)
    measured = spec.near_duplicate_cosine if spec is not None else None
    if (
        measured is None
        or spec is None
        or model.layer != spec.default_layer
        or model.weights.startswith("none:")
    ):
        return UNCALIBRATED_COSINE, "uncalibrated"
    return measured, "calibrated"


class Unreadable(Exception):
    """A file that cannot be checked on pixels (gone, changed since indexed, undecodable)."""


@dataclass(frozen=True)
class Verdict:
    duplicate: bool
    decided_by: str
    phash_distance: int | None = None
    crop: fingerprint.CropMatch | None = None


class PixelChecks:
    """Pixel signals of library images, read from their files (verified unchanged) on demand:
    phashes missing from the database are made and kept for the caller to store."""

    def __init__(self, facts: dict[int, DupeFacts]) -> None:
        self.facts = facts
        self.new_phashes: dict[int, int] = {}
        self.unreadable: dict[int, str] = {}
        self.crop_checks = 0
        self._thumbs: OrderedDict[int, fingerprint.Thumbnail] = OrderedDict()
        self._lock = threading.Lock()
        """Guards the thumbnail cache: pairs are checked on worker threads."""

    def _picture(self, image_id: int) -> PILImage.Image:
        if image_id in self.unreadable:
            raise Unreadable(self.unreadable[image_id])
        facts = self.facts[image_id]
        try:
            info = os.stat(facts.path)
            if (info.st_size, info.st_mtime_ns) != (facts.size, facts.mtime_ns):
                raise ImageError("changed since it was added (run imgvec add first)")
            return decode(read_file(facts.path), DECODE_SIDE).image
        except FileNotFoundError:
            reason = "vanished since it was added"
        except (ImageError, OSError) as error:
            reason = str(error)
        self.unreadable[image_id] = reason
        raise Unreadable(reason)

    def phash(self, image_id: int) -> int:
        known = self.facts[image_id].phash
        if known is None:
            known = self.new_phashes.get(image_id)
        if known is None:
            known = fingerprint.phash(self._picture(image_id))
            self.new_phashes[image_id] = known
        return known

    def thumbnail(self, image_id: int) -> fingerprint.Thumbnail:
        with self._lock:
            thumb = self._thumbs.get(image_id)
            if thumb is not None:
                self._thumbs.move_to_end(image_id)
                return thumb
        thumb = fingerprint.thumbnail(self._picture(image_id))
        _ = thumb.pyramid  # made once, outside the lock
        with self._lock:
            self._thumbs[image_id] = thumb
            if len(self._thumbs) > THUMB_CACHE:
                self._thumbs.popitem(last=False)
        return thumb

    def verdict(self, a: int, b: int, cosine: float, cut: float, full: bool = False) -> Verdict:
        """Whether ``a`` and ``b`` are duplicates, and which signal decided; ``full`` measures
        every signal (``--explain``). Raises :class:`Unreadable`."""
        fa, fb = self.facts[a], self.facts[b]
        exact = fa.content_hash is not None and fa.content_hash == fb.content_hash
        if not full and exact:
            return Verdict(True, "exact")
        if not full and cosine < cut:
            return Verdict(False, "cosine")
        distance = fingerprint.hamming(self.phash(a), self.phash(b))
        crop = None
        if full or distance > PHASH_MAX:
            with self._lock:
                self.crop_checks += 1
            crop = fingerprint.crop_match(self.thumbnail(a), self.thumbnail(b))
        if exact:
            decided = "exact"
        elif cosine < cut:
            decided = "cosine"
        elif distance <= PHASH_MAX:
            decided = "phash"
        else:
            assert crop is not None
            decided = "crop" if crop.is_crop else "pixels"
        return Verdict(decided in ("exact", "phash", "crop"), decided, distance, crop)


def explain(
    parts: Parts, model: EmbeddingModel, a: str, b: str, threshold: float | None = None
) -> PairSignals:
    """Every signal of two library images and the verdict (``imgvec dupes --explain A B``).
    Raises ImgvecError when either is not in the library with a vector, or cannot be read."""
    if a == b:
        raise ImgvecError(f"{a}: --explain compares two different files; both name this one")
    cut = threshold if threshold is not None else cosine_cut(model)[0]
    with parts.sessions() as session:
        rows = [store.image_by_path(session, path) for path in (a, b)]
        for path, row in zip((a, b), rows, strict=True):
            if row is None or row.error is not None:
                raise ImgvecError(f"{path}: not in the library (imgvec add it first)")
        ids = [row.id for row in rows if row is not None]
        found, vectors = store.vectors_of(session, model.id, model.dim, ids)
        facts = store.dupe_facts(session, ids)
    if len(found) < len(set(ids)):
        raise ImgvecError(f"no {model.name} vector for one of the files (imgvec add it first)")
    by_id = {int(i): v for i, v in zip(found, vectors, strict=True)}
    cosine = float(by_id[ids[0]] @ by_id[ids[1]])
    checks = PixelChecks(facts)
    try:
        verdict = checks.verdict(ids[0], ids[1], cosine, cut, full=True)
    except Unreadable as error:
        bad = next(iter(checks.unreadable))
        raise ImgvecError(f"{facts[bad].path}: {error}") from None
    crop = verdict.crop
    return PairSignals(
        a=facts[ids[0]].path,
        b=facts[ids[1]].path,
        same_content=facts[ids[0]].content_hash == facts[ids[1]].content_hash,
        cosine=round(cosine, 4),
        threshold=cut,
        phash_distance=verdict.phash_distance,
        phash_max=PHASH_MAX,
        crop_coarse=None if crop is None else round(crop.coarse, 4),
        crop_ncc=None if crop is None else round(crop.ncc, 4),
        crop_block_min=None if crop is None else round(crop.block_min, 4),
        crop_parallax=None if crop is None else round(crop.parallax, 2),
        crop_ncc_min=fingerprint.CROP_NCC,
        crop_block_min_min=fingerprint.CROP_BLOCK_MIN,
        crop_parallax_max=fingerprint.MAX_PARALLAX,
        duplicate=verdict.duplicate,
        decided_by=verdict.decided_by,
    )


def find(
    parts: Parts,
    model: EmbeddingModel,
    version: IndexVersion,
    *,
    threshold: float | None = None,
    keep: str = "best",
    where_ids: set[int] | None = None,
    since_seq: int | None = None,
    record: bool = True,
    write: bool = True,
) -> DupesReport:
    """Duplicate groups among the model's indexed images (see the module docstring).

    ``where_ids`` restricts to those images; ``since_seq`` checks only images whose vectors
    changed after that change seq, against the whole library (``--new``), and reports only the
    groups they are in. Images moved aside by ``--move-to`` are left out. With ``write`` (the
    caller holds the write lock), phashes made on the way are stored, and with ``record`` and no
    ``where_ids`` the change seq this run saw, for the next ``--new``; without it nothing is
    written (a read-only library, a server). Raises ImgvecError for a bad ``keep``
    or ``threshold``.
    """
    order = grouping.keep_order(keep)
    if threshold is not None and not -1.0 <= threshold <= 1.0:
        raise ImgvecError("--threshold is a cosine similarity: between -1 and 1")
    cut, source = (threshold, "--threshold") if threshold is not None else cosine_cut(model)
    report = DupesReport(model=model.name, threshold=cut, threshold_source=source, keep=keep)
    if source == "uncalibrated":
        parts.reporter.notice(
            f"No measured near-duplicate cut for {model.name}/{model.layer} with these weights: "
            f"candidates from cosine {cut:g} (more pairs to check on pixels; "
            "`imgvec eval --dupes` measures one, then pass --threshold)"
        )
    with parts.sessions() as session:
        aside = store.moved_aside(session)
        new_ids = None
        if since_seq is not None:
            new_ids = set(store.changed_since(session, model.id, since_seq))
    pairs, report.saturated, total = candidate_pairs(
        parts, model, version, cut, where_ids, aside, new_ids
    )
    _add_exact_copies(parts, model, pairs, where_ids, aside, new_ids)
    report.checked = total
    groups, verdicts, checks = _groups(parts, model, pairs, cut, order, report.errors)
    report.candidate_pairs, report.pixel_checks = len(pairs), checks.crop_checks
    if new_ids is not None:
        groups = [g for g in groups if new_ids.intersection(g)]
    report.groups = [_group(g, checks.facts, pairs, verdicts) for g in groups]
    report.groups.sort(key=lambda g: g.keeper.path)
    if (
        report.groups
        and keep.startswith("path:")
        and not any(grouping.matches(keep, checks.facts[i].path) for g in groups for i in g)
    ):
        parts.reporter.notice(
            f"No photo in a group matches --keep {keep}; each group keeps its best instead "
            "(* spans folders; the pattern is matched against the whole absolute path)"
        )
    if not write:
        return _told_saturated(parts, report)
    with parts.sessions() as session, session.begin():
        for image_id, value in checks.new_phashes.items():
            store.set_phash(session, image_id, value)
        if where_ids is None and record:
            store.state(session).dupes_seq = store.last_change(session, model.id)
    return _told_saturated(parts, report)


def _add_exact_copies(
    parts: Parts,
    model: EmbeddingModel,
    pairs: dict[tuple[int, int], float],
    where_ids: set[int] | None,
    aside: set[int],
    new_ids: set[int] | None,
) -> None:
    """Add the pairs of files with one content hash, whatever their cosine (a cut of 1.0, or
    rounding, must not part exact copies), under the same restrictions as the search."""
    with parts.sessions() as session:
        copies = store.same_content(session, model.id, new_ids)
    for ids in copies:
        kept = [i for i in ids if i not in aside and (where_ids is None or i in where_ids)]
        for n, a in enumerate(kept):
            for b in kept[n + 1 :]:
                if new_ids is None or a in new_ids or b in new_ids:
                    pairs.setdefault((a, b), 1.0)


def _told_saturated(parts: Parts, report: DupesReport) -> DupesReport:
    if report.saturated:
        parts.reporter.notice(
            f"{report.saturated} images have more near-duplicate candidates than were checked; "
            "their groups may be incomplete (raise --threshold)"
        )
    return report


def candidate_pairs(
    parts: Parts,
    model: EmbeddingModel,
    version: IndexVersion,
    cut: float,
    where_ids: set[int] | None = None,
    aside: set[int] | frozenset[int] = frozenset(),
    new_ids: set[int] | None = None,
) -> tuple[dict[tuple[int, int], float], int, int]:
    """Stage 1 alone: ``(pairs (a, b) with a < b -> exact cosine >= cut, saturated images,
    images queried)``, by batched k-NN on the version (see
    :func:`imgvec.index.neighbours.near_pairs`). ``where_ids`` restricts both sides, ``aside``
    is left out of both, ``new_ids`` (``--new``) are the only images queried."""
    wanted = None if where_ids is None else np.array(sorted(where_ids), np.int64)
    unwanted = np.array(sorted(aside), np.int64)

    def allowed(ids: np.ndarray) -> np.ndarray:
        keep = ~np.isin(ids, unwanted)
        return keep if wanted is None else keep & np.isin(ids, wanted)

    index = parts.indexes.of(model)
    margin = COMPRESSED_MARGIN if version.kind == "ivfpq" else 0.0

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return index.search(version, queries, k, None)  # no per-query re-ranking: see below

    with parts.sessions() as session:
        total = store.count_vectors(session, model.id) if new_ids is None else len(new_ids)
    with progress(parts.reporter, "Finding neighbours", total) as advance:
        chunks = _query_vectors(parts, model, new_ids, allowed, advance)
        pairs, saturated = near_pairs(search, chunks, cut - margin, allowed)
    if margin:
        pairs = _exact(parts, model, pairs, cut)
    return pairs, saturated, total


COMPRESSED_MARGIN = 0.05
"""A compressed (ivfpq) index's scores are approximate: candidates are taken from ``cut -
COMPRESSED_MARGIN``, then each pair's exact cosine from the stored vectors decides (cheaper than
re-ranking every neighbour of every image; PQ errors on unit vectors: a few hundredths)."""


def _exact(
    parts: Parts, model: EmbeddingModel, pairs: dict[tuple[int, int], float], cut: float
) -> dict[tuple[int, int], float]:
    """The pairs whose exact cosine reaches ``cut``, with it (the vectors of the images in
    candidate pairs only: a small part of the library)."""
    with parts.sessions() as session:
        found, vectors = store.vectors_of(
            session, model.id, model.dim, {i for pair in pairs for i in pair}
        )
    row = {int(i): n for n, i in enumerate(found)}
    exact = {}
    for a, b in pairs:
        if a in row and b in row:
            score = float(vectors[row[a]] @ vectors[row[b]])
            if score >= cut:
                exact[(a, b)] = score
    return exact


def _query_vectors(
    parts: Parts,
    model: EmbeddingModel,
    new_ids: set[int] | None,
    allowed: Callable[[np.ndarray], np.ndarray],
    advance: Callable[[int], None],
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, vectors) chunks of the images whose neighbours are looked for."""
    with parts.sessions() as session:
        if new_ids is None:
            chunks: Iterable[tuple[np.ndarray, np.ndarray]] = store.iter_vectors(
                session, model.id, model.dim
            )
        else:
            chunks = [store.vectors_of(session, model.id, model.dim, new_ids)]
        for ids, vectors in chunks:
            mask = allowed(ids)
            yield ids[mask], vectors[mask]
            advance(len(ids))


PAIR_BATCH = 512
"""Pairs handed to the worker threads at a time."""
LARGEST_COMPLETED = 200
"""Components up to this many images get every pair checked (see :func:`_groups`)."""


def _groups(
    parts: Parts,
    model: EmbeddingModel,
    pairs: dict[tuple[int, int], float],
    cut: float,
    order: Callable[[DupeFacts], Any],
    errors: list[FileError],
) -> tuple[list[list[int]], dict[tuple[int, int], Verdict], PixelChecks]:
    """Check each candidate pair on pixels, then form the groups.

    A pair the search did not return (an approximate index can miss one; ``--new`` asks only
    from the new side) is checked too when both images are in one connected set of
    duplicates of at most :data:`LARGEST_COMPLETED` images, so cliques are judged on all pairs.
    """
    with parts.sessions() as session:
        facts = store.dupe_facts(session, {i for pair in pairs for i in pair})
    checks = PixelChecks(facts)
    verdicts: dict[tuple[int, int], Verdict] = {}

    def judge(pair: tuple[int, int], cosine: float) -> None:
        a, b = pair
        if a not in facts or b not in facts:
            return
        with contextlib.suppress(Unreadable):  # reported once per file below
            verdicts[pair] = checks.verdict(a, b, cosine, cut)

    ordered_pairs = sorted(pairs.items())  # by first id: thumbnails get reused
    with (
        progress(parts.reporter, "Checking pixels", len(pairs)) as advance,
        ThreadPoolExecutor(worker_count(), thread_name_prefix="imgvec-dupes") as pool,
    ):  # NumPy, SciPy and Pillow release the GIL for most of a check
        for start in range(0, len(ordered_pairs), PAIR_BATCH):
            batch = ordered_pairs[start : start + PAIR_BATCH]
            for _ in pool.map(lambda item: judge(*item), batch):
                advance(1)
    duplicate = grouping.relation(p for p, v in verdicts.items() if v.duplicate)
    for members in _connected(duplicate):
        if len(members) > LARGEST_COMPLETED:
            continue
        missing = [(a, b) for a in members for b in members if a < b and (a, b) not in verdicts]
        if not missing:
            continue
        with parts.sessions() as session:
            ids, vectors = store.vectors_of(session, model.id, model.dim, members)
        row = {int(i): v for i, v in zip(ids, vectors, strict=True)}
        for a, b in missing:
            if a in row and b in row:
                pairs[(a, b)] = float(row[a] @ row[b])
                judge((a, b), pairs[(a, b)])
                if (a, b) in verdicts and verdicts[(a, b)].duplicate:
                    duplicate.setdefault(a, set()).add(b)
                    duplicate.setdefault(b, set()).add(a)
    for image_id, reason in sorted(checks.unreadable.items()):
        path = facts[image_id].path
        parts.fail(errors, path, f"not checked for duplicates: {reason}")
    for image_id in checks.unreadable:
        for other in duplicate.pop(image_id, set()):
            duplicate.get(other, set()).discard(image_id)
    ordered = sorted(duplicate, key=lambda i: order(facts[i]))
    return grouping.cliques(ordered, duplicate), verdicts, checks


def _connected(relation: dict[int, set[int]]) -> Iterator[list[int]]:
    seen: set[int] = set()
    for start in relation:
        if start in seen:
            continue
        members, frontier = [], [start]
        seen.add(start)
        while frontier:
            node = frontier.pop()
            members.append(node)
            for other in relation[node] - seen:
                seen.add(other)
                frontier.append(other)
        yield members


def _group(
    ids: list[int],
    facts: dict[int, DupeFacts],
    pairs: dict[tuple[int, int], float],
    verdicts: dict[tuple[int, int], Verdict],
) -> DupeGroup:
    keeper = ids[0]
    members = []
    for image_id in ids:
        key = (min(keeper, image_id), max(keeper, image_id))
        f = facts[image_id]
        members.append(
            DupeMember(
                id=image_id,
                path=f.path,
                width=f.width,
                height=f.height,
                size_bytes=f.size,
                taken_at=f.taken_at.isoformat() if f.taken_at else None,
                similarity=1.0 if image_id == keeper else round(pairs.get(key, 1.0), 4),
                signal="keeper" if image_id == keeper else verdicts[key].decided_by,
                keep=image_id == keeper,
            )
        )
    return DupeGroup(members)
