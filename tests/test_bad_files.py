"""End to end through the CLI: a folder of good images mixed with every kind of bad file.

Bad files are reported one per line on stderr and in the JSON report, never stop the batch, and
are recorded in the library when they have a storable path (decode and read failures); path
problems found by ``stat`` and non-UTF-8 names are reported on every run instead.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imgvec import scan
from imgvec.cli.render import display
from tests.conftest import FAKE_ARGS, Run, make_image, set_mtime
from tests.test_images import bilevel_png, noise_jpeg

Imgvec = Callable[..., Run]


@dataclass(frozen=True)
class BadFile:
    path: str
    reason: str
    """A lower-case fragment the reported reason must contain."""
    recorded: bool
    """Whether the failure is stored as a library row (shown by `status`, unchanged next time)."""


@dataclass
class Corpus:
    folder: Path
    good: list[str] = field(default_factory=list)
    bad: list[BadFile] = field(default_factory=list)

    @property
    def recorded(self) -> list[BadFile]:
        return [b for b in self.bad if b.recorded]

    @property
    def unrecorded(self) -> list[BadFile]:
        return [b for b in self.bad if not b.recorded]

    def bad_named(self, name: str) -> BadFile:
        return next(b for b in self.bad if os.path.basename(b.path) == name)


ODD_GOOD_NAMES = ["with space.jpg", "café ñ.jpg", "-dash.jpg", "new\nline.jpg"]


def build_corpus(folder: Path, *, non_utf8: bool = False) -> Corpus:
    folder.mkdir(parents=True)
    corpus = Corpus(folder)
    base = scan.normalize(folder)

    def good(name: str, seed: int) -> None:
        make_image(folder / name, seed=seed)
        corpus.good.append(os.path.join(base, name))

    def bad(name: str, content: bytes | None, reason: str, *, recorded: bool = True) -> Path:
        path = folder / name
        if content is not None:
            path.write_bytes(content)
        corpus.bad.append(BadFile(os.path.join(base, name), reason, recorded))
        return path

    for seed, name in enumerate(["good0.jpg", "good1.png", "good2.jpg", *ODD_GOOD_NAMES]):
        good(name, seed)

    junk = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    jpeg = noise_jpeg()
    bad("truncated.jpg", jpeg[: int(len(jpeg) * 0.6)], "truncated")
    bad("corrupt.jpg", b"\xff\xd8\xff\xe0" + junk, "corrupt")
    bad("empty.jpg", b"", "empty")
    bad("text.png", b"just some text, honest\n" * 10, "not an image")
    bad("x.heic", b"\x00\x00\x00\x18ftypheic" + junk, "unsupported")
    bad("bomb.png", bilevel_png(14000, 13000), "too large")
    os.mkfifo(bad("pipe.jpg", None, "not a regular file", recorded=False))
    os.symlink(folder / "nowhere.jpg", bad("gone.jpg", None, "no such file", recorded=False))
    if non_utf8:
        name = b"bad\xff.jpg"
        fd = os.open(os.path.join(os.fsencode(folder), name), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, noise_jpeg(seed=7))
        finally:
            os.close(fd)
        bad(os.fsdecode(name), None, "utf-8", recorded=False)

    (folder / "notes.txt").write_text("not an image, and not named like one\n")
    return corpus


@pytest.fixture
def corpus(tmp_path: Path) -> Corpus:
    return build_corpus(tmp_path / "mixed")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def errors_by_path(report: dict[str, Any]) -> dict[str, str]:
    paths = [e["path"] for e in report["errors"]]
    duplicated = [p for p, n in Counter(paths).items() if n > 1]
    assert not duplicated, f"reported more than once: {duplicated}"
    return {e["path"]: e["reason"] for e in report["errors"]}


def assert_reasons(reported: dict[str, str], expected: list[BadFile]) -> None:
    assert sorted(reported) == sorted(b.path for b in expected)
    for bad in expected:
        assert bad.reason in reported[bad.path].lower(), (bad.path, reported[bad.path])


def status(imgvec: Imgvec) -> dict[str, Any]:
    result = imgvec("status", "--json")
    assert result.exit_code == 0, result.stderr
    return result.json()


# --- the first add ---------------------------------------------------------------------------


def test_bad_files_are_reported_and_the_rest_is_added(imgvec: Imgvec, corpus: Corpus) -> None:
    result = imgvec("add", corpus.folder, *FAKE_ARGS, "--json")

    assert result.exit_code == 1, result.stderr
    report = result.json()
    assert report["added"] == len(corpus.good) == 7
    assert report["failed"] == len(corpus.bad) == 8
    assert report["updated"] == report["moved"] == report["unchanged"] == report["removed"] == 0
    assert report["known_failures"] == 0
    assert report["interrupted"] is False

    reported = errors_by_path(report)
    assert_reasons(reported, corpus.bad)
    assert all(reason.strip() for reason in reported.values())

    expected_lines = [f"error: {display(path)}: {reason}" for path, reason in reported.items()]
    assert sorted(error_lines(result.stderr)) == sorted(expected_lines)
    assert "notes.txt" not in result.stderr + result.stdout


def test_status_counts_images_and_recorded_failures(imgvec: Imgvec, corpus: Corpus) -> None:
    imgvec("add", corpus.folder, *FAKE_ARGS, "--json")

    info = status(imgvec)

    assert info["images"] == len(corpus.good)
    assert info["failed"] == len(corpus.recorded) == 6
    failures = {f["path"]: f["reason"] for f in info["failures"]}
    assert_reasons(failures, corpus.recorded)


def test_oddly_named_good_images_can_be_queried(imgvec: Imgvec, corpus: Corpus) -> None:
    imgvec("add", corpus.folder, *FAKE_ARGS, "--json")

    for path in corpus.good[:1] + corpus.good[-len(ODD_GOOD_NAMES) :]:
        result = imgvec("query", path, "--json", "-k", "3")
        assert result.exit_code == 0, result.stderr
        [answer] = result.json()
        assert answer["error"] is None
        assert answer["vector"] == "stored"
        hits = answer["results"]
        assert len(hits) == 3
        assert hits[0]["path"] == path
        assert hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
        assert {h["path"] for h in hits} <= set(corpus.good)


# --- adding the same folder again -------------------------------------------------------------


def test_second_add_skips_known_failures_but_repeats_path_problems(
    imgvec: Imgvec, corpus: Corpus
) -> None:
    """Recorded failures are unchanged files (counted in known_failures, not failed); the
    unrecordable ones (stat problems) are met afresh and fail again, so the exit code stays 1."""
    imgvec("add", corpus.folder, *FAKE_ARGS, "--json")

    result = imgvec("add", corpus.folder, "--json")

    assert result.exit_code == 1, result.stderr
    report = result.json()
    assert report["unchanged"] == len(corpus.good) + len(corpus.recorded)
    assert report["known_failures"] == len(corpus.recorded)
    assert report["failed"] == len(corpus.unrecorded) == 2
    assert report["added"] == report["updated"] == report["moved"] == report["removed"] == 0
    assert_reasons(errors_by_path(report), corpus.unrecorded)
    assert len(error_lines(result.stderr)) == len(corpus.unrecorded)
    assert status(imgvec)["failed"] == len(corpus.recorded)


def test_second_add_with_only_recorded_failures_exits_0(imgvec: Imgvec, tmp_path: Path) -> None:
    folder = tmp_path / "some-bad"
    make_image(folder / "good.jpg", seed=1)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 nope")
    first = imgvec("add", folder, *FAKE_ARGS, "--json")
    assert first.exit_code == 1
    assert first.json()["failed"] == 1

    second = imgvec("add", folder, "--json")

    assert second.exit_code == 0, second.stderr
    assert second.json()["failed"] == 0
    assert second.json()["known_failures"] == 1
    assert second.json()["unchanged"] == 2
    assert error_lines(second.stderr) == []


def test_fixed_bad_file_is_updated_and_no_longer_fails(imgvec: Imgvec, corpus: Corpus) -> None:
    imgvec("add", corpus.folder, *FAKE_ARGS, "--json")
    fixed = corpus.bad_named("truncated.jpg")
    old_mtime = os.stat(fixed.path).st_mtime_ns
    make_image(Path(fixed.path), seed=99)
    set_mtime(Path(fixed.path), old_mtime + 10**9)

    result = imgvec("add", corpus.folder, "--json")

    assert result.exit_code == 1  # the FIFO and the broken symlink still fail
    report = result.json()
    assert report["updated"] == 1
    assert report["added"] == 0
    assert report["failed"] == len(corpus.unrecorded)
    assert report["known_failures"] == len(corpus.recorded) - 1
    assert report["unchanged"] == len(corpus.good) + len(corpus.recorded) - 1
    assert fixed.path not in errors_by_path(report)
    info = status(imgvec)
    assert info["images"] == len(corpus.good) + 1
    assert info["failed"] == len(corpus.recorded) - 1
    assert fixed.path not in {f["path"] for f in info["failures"]}
    [answer] = imgvec("query", fixed.path, "--json", "-k", "1").json()
    assert answer["vector"] == "stored"
    assert answer["results"][0]["path"] == fixed.path


# --- names that are hard to print or store ----------------------------------------------------


def test_non_utf8_name_is_reported_and_does_not_stop_the_batch(
    imgvec: Imgvec, tmp_path: Path
) -> None:
    """Text output; the JSON report is tested below."""
    corpus = build_corpus(tmp_path / "mixed", non_utf8=True)
    odd = corpus.bad_named("bad\udcff.jpg")

    result = imgvec("add", corpus.folder, *FAKE_ARGS)

    assert result.exit_code == 1, result.stderr
    assert result.stdout.strip() == (
        f"Added {len(corpus.good)}, updated 0, moved 0, unchanged 0, removed 0, "
        f"failed {len(corpus.bad)}, ignored 1"
    )
    lines = error_lines(result.stderr)
    assert len(lines) == len(corpus.bad) == 9
    for bad in corpus.bad:
        [line] = [ln for ln in lines if ln.startswith(f"error: {display(bad.path)}: ")]
        assert bad.reason in line.lower()
    assert f"error: {display(odd.path)}: " in result.stderr
    assert "bad\\udcff.jpg" in display(odd.path)
    info = status(imgvec)
    assert info["images"] == len(corpus.good)
    assert info["failed"] == len(corpus.recorded)

    again = imgvec("add", corpus.folder)
    assert again.exit_code == 1
    assert f"failed {len(corpus.unrecorded)}, " in again.stdout
    assert f"({len(corpus.recorded)} unchanged files still unreadable" in again.stdout


def test_json_report_can_name_a_non_utf8_file(imgvec: Imgvec, tmp_path: Path) -> None:
    corpus = build_corpus(tmp_path / "mixed", non_utf8=True)
    result = imgvec("add", corpus.folder, *FAKE_ARGS, "--json")
    assert result.exit_code == 1
    report = result.json()
    assert report["failed"] == len(corpus.bad)
    assert any("UTF-8" in e["reason"] for e in report["errors"])


def test_error_lines_print_names_literally(imgvec: Imgvec, tmp_path: Path) -> None:
    folder = tmp_path / "emoji"
    folder.mkdir()
    (folder / "a:smile:b.jpg").write_bytes(b"not a jpeg")
    result = imgvec("add", folder, *FAKE_ARGS)
    assert result.exit_code == 1
    assert f"error: {display(scan.normalize(folder / 'a:smile:b.jpg'))}: " in result.stderr


# --- special files ----------------------------------------------------------------------------


def test_fifo_without_image_extension_is_not_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    # A writer holding the FIFO open with data in it keeps this test from hanging; whether the
    # data is still there afterwards tells whether the walk opened and read the FIFO.
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        signature = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
        os.write(fd, signature)
        found = list(scan.walk([str(tmp_path)]))
        assert not any(isinstance(item, scan.FoundFile) for item in found)
        try:
            left = os.read(fd, 64)
        except BlockingIOError:
            left = b""
        assert left == signature, "the walk read from a FIFO (with no writer it would hang)"
    finally:
        os.close(fd)


def test_fifo_named_directly_is_reported_not_read(imgvec: Imgvec, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = imgvec("add", fifo, *FAKE_ARGS, "--json")
    assert result.exit_code == 1
    assert result.json()["errors"] == [
        {"path": scan.normalize(fifo), "reason": "not a regular file"}
    ]
