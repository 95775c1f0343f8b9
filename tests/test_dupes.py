"""``imgvec dupes``: the pure rules (grouping, keep, neighbours, fingerprints) and the real CLI on
real photos (UKBench, ../shared/eval) with their near-duplicates, moving aside and undoing."""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from imgvec.decode import fingerprint
from imgvec.decode.images import decode
from imgvec.errors import ImgvecError
from imgvec.index.neighbours import near_pairs
from imgvec.ops.grouping import cliques, keep_order, relation
from imgvec.storage.store import DupeFacts
from imgvec.tools import dupeset
from imgvec.tools.evaluate_dupes import CutPoint, choose_cut, pair_metrics
from tests.conftest import FAKE_ARGS, SHARED_EVAL

UKBENCH = SHARED_EVAL / "ukbench140" / "images"
needs_photos = pytest.mark.skipif(
    not UKBENCH.is_dir(), reason="../shared/eval/ukbench140 (real photos) is not present"
)


# --- the grouping rule -----------------------------------------------------------------------


def test_groups_do_not_chain() -> None:
    """A~B and B~C, not A~C: A and C are never in one group, whichever is kept first."""
    related = relation([(1, 2), (2, 3)])
    for order in ([1, 2, 3], [2, 1, 3], [2, 3, 1], [3, 2, 1]):
        for group in cliques(order, related):
            assert not {1, 3} <= set(group), (order, group)
    assert cliques([2, 1, 3], related) == [[2, 1]]


def test_every_member_of_a_group_is_a_duplicate_of_every_other() -> None:
    rng = np.random.default_rng(0)
    pairs = [(int(a), int(b)) for a, b in rng.integers(0, 30, (80, 2)) if a != b]
    related = relation(pairs)
    order = sorted(related)
    groups = cliques(order, related)
    assert groups
    seen: set[int] = set()
    for group in groups:
        assert not seen & set(group)
        seen |= set(group)
        assert group[0] == min(group, key=order.index)  # the keeper is the best of its group
        for a in group:
            for b in group:
                assert a == b or b in related[a]


def facts(image_id: int, **changes: object) -> DupeFacts:
    base: dict[str, object] = dict(
        id=image_id,
        path=f"/p/{image_id}.jpg",
        content_hash=None,
        width=100,
        height=100,
        size=1000,
        mtime_ns=10**18,
        taken_at=None,
        exif_fields=0,
        phash=None,
    )
    base.update(changes)
    return DupeFacts(**base)  # type: ignore[arg-type]


def test_keep_best_prefers_pixels_then_bytes_then_exif_then_oldest() -> None:
    key = keep_order("best")

    def kept(*candidates: DupeFacts) -> int:
        return min(candidates, key=key).id

    assert kept(facts(1), facts(2, width=200)) == 2
    assert kept(facts(1), facts(2, size=2000)) == 2
    assert kept(facts(1, size=999, exif_fields=5), facts(2)) == 2  # bytes before EXIF
    assert kept(facts(1), facts(2, exif_fields=3)) == 2
    old = datetime(2001, 1, 1)
    assert kept(facts(1), facts(2, taken_at=old)) == 2
    assert kept(facts(1, mtime_ns=2 * 10**18), facts(2)) == 2  # no EXIF time: file time
    # A byte copy has its original's EXIF time: the older file is the original.
    assert kept(facts(1, taken_at=old, mtime_ns=2 * 10**18), facts(2, taken_at=old)) == 2
    assert min([facts(1, mtime_ns=2 * 10**18), facts(2)], key=keep_order("oldest")).id == 2


def test_keep_policies() -> None:
    old, new = facts(1, taken_at=datetime(2001, 1, 1)), facts(2, taken_at=datetime(2020, 1, 1))
    assert min([new, old], key=keep_order("oldest")).id == 1
    assert min([old, new], key=keep_order("newest")).id == 2
    big = facts(3, path="/photos/import/3.jpg", width=4000)
    small = facts(4, path="/photos/originals/4.jpg")
    assert min([big, small], key=keep_order("path:*/originals/*")).id == 4
    assert min([big, small], key=keep_order("path:*/nowhere/*")).id == 3  # then best
    for bad in ("largest", "path:", ""):
        with pytest.raises(ImgvecError, match="unknown --keep"):
            keep_order(bad)


# --- neighbours through the index ------------------------------------------------------------


def exact_search(vectors: np.ndarray, ids: np.ndarray):  # type: ignore[no-untyped-def]
    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = queries @ vectors.T
        order = np.argsort(-scores, axis=1)[:, :k]
        found = ids[order]
        top = np.take_along_axis(scores, order, axis=1)
        if k > len(ids):
            pad = k - len(ids)
            top = np.hstack([top, np.full((len(queries), pad), -np.inf)])
            found = np.hstack([found, np.full((len(queries), pad), -1)])
        return top.astype(np.float32), found

    return search


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_near_pairs_widens_k_until_every_pair_above_the_cut_is_found() -> None:
    rng = np.random.default_rng(1)
    centre = rng.normal(size=(1, 32))
    cluster = unit(centre + 0.01 * rng.normal(size=(40, 32)))  # 40 near-copies
    others = unit(rng.normal(size=(200, 32)))
    vectors = np.vstack([cluster, others])
    ids = np.arange(100, 100 + len(vectors), dtype=np.int64)
    scores = vectors @ vectors.T
    truth = {
        (int(ids[a]), int(ids[b]))
        for a in range(len(ids))
        for b in range(a + 1, len(ids))
        if scores[a, b] >= 0.9
    }
    assert len(truth) >= 40 * 39 // 2
    pairs, saturated = near_pairs(exact_search(vectors, ids), [(ids, vectors)], 0.9, first_k=4)
    assert set(pairs) == truth and saturated == 0
    _, saturated = near_pairs(exact_search(vectors, ids), [(ids, vectors)], 0.9, first_k=4, max_k=8)
    assert saturated == 40  # each cluster member has 39 neighbours above the cut
    keep = ids[::2]
    pairs, _ = near_pairs(
        exact_search(vectors, ids), [(ids, vectors)], 0.9, allowed=lambda f: np.isin(f, keep)
    )
    assert pairs and all(a in keep or b in keep for a, b in pairs)


# --- pixel fingerprints ----------------------------------------------------------------------


def photo(name: str, variant: str = "original", tmp: Path | None = None):  # type: ignore[no-untyped-def]
    data = (UKBENCH / name).read_bytes()
    if variant != "original":
        data, _ = dupeset.VARIANTS[variant](data, dupeset.generator(0, 0, variant))
    return decode(data, 256).image


@needs_photos
def test_phash_survives_reencoding_but_not_another_shot() -> None:
    original = fingerprint.phash(photo("ukbench00000.jpg"))
    assert -(1 << 63) <= original < 1 << 63  # fits a signed 64-bit column
    for variant in ("jpeg_q30", "resize_50", "png", "exif_rotate", "strip_metadata"):
        distance = fingerprint.hamming(
            original, fingerprint.phash(photo("ukbench00000.jpg", variant))
        )
        assert distance <= 2, variant
    sibling = fingerprint.phash(photo("ukbench00001.jpg"))
    assert fingerprint.hamming(original, sibling) > 2


@needs_photos
def test_crop_match_finds_a_crop_and_rejects_another_viewpoint() -> None:
    original = fingerprint.thumbnail(photo("ukbench00004.jpg"))
    crop = fingerprint.thumbnail(photo("ukbench00004.jpg", "crop_90"))
    match = fingerprint.crop_match(original, crop)
    assert match.is_crop and 0.86 <= match.scale <= 0.94
    assert fingerprint.crop_match(crop, original).is_crop  # either order
    sibling = fingerprint.thumbnail(photo("ukbench00005.jpg"))
    assert not fingerprint.crop_match(original, sibling).is_crop
    assert not fingerprint.crop_match(crop, sibling).is_crop


# --- evaluation math -------------------------------------------------------------------------


def test_pair_metrics_and_cut_choice(tmp_path: Path) -> None:
    files = [
        dupeset.DupeFile(tmp_path / f"{source}{variant}", source, variant, group)
        for source, group in (("a", "g1"), ("b", "g1"), ("c", "g2"))
        for variant in ("original", "copy")
    ]
    p = {(f.source, f.variant): str(f.path) for f in files}
    grouped = [
        (p["a", "original"], p["a", "copy"]),
        (p["b", "copy"], p["b", "original"]),  # either order
        (p["a", "original"], p["b", "original"]),  # a sibling
        (p["a", "copy"], p["c", "copy"]),  # another object
    ]
    assert pair_metrics(files, grouped) == (3, 2, 2, 4, 1, 4)
    sweep = [CutPoint(0.5, 0.9, 0.99, 0), CutPoint(0.6, 0.95, 0.989, 0), CutPoint(0.7, 1, 0.9, 0)]
    assert choose_cut(sweep) == 0.6


# --- the CLI on real photos ------------------------------------------------------------------

SOURCES = ("ukbench00000.jpg", "ukbench00001.jpg", "ukbench00004.jpg")
"""Two shots of one object (siblings: must stay apart) and a photo of another."""
VARIANTS = ("exact", "jpeg_q30", "crop_90", "png")


@pytest.fixture
def dupe_set(tmp_path: Path) -> list[dupeset.DupeFile]:
    return dupeset.build(
        [(UKBENCH / name, name[:-4]) for name in SOURCES], tmp_path / "set", 0, VARIANTS
    )


SMALL_SOURCES = ("ukbench00000.jpg", "ukbench00004.jpg")
SMALL_VARIANTS = ("exact", "jpeg_q30", "png")


@pytest.fixture
def small_set(tmp_path: Path) -> list[dupeset.DupeFile]:
    """Two photos with three copies each: 8 files, 2 groups (cheap: no crop to align)."""
    return dupeset.build(
        [(UKBENCH / name, name[:-4]) for name in SMALL_SOURCES],
        tmp_path / "set",
        0,
        SMALL_VARIANTS,
    )


def added(imgvec, files: list[dupeset.DupeFile], library: Path) -> None:  # type: ignore[no-untyped-def]
    root = files[0].path.parent.parent
    result = imgvec("add", root, *FAKE_ARGS, "--library", library)
    assert result.exit_code == 0, result.stderr


def group_sources(groups: list[dict], files: list[dupeset.DupeFile]) -> list[set[str]]:
    source = {os.path.realpath(f.path): f.source for f in files}
    return [{source[os.path.realpath(m["path"])] for m in g["members"]} for g in groups]


@needs_photos
def test_dupes_groups_each_photo_with_its_copies_and_never_siblings(
    imgvec, dupe_set: list[dupeset.DupeFile], tmp_path: Path
) -> None:
    library = tmp_path / "lib"
    added(imgvec, dupe_set, library)
    result = imgvec("dupes", "--library", library, "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    groups = report["groups"]
    assert len(groups) == 3
    assert all(len(g["members"]) == 1 + len(VARIANTS) for g in groups)
    assert all(len(sources) == 1 for sources in group_sources(groups, dupe_set))
    signals = {m["signal"] for g in groups for m in g["members"]}
    assert {"keeper", "phash", "crop"} <= signals  # the PNG is kept: the copy is not exact
    for group in groups:
        keeper = group["members"][0]
        assert keeper["keep"] and not any(m["keep"] for m in group["members"][1:])
        pixels = [m["width"] * m["height"] for m in group["members"]]
        assert pixels[0] == max(pixels)
        assert keeper["size_bytes"] == max(
            m["size_bytes"] for m in group["members"] if m["width"] * m["height"] == pixels[0]
        )
    assert report["threshold_source"] == "uncalibrated"  # the fake model has no measured cut

    table = imgvec("dupes", "--library", library, "--keep", "path:*/original/*")
    assert table.exit_code == 0 and table.stdout.count("Group ") == 3
    assert "3 groups, 15 files, 12 duplicates" in table.stdout
    kept = [line for line in table.stdout.splitlines() if " keeper " in line]
    assert len(kept) == 3 and all("/original/" in line and "  keep " in line for line in kept)
    signals = {line.split()[-2] for line in table.stdout.splitlines() if line.startswith("      ")}
    assert signals == {"exact", "phash", "crop"}  # the original kept: the byte copy is exact
    assert "matches --keep" not in table.stderr
    nowhere = imgvec("dupes", "--library", library, "--keep", "path:original/*")  # not absolute
    assert nowhere.exit_code == 0 and nowhere.stdout.count("Group ") == 3
    assert "No photo in a group matches --keep path:original/*" in nowhere.stderr

    rows = list(csv.DictReader(io.StringIO(imgvec("dupes", "--library", library, "--csv").stdout)))
    assert len(rows) == 15 and sum(int(r["keep"]) for r in rows) == 3

    only = imgvec("dupes", "--library", library, "--json", "--where", "path NOT LIKE '%/png/%'")
    assert all("/png/" not in m["path"] for g in only.json()["groups"] for m in g["members"])
    assert sum(len(g["members"]) for g in only.json()["groups"]) == 12


@needs_photos
def test_explain_shows_the_deciding_signal(
    imgvec, dupe_set: list[dupeset.DupeFile], tmp_path: Path
) -> None:
    library = tmp_path / "lib"
    added(imgvec, dupe_set, library)
    by = {(f.source, f.variant): f.path for f in dupe_set}
    crop = imgvec(
        "dupes",
        "--library",
        library,
        "--json",
        "--explain",
        by["ukbench00004.jpg", "original"],
        by["ukbench00004.jpg", "crop_90"],
    ).json()
    assert crop["duplicate"] and crop["decided_by"] == "crop" and crop["phash_distance"] > 2
    sibling = imgvec(
        "dupes",
        "--library",
        library,
        "--explain",
        by["ukbench00000.jpg", "original"],
        by["ukbench00001.jpg", "original"],
    )
    assert sibling.exit_code == 0 and "not duplicates" in sibling.stdout
    missing = imgvec(
        "dupes",
        "--library",
        library,
        "--explain",
        tmp_path / "x.jpg",
        by["ukbench00000.jpg", "png"],
    )
    assert missing.exit_code == 2 and "not in the library" in missing.stderr
    one = by["ukbench00000.jpg", "png"]
    same = imgvec("dupes", "--library", library, "--explain", one, one)
    assert same.exit_code == 2 and same.stderr.startswith(f"error: {one}: --explain compares two")


@needs_photos
def test_move_to_and_undo_keep_the_library_consistent(
    imgvec, small_set: list[dupeset.DupeFile], tmp_path: Path
) -> None:
    library, aside = tmp_path / "lib", tmp_path / "aside"
    added(imgvec, small_set, library)
    root = small_set[0].path.parent.parent
    before = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    moved = imgvec("dupes", "--library", library, "--move-to", aside, "--json")
    assert moved.exit_code == 0, moved.stderr
    done = moved.json()["moved"]["moved"]
    assert len(done) == 6
    for item in done:
        assert not os.path.exists(item["from_path"]) and os.path.isfile(item["to_path"])
        # the path relative to the common folder is kept
        assert os.path.relpath(item["to_path"], aside) == os.path.relpath(item["from_path"], root)
    listed = imgvec("sql", "SELECT path FROM photos", "--library", library, "--json").json()
    paths = {row["path"] for row in listed}
    assert {d["to_path"] for d in done} <= paths  # known at their new place
    assert len(paths) == 8
    again = imgvec("add", root, aside, *FAKE_ARGS, "--library", library, "--json").json()
    assert again["added"] == 0 and again["updated"] == 0  # never re-embedded
    assert imgvec("dupes", "--library", library, "--json").json()["groups"] == []
    undone = imgvec("dupes", "undo", "--library", library, "--json")
    assert undone.exit_code == 0 and len(undone.json()["moved"]) == 6
    after = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert after == before
    assert len(imgvec("dupes", "--library", library, "--json").json()["groups"]) == 2


@needs_photos
def test_move_skips_changed_and_colliding_files_with_one_line_each(
    imgvec, small_set: list[dupeset.DupeFile], tmp_path: Path
) -> None:
    library, aside = tmp_path / "lib", tmp_path / "aside"
    added(imgvec, small_set, library)
    report = imgvec("dupes", "--library", library, "--json").json()
    non_keepers = [m["path"] for g in report["groups"] for m in g["members"][1:]]
    changed, colliding = non_keepers[0], non_keepers[1]
    with open(changed, "ab") as handle:
        handle.write(b"\0")
    root = small_set[0].path.parent.parent
    blocker = aside / os.path.relpath(colliding, root)
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_bytes(b"someone else's file")
    result = imgvec("dupes", "--library", library, "--move-to", aside)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, result.stderr
    assert any(changed in e and "changed since it was added" in e for e in errors)
    assert any(colliding in e and "already exists" in e for e in errors)
    assert os.path.isfile(changed) and os.path.isfile(colliding)
    assert blocker.read_bytes() == b"someone else's file"
    assert "Moved 4 files" in result.stdout


# --- a kill during the move ------------------------------------------------------------------


def _die_after(step: str):  # type: ignore[no-untyped-def]
    """A stand-in for ``moves._move_file`` that stops the process (as a kill would) after
    ``step``: ``record`` (nothing moved yet), ``link`` (the file at both names), ``copy`` (a
    cross-device copy half-written under its temporary name), ``moved`` (the move done, not
    yet recorded)."""
    from imgvec.ops import moves

    def move(source: str, destination: str) -> None:
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        if step == "link":
            os.link(source, destination)
        elif step == "moved":
            os.rename(source, destination)
        elif step == "copy":
            Path(destination + moves.TEMP_SUFFIX).write_bytes(Path(source).read_bytes()[:100])
        raise KeyboardInterrupt

    return move


def place_of(lib, image_id: int) -> str:  # type: ignore[no-untyped-def]
    return lib.sql(f"SELECT path FROM images WHERE id = {image_id}").rows[0][0]


@needs_photos
@pytest.mark.parametrize("step", ["record", "link", "copy"])
def test_a_move_killed_half_way_is_settled_from_where_the_file_is(
    imgvec, small_set: list[dupeset.DupeFile], tmp_path: Path, monkeypatch, step: str
) -> None:
    from imgvec.api import Library
    from imgvec.ops import moves

    library, aside = tmp_path / "lib", tmp_path / "aside"
    added(imgvec, small_set, library)
    with Library.open(library) as lib:
        report = lib.dupes()
        victim = report.groups[0].members[1]
        with monkeypatch.context() as patch:
            patch.setattr(moves, "_move_file", _die_after(step))
            with pytest.raises(KeyboardInterrupt):
                lib.move_dupes(report, aside)
    source = victim.path
    with Library.open(library) as lib:
        assert lib.sql("SELECT state FROM dupe_moves").rows == [("moving",)]
        with lib.writing():  # every writer settles interrupted moves first
            pass
        state = lib.sql("SELECT state FROM dupe_moves").rows[0][0]
        where = place_of(lib, victim.id)
        if step == "link":  # the move had happened: it is finished and recorded
            assert state == "moved" and not os.path.exists(source)
            assert os.path.isfile(where) and where.startswith(str(aside))
        else:  # it had not: the file stays, no half-copy is left
            assert state == "failed" and where == source and os.path.isfile(source)
            assert not any(p.is_file() for p in aside.rglob("*"))
        listed = sum(len(g.members) for g in lib.dupes().groups)
        assert listed == 8 - (step == "link")  # a file moved aside is not listed again
        lib.move_dupes(lib.dupes(), aside)
        undone = lib.undo_dupes(every_run=True)
        assert undone.errors == []
    assert all(f.path.is_file() for f in small_set)
    assert not any(p.is_file() for p in aside.rglob("*"))


@needs_photos
def test_a_killed_move_never_touches_a_new_file_that_took_the_old_name(
    imgvec, small_set: list[dupeset.DupeFile], tmp_path: Path, monkeypatch
) -> None:
    from imgvec.api import Library
    from imgvec.ops import moves

    library, aside = tmp_path / "lib", tmp_path / "aside"
    added(imgvec, small_set, library)
    with Library.open(library) as lib:
        report = lib.dupes()
        victim = report.groups[0].members[1]
        with monkeypatch.context() as patch:
            patch.setattr(moves, "_move_file", _die_after("moved"))
            with pytest.raises(KeyboardInterrupt):
                lib.move_dupes(report, aside)
    Path(victim.path).write_bytes(b"another photo, saved under the name the copy had")
    with Library.open(library) as lib:
        with lib.writing():  # settles the interrupted move
            pass
        assert lib.sql("SELECT state FROM dupe_moves").rows == [("moved",)]
        where = place_of(lib, victim.id)
    assert where.startswith(str(aside)) and os.path.isfile(where)
    assert Path(victim.path).read_bytes() == b"another photo, saved under the name the copy had"


@needs_photos
def test_a_target_that_cannot_take_files_is_one_line_and_moves_nothing(
    imgvec, small_set: list[dupeset.DupeFile], tmp_path: Path
) -> None:
    library = tmp_path / "lib"
    added(imgvec, small_set, library)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    for target, words in [
        ("", "--move-to needs a folder to move the duplicates into"),
        (a_file, f"cannot move duplicates into {a_file}: it is not a folder"),
        (a_file / "sub", f"cannot move duplicates into {a_file / 'sub'}: Not a directory"),
    ]:
        result = imgvec("dupes", "--library", library, "--move-to", target)
        assert result.exit_code == 2, (target, result.stdout, result.stderr)
        assert result.stderr.splitlines() == [f"error: {words}"]
    assert all(f.path.is_file() for f in small_set)
    assert imgvec(
        "sql", "SELECT count(*) AS n FROM dupe_moves", "--library", library, "--json"
    ).json() == [{"n": 0}]


@needs_photos
def test_undo_takes_back_the_latest_run_that_still_has_files_aside(
    imgvec, small_set: list[dupeset.DupeFile], tmp_path: Path
) -> None:
    library, aside = tmp_path / "lib", tmp_path / "aside"
    added(imgvec, small_set, library)
    for name in ("ukbench00000", "ukbench00004"):  # run 1, run 2: one group each
        where = f"path LIKE '%{name}%'"
        moved = imgvec("dupes", "-L", library, "--where", where, "--move-to", aside, "--json")
        assert len(moved.json()["moved"]["moved"]) == 3
    for run in (2, 1):
        undone = imgvec("dupes", "undo", "-L", library, "--json")
        assert undone.exit_code == 0 and undone.json()["run"] == run
        assert len(undone.json()["moved"]) == 3
    assert all(f.path.is_file() for f in small_set)
    assert "Nothing to undo" in imgvec("dupes", "undo", "-L", library).stdout


@needs_photos
def test_exact_copies_are_grouped_at_any_cut_and_changed_files_are_not_moved(
    imgvec, small_set: list[dupeset.DupeFile], tmp_path: Path
) -> None:
    library, aside = tmp_path / "lib", tmp_path / "aside"
    added(imgvec, small_set, library)
    groups = imgvec("dupes", "-L", library, "--threshold", "1", "--json").json()["groups"]
    assert len(groups) == 2 and all(len(g["members"]) == 2 for g in groups)  # only the copies
    assert {g["members"][1]["signal"] for g in groups} == {"exact"}
    report = imgvec("dupes", "-L", library, "--json").json()
    tampered = Path(report["groups"][0]["members"][1]["path"])
    info = tampered.stat()
    data = bytearray(tampered.read_bytes())
    data[-3] ^= 0xFF  # same size, same modification time, other content
    tampered.write_bytes(bytes(data))
    os.utime(tampered, ns=(info.st_atime_ns, info.st_mtime_ns))
    result = imgvec("dupes", "-L", library, "--move-to", aside)
    assert result.exit_code == 1
    assert f"error: {tampered}: not moved: changed since it was added" in result.stderr
    assert tampered.read_bytes() == bytes(data)


# --- only what is new ------------------------------------------------------------------------


@needs_photos
def test_new_and_add_dupes_check_only_what_was_added(
    imgvec, small_set: list[dupeset.DupeFile], tmp_path: Path
) -> None:
    library = tmp_path / "lib"
    added(imgvec, small_set, library)
    assert len(imgvec("dupes", "--library", library, "--json").json()["groups"]) == 2
    assert imgvec("dupes", "--new", "--library", library, "--json").json()["groups"] == []
    extra = tmp_path / "later" / "copy-of-4.png"
    extra.parent.mkdir()
    data, _ = dupeset.VARIANTS["png"]((UKBENCH / "ukbench00004.jpg").read_bytes(), None)  # type: ignore[arg-type]
    extra.write_bytes(data)
    other = tmp_path / "later" / "unrelated.jpg"
    other.write_bytes((UKBENCH / "ukbench00008.jpg").read_bytes())
    result = imgvec("add", extra.parent, *FAKE_ARGS, "--library", library, "--dupes", "--json")
    assert result.exit_code == 0, result.stderr
    groups = result.json()["dupes"]["groups"]
    assert len(groups) == 1 and len(groups[0]["members"]) == 1 + 1 + len(SMALL_VARIANTS)
    assert str(extra) in {m["path"] for m in groups[0]["members"]}
    new = imgvec("dupes", "--new", "--library", library, "--json").json()
    assert new["checked"] == 2  # only the two added since the last dupes run were queried
    assert [len(g["members"]) for g in new["groups"]] == [5]
    assert imgvec("dupes", "--new", "--library", library, "--json").json()["checked"] == 0


@needs_photos
def test_a_move_refused_by_permissions_leaves_the_file_and_the_record_right(
    imgvec, small_set: list[dupeset.DupeFile], tmp_path: Path
) -> None:
    """As a user without root's override: one folder of duplicates cannot be written, so its
    files cannot leave it; the others move, and undo puts those back."""
    from tests.test_faults import cli, error_lines

    library, aside = tmp_path / "lib", tmp_path / "aside"
    added(imgvec, small_set, library)
    root = small_set[0].path.parent.parent
    locked = root / "jpeg_q30"
    locked.chmod(0o555)
    try:
        result = cli("dupes", "--move-to", aside, "--json", library=library, unprivileged=True)
    finally:
        locked.chmod(0o755)
    assert result.exit_code == 1, result.stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 2 and all("/jpeg_q30/" in e and "not moved" in e for e in errors)
    assert all(f.path.is_file() for f in small_set if f.variant == "jpeg_q30")
    moved = json.loads(result.stdout)["moved"]["moved"]
    assert len(moved) == 6 - 2
    states = imgvec("sql", "SELECT state FROM dupe_moves", "--library", library, "--json").json()
    assert sorted(r["state"] for r in states) == ["failed"] * 2 + ["moved"] * 4
    assert not list((aside / "jpeg_q30").glob("*"))  # no half-made file left
    assert len(imgvec("dupes", "undo", "--library", library, "--json").json()["moved"]) == 4
    assert all(f.path.is_file() for f in small_set)


# --- the evaluation, through the CLI ---------------------------------------------------------


@needs_photos
def test_eval_dupes_counts_pairs_on_four_shots_of_one_object(imgvec, tmp_path: Path) -> None:
    """UKBench's first four photos are one object from four viewpoints: 4 x 8 files, 112
    duplicate pairs and 384 sibling pairs, none of which may be grouped."""
    result = imgvec(
        "eval",
        UKBENCH,
        "--groundtruth",
        UKBENCH.parent / "groundtruth.csv",
        "--dupes",
        "--limit",
        "4",
        *FAKE_ARGS,
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert (report["photos"], report["files"]) == (4, 32)
    assert (report["duplicate_pairs"], report["sibling_pairs"]) == (4 * 28, 6 * 64)
    assert report["siblings_grouped"] == 0 and report["false_pairs"] == 0
    assert report["precision"] == 1.0 and report["recall"] >= 0.95
    assert set(report["per_transform"]) == set(dupeset.VARIANTS)
    assert all(t["pairs"] == 4 for t in report["per_transform"].values())
    assert report["per_transform"]["exact"]["recall"] == 1.0
    text = imgvec(  # the table, on one photo (8 files, no siblings): cheap
        "eval",
        UKBENCH,
        "-g",
        UKBENCH.parent / "groundtruth.csv",
        "--dupes",
        "--limit",
        "1",
        *FAKE_ARGS,
    )
    assert text.exit_code == 0 and "1 photos, 8 files" in text.stdout
    assert "0 of 0" in text.stdout and "crop_90 (with its original)" in text.stdout


@needs_photos
def test_new_still_sees_what_was_added_after_compaction_and_gc(
    imgvec, small_set: list[dupeset.DupeFile], tmp_path: Path
) -> None:
    """``index gc`` prunes the change log, but never past the last ``dupes`` run."""
    library = tmp_path / "lib"
    first = [f for f in small_set if f.source == "ukbench00000.jpg"]
    for f in first:
        assert imgvec("add", f.path, *FAKE_ARGS, "--library", library).exit_code == 0
    assert len(imgvec("dupes", "--library", library, "--json").json()["groups"]) == 1
    later = [f.path for f in small_set if f.source == "ukbench00004.jpg"]
    assert imgvec("add", *later, "--library", library).exit_code == 0
    assert imgvec("index", "compact", "--library", library).exit_code == 0
    assert imgvec("index", "gc", "--keep", "0", "--library", library).exit_code == 0
    new = imgvec("dupes", "--new", "--library", library, "--json").json()
    assert new["checked"] == len(later) and [len(g["members"]) for g in new["groups"]] == [4]
