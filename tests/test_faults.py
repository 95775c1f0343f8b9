"""Faults found by trying imgvec on real-world input (issue 11), each a case of a class.

Permission cases run the real CLI in a subprocess without root's override of file modes
(``setpriv --bounding-set=-dac_override,-dac_read_search``), since CI runs as root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from imgvec import scan
from imgvec.api import Library
from imgvec.cli.render import display
from imgvec.storage import store
from tests.conftest import FAKE_ARGS, Run, make_image, set_mtime

RUNNER = Path(__file__).resolve().parent / "run_imgvec.py"
SETPRIV = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
Imgvec = Callable[..., Run]


def cli(
    *args: object, library: Path, unprivileged: bool = False, wrap: list[str] | None = None
) -> Run:
    """The real CLI in a fresh process (file-descriptor-level stderr included)."""
    command = [sys.executable, str(RUNNER), *map(str, args)]
    if unprivileged:
        command = SETPRIV + command
    env = {**os.environ, "IMGVEC_LIBRARY": str(library)}
    done = subprocess.run(
        (wrap or []) + command, env=env, capture_output=True, text=True, timeout=300
    )
    return Run(done.returncode, done.stdout, done.stderr)


def json_of(run: Run) -> Any:
    return json.loads(run.stdout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def assert_only_imgvec_lines(stderr: str) -> None:
    """No traceback, no library diagnostics: every line is one imgvec prints."""
    assert "Traceback" not in stderr
    prefixes = (
        "error: ",
        "ignored: ",
        "Created library",
        "Loading model",
        "Exporting ",
        "Adding",
        "Removed ",
        "The index cannot",
    )
    strays = [line for line in stderr.splitlines() if line and not line.startswith(prefixes)]
    assert not strays, strays


@pytest.fixture
def two_folders(tmp_path: Path) -> Path:
    """p/a and p/b, three photos each."""
    root = tmp_path / "p"
    for i in range(3):
        make_image(root / "a" / f"a{i}.jpg", seed=i)
        make_image(root / "b" / f"b{i}.jpg", seed=10 + i)
    return root


def library_paths(library: Path) -> set[str]:
    with Library.open(library, create=False) as lib:
        return {p for _i, p, _h in store.readable_images(lib.session())}


# --- A. "not seen" is not "deleted" ------------------------------------------------------------


@pytest.mark.parametrize("locked", ["a", "b"])  # b: the last folder walked
def test_unreadable_folder_keeps_its_images_and_is_reported(
    imgvec: Imgvec, two_folders: Path, library: Path, locked: str
) -> None:
    assert imgvec("add", two_folders, *FAKE_ARGS).exit_code == 0
    folder = two_folders / locked
    folder.chmod(0)
    try:
        result = cli("add", two_folders, "--json", library=library, unprivileged=True)
    finally:
        folder.chmod(0o755)
    assert result.exit_code == 1, result.stderr
    report = json_of(result)
    assert report["removed"] == 0
    assert report["kept"] == 3
    assert error_lines(result.stderr) == [f"error: {folder}: cannot list folder: Permission denied"]
    assert len(library_paths(library)) == 6


def test_emptied_folder_keeps_its_images_unless_pruned(
    imgvec: Imgvec, two_folders: Path, library: Path, tmp_path: Path
) -> None:
    """An unmounted drive reads as an empty folder (or no folder at all)."""
    imgvec("add", two_folders, *FAKE_ARGS)
    shutil.move(two_folders / "b", tmp_path / "elsewhere")
    (two_folders / "b").mkdir()  # the mount point, empty

    result = imgvec("add", two_folders, "--json")

    assert result.exit_code == 1
    assert result.json()["removed"] == 0 and result.json()["kept"] == 3
    [line] = error_lines(result.stderr)
    assert line.startswith(f"error: {two_folders / 'b'}: folder is empty but holds 3 library")
    assert "--prune" in line
    assert len(library_paths(library)) == 6

    pruned = imgvec("add", two_folders, "--prune", "--json")
    assert pruned.exit_code == 0, pruned.stderr
    assert pruned.json()["removed"] == 3
    assert len(library_paths(library)) == 3


def test_missing_root_keeps_its_images(imgvec: Imgvec, two_folders: Path, library: Path) -> None:
    imgvec("add", two_folders, *FAKE_ARGS)
    two_folders.rename(two_folders.with_name("renamed"))

    result = imgvec("add", two_folders, "--json")

    assert result.exit_code == 1
    assert result.json()["removed"] == 0 and result.json()["kept"] == 6
    [line] = error_lines(result.stderr)
    assert line.startswith(f"error: {two_folders}: folder is missing but holds 6 library images")
    assert len(library_paths(library)) == 6


def test_deleted_files_and_folders_are_still_removed(
    imgvec: Imgvec, two_folders: Path, library: Path
) -> None:
    imgvec("add", two_folders, *FAKE_ARGS)
    (two_folders / "a" / "a0.jpg").unlink()
    shutil.rmtree(two_folders / "b")

    report = imgvec("add", two_folders, "--json").json()

    assert report["removed"] == 4 and report["kept"] == 0 and report["failed"] == 0
    assert {Path(p).name for p in library_paths(library)} == {"a1.jpg", "a2.jpg"}


def test_a_file_replaced_by_a_folder_is_gone(imgvec: Imgvec, photos: Path, library: Path) -> None:
    imgvec("add", photos, *FAKE_ARGS)
    (photos / "p0.jpg").unlink()
    (photos / "p0.jpg").mkdir()

    report = imgvec("add", photos, "--json").json()

    assert report["removed"] == 1 and report["failed"] == 0 and report["kept"] == 0
    assert str(photos / "p0.jpg") not in library_paths(library)


def test_files_added_by_name_survive_adding_their_parent(
    imgvec: Imgvec, tmp_path: Path, library: Path
) -> None:
    """The walk skips hidden files and does not follow symlinked folders; the library still
    holds what was added by naming it."""
    root = tmp_path / "p"
    hidden = make_image(root / ".hidden.jpg", seed=1)
    make_image(root / "plain.jpg", seed=2)
    make_image(tmp_path / "real" / "r.jpg", seed=3)
    (root / "linked").symlink_to(tmp_path / "real", target_is_directory=True)
    imgvec("add", hidden, root / "linked", *FAKE_ARGS)
    assert len(library_paths(library)) == 2

    report = imgvec("add", root, "--json").json()

    assert report["removed"] == 0 and report["added"] == 1
    assert report["unchanged"] == 2 and report["ignored"] == 0
    assert {Path(p).name for p in library_paths(library)} == {".hidden.jpg", "plain.jpg", "r.jpg"}


def test_folder_deeper_than_the_path_limit_is_reported(
    imgvec: Imgvec, tmp_path: Path, library: Path
) -> None:
    root = tmp_path / "deep"
    make_image(root / "top.jpg", seed=1)
    name = "d" * 250
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(18):  # 18 x 251 bytes: past PATH_MAX (4096)
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        with os.fdopen(os.open("x.jpg", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as out:
            out.write((root / "top.jpg").read_bytes())
    finally:
        os.close(fd)

    result = imgvec("add", root, *FAKE_ARGS, "--json")

    assert result.exit_code == 1
    assert result.json()["added"] == 1
    [line] = error_lines(result.stderr)
    assert "cannot list folder: File name too long" in line


def test_briefly_unreadable_file_keeps_its_vector_and_is_retried(
    imgvec: Imgvec, tmp_path: Path, library: Path
) -> None:
    folder = tmp_path / "p"
    kept = make_image(folder / "kept.jpg", seed=1)
    assert imgvec("add", folder, *FAKE_ARGS).exit_code == 0
    make_image(kept, seed=2)  # changed, and unreadable while the next add runs
    set_mtime(kept, 2_000_000_000_000_000_000)
    new = make_image(folder / "new.jpg", seed=3)  # unreadable when first seen
    kept.chmod(0)
    new.chmod(0)
    try:
        first = cli("add", folder, "--json", library=library, unprivileged=True)
    finally:
        kept.chmod(0o644)
        new.chmod(0o644)
    assert first.exit_code == 1
    reasons = {e["path"]: e["reason"] for e in json_of(first)["errors"]}
    assert reasons == {
        str(kept): "cannot read file: Permission denied",
        str(new): "cannot read file: Permission denied",
    }
    assert library_paths(library) == {str(kept)}  # its old vector is still searchable

    second = imgvec("add", folder, "--json")  # chmod does not change mtimes

    assert second.exit_code == 0, second.stderr
    assert second.json()["updated"] == 2  # both rows: the recorded failure is retried
    assert library_paths(library) == {str(kept), str(new)}


# --- B. per-file problems stay per file --------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        lambda d: [d, d / "sub"],
        lambda d: [d / "sub" / "p4.png", d / "sub" / "p4.png"],
        lambda d: [d, f"{d}/"],
        lambda d: [d, f"{d}/../{d.name}"],
    ],
    ids=["folder-and-subfolder", "file-twice", "trailing-slash", "dotdot"],
)
def test_each_file_once_whatever_the_spelling(
    imgvec: Imgvec, photos: Path, spelling: Callable[[Path], list[Any]]
) -> None:
    roots = spelling(photos)
    result = imgvec("add", *roots, *FAKE_ARGS, "--json")
    assert result.exit_code == 0, result.stderr
    expected = 1 if str(roots[0]).endswith(".png") else 6
    assert result.json()["added"] == expected
    assert imgvec("status", "--json").json()["images"] == expected


def test_damaged_avif_fails_alone_in_add_and_in_query(
    imgvec: Imgvec, photos: Path, tmp_path: Path
) -> None:
    """An AVIF whose image item is missing: libavif's RuntimeError used to stop the batch."""
    from tests.fault_corpus import damaged_avifs, encode, sample_image

    valid = encode(sample_image("RGB"), "AVIF")
    if valid is None:
        pytest.skip("this Pillow cannot write AVIF")
    name, data = next((n, d) for n, d in damaged_avifs(valid).items() if "iloc" in n)
    broken = photos / "broken.avif"
    broken.write_bytes(data)

    added = imgvec("add", photos, *FAKE_ARGS, "--json")
    assert added.exit_code == 1, (name, added.stderr)
    assert added.json()["added"] == 6
    [line] = error_lines(added.stderr)
    assert line.startswith(f"error: {broken}: ")

    query = imgvec("query", broken, photos / "p1.jpg", photos / "p2.jpg", "--json", "-k", "1")
    assert query.exit_code == 1
    answers = query.json()
    assert answers[0]["error"] and answers[0]["results"] == []
    assert [Path(a["results"][0]["path"]).name for a in answers[1:]] == ["p1.jpg", "p2.jpg"]


def test_non_utf8_names_in_query_and_remove_are_one_line_errors(
    imgvec: Imgvec, photos: Path, tmp_path: Path
) -> None:
    imgvec("add", photos, *FAKE_ARGS)
    odd = os.path.join(os.fsencode(tmp_path), b"bad\xff.jpg")
    shutil.copyfile(photos / "p0.jpg", odd)
    name = os.fsdecode(odd)

    query = imgvec("query", name, "--json", "-k", "1")
    assert query.exit_code == 0, query.stderr
    assert query.json()[0]["vector"] == "embedded"
    assert query.json()[0]["results"][0]["path"] == str(photos / "p0.jpg")

    removed = imgvec("remove", name)
    assert removed.exit_code == 1
    assert error_lines(removed.stderr) == [f"error: {display(name)}: not in the library"]


# --- C. untrusted text is printed verbatim -----------------------------------------------------


def test_paths_and_values_that_look_like_markup_print_verbatim(
    imgvec: Imgvec, tmp_path: Path
) -> None:
    folder = tmp_path / "[old]"
    exif = Image.Exif()
    exif[0x010F] = "[/] [bold]Maker"
    image = make_image(folder / "[x]y.jpg", seed=1)
    Image.open(image).save(image, exif=exif.tobytes())
    imgvec("add", folder, *FAKE_ARGS)

    query = imgvec("query", image, "-k", "1")
    assert query.exit_code == 0, query.stderr
    assert str(image) in query.stdout  # as the table's title and as its first hit
    assert query.stdout.count("[x]y.jpg") == 2

    sql = imgvec("sql", 'SELECT camera_make AS "[red]make", path FROM photos')
    assert sql.exit_code == 0, sql.stderr
    assert "[/] [bold]Maker" in sql.stdout and "[red]make" in sql.stdout


# --- D. reading needs no write access; resource errors are one line ----------------------------


def test_read_only_library_answers_reads_and_refuses_writes(
    imgvec: Imgvec, photos: Path, library: Path, tmp_path: Path
) -> None:
    assert imgvec("add", photos, *FAKE_ARGS).exit_code == 0
    subprocess.run(["chmod", "-R", "a-w", str(library)], check=True)
    try:
        for command in (
            ["status"],
            ["query", photos / "p1.jpg"],
            ["sql", "SELECT 1"],
            ["index", "verify"],
            ["model", "list"],
        ):
            result = cli(*command, "--json", library=library, unprivileged=True)
            assert result.exit_code == 0, (command, result.stderr)
            assert result.stderr == "", (command, result.stderr)
            if command[0] == "query":
                assert Path(json_of(result)[0]["results"][0]["path"]).name == "p1.jpg"
        make_image(photos / "new.jpg", seed=50)
        write = cli("add", photos, library=library, unprivileged=True)
        assert write.exit_code == 2
        assert write.stderr.strip().splitlines() == [
            f"error: the library at {library} is read-only here; this command writes to it"
        ]
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(library)], check=True)


def require_mounts(mount: Path) -> None:
    """Skip, saying why, where this process may not mount a tmpfs in a private mount
    namespace (the test runs its commands in one, so nothing needs cleaning up)."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to make a small file system")
    mount.mkdir(exist_ok=True)
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {mount}"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {probe.stderr.strip()}")


def test_full_disk_is_one_line_and_loses_nothing(tmp_path: Path) -> None:
    """The library lives on a small tmpfs: 20 photos are added, the disk is filled, 60 more
    are added (exit 2, one line); query and verify still work on what was committed, and once
    space is freed the same add finishes."""
    folder = tmp_path / "many"
    for i in range(80):
        make_image(folder / f"{i:03}.png", seed=i, size=(64, 48))
    first = tmp_path / "first"
    first.mkdir()
    for i in range(20):
        os.link(folder / f"{i:03}.png", first / f"{i:03}.png")
    disk = tmp_path / "disk"
    require_mounts(disk)
    run = f"{sys.executable} {RUNNER}"
    out = tmp_path
    script = textwrap.dedent(
        f"""
        mount -t tmpfs -o size=4m tmpfs "{disk}" || exit 99
        export IMGVEC_LIBRARY="{disk}/lib"
        {run} add "{first}" {" ".join(FAKE_ARGS)} > /dev/null 2>&1 || exit 98
        dd if=/dev/zero of="{disk}/filler" bs=4k > /dev/null 2>&1
        {run} add "{folder}" --batch-size 8 > /dev/null 2> "{out}/add.err"
        echo $? > "{out}/add.rc"
        {run} query "{folder}/003.png" -k 1 --json > "{out}/query.out" 2> "{out}/query.err"
        echo $? > "{out}/query.rc"
        {run} index verify > /dev/null 2> "{out}/verify.err"
        echo $? > "{out}/verify.rc"
        rm "{disk}/filler"
        {run} add "{folder}" --json > "{out}/again.out" 2> "{out}/again.err"
        echo $? > "{out}/again.rc"
        """
    )
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    def read(name: str) -> str:
        return (tmp_path / name).read_text()

    assert read("add.rc").strip() == "2", read("add.err")
    last = read("add.err").strip().splitlines()[-1]
    assert last.startswith("error: cannot write (")
    assert any(
        reason in last
        for reason in ("database or disk is full", "no space left on device", "disk i/o error")
    ), last
    assert_only_imgvec_lines(read("add.err"))
    assert read("query.rc").strip() == "0", read("query.err")
    [answer] = json.loads(read("query.out"))
    assert Path(answer["results"][0]["path"]).name == "003.png"
    assert read("verify.rc").strip() == "0", read("verify.err")
    assert read("again.rc").strip() == "0", read("again.err")
    assert json.loads(read("again.out"))["failed"] == 0


def test_ctrl_c_during_start_up_is_one_line_and_exit_130(tmp_path: Path) -> None:
    """A Ctrl-C while the command's modules load: simulated by an import hook that raises
    KeyboardInterrupt when SQLAlchemy is imported."""
    script = textwrap.dedent(
        """
        import sys

        class CtrlC:
            def find_spec(self, name, path=None, target=None):
                if name == "sqlalchemy":
                    raise KeyboardInterrupt
                return None

        sys.meta_path.insert(0, CtrlC())
        sys.argv = ["imgvec", "status"]
        from imgvec.__main__ import main
        main()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "IMGVEC_LIBRARY": str(tmp_path / "lib")},
        timeout=120,
    )
    assert done.returncode == 130
    assert done.stderr == "error: interrupted\n"


def test_rerun_remove_after_a_kill_catches_the_index_up(
    imgvec: Imgvec, photos: Path, library: Path
) -> None:
    imgvec("add", photos, *FAKE_ARGS)
    with Library.open(library) as lib, lib.session() as session, session.begin():
        # What a remove killed after its commit leaves: rows gone, index behind.
        store.delete_images(session, store.image_ids_under(session, [str(photos / "sub")]))
    assert imgvec("status", "--json").json()["index"]["stale"] is True

    result = imgvec("remove", photos / "sub")

    assert result.exit_code == 1
    assert error_lines(result.stderr) == [f"error: {photos / 'sub'}: not in the library"]
    assert imgvec("status", "--json").json()["index"]["stale"] is False


def test_a_writing_command_with_nothing_to_do_deletes_leftovers(
    imgvec: Imgvec, photos: Path, library: Path
) -> None:
    imgvec("add", photos, *FAKE_ARGS)
    strays = [
        library / "index" / "m1-base-0123456789ab.faiss",
        library / "index" / ".tmp-0123-m1-delta-0123456789ab.faiss",
    ]
    for stray in strays:
        stray.write_bytes(b"left by a killed compact")
    foreign = library / "index" / "notes.txt"
    foreign.write_text("not ours")

    assert imgvec("add", photos, "--json").json()["unchanged"] == 6

    assert not any(stray.exists() for stray in strays)
    assert foreign.exists()


# --- E. the terminal stays imgvec's ------------------------------------------------------------


def test_other_files_are_counted_as_ignored_and_listed_with_verbose(
    imgvec: Imgvec, photos: Path
) -> None:
    (photos / "notes.txt").write_text("hello\n")
    (photos / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")

    quiet = imgvec("add", photos, *FAKE_ARGS)
    assert "ignored 2" in quiet.stdout
    assert "notes.txt" not in quiet.stderr

    verbose = imgvec("add", photos, "--verbose")
    ignored = sorted(line for line in verbose.stderr.splitlines() if line.startswith("ignored: "))
    assert ignored == [
        f"ignored: {photos / '.DS_Store'}: hidden",
        f"ignored: {photos / 'notes.txt'}: not an image",
    ]


@pytest.mark.parametrize("fmt", ["QOI", "PCX", "SGI", "ICNS", "TGA", "DDS", "XBM"])
def test_every_still_image_format_pillow_decodes_is_recognised(
    imgvec: Imgvec, tmp_path: Path, fmt: str
) -> None:
    """By extension and, renamed without one, by content."""
    from PIL import Image as PILImage

    PILImage.init()
    extension = next(e for e, f in PILImage.registered_extensions().items() if f == fmt)
    folder = tmp_path / "formats"
    mode = "1" if fmt == "XBM" else "RGB"
    size = (64, 64) if fmt == "ICNS" else (40, 30)
    make_image(folder / f"picture{extension}", seed=1, size=size, fmt=fmt, mode=mode)
    if fmt != "TGA":  # Pillow recognises TGA by its extension only
        make_image(folder / "no-extension", seed=2, size=size, fmt=fmt, mode=mode)

    result = imgvec("add", folder, *FAKE_ARGS, "--json")

    assert result.exit_code == 0, result.stderr
    assert result.json()["added"] == len(os.listdir(folder))
    assert result.json()["ignored"] == 0


def test_recognised_extensions_leave_out_what_is_not_a_photo() -> None:
    extensions = scan.image_extensions()
    assert {".jpg", ".png", ".qoi", ".pcx", ".sgi", ".icns", ".tga", ".dds", ".heic"} <= extensions
    assert not {".pdf", ".h5", ".mpg", ".mpeg", ".eps", ".txt", ".grib"} & extensions


# --- all of it at once --------------------------------------------------------------------------

PEAK_MEMORY_BOUND_MB = 2500
"""The whole add of the corpus below, torch included: about 850 MB here, once 2.0 GB under a
full CI run; before the aspect-ratio bound one 1x60000 PNG alone took 15.6 GB more, a 10000x1
one 2.6 GB more. Measured with glibc's own malloc policy (IMGVEC_KEEP_FREED_MEMORY=0), so
that freed memory the tuned allocator keeps for reuse does not count as need."""


def test_a_folder_of_broken_and_odd_files_is_added_or_reported_file_by_file(
    tmp_path: Path, library: Path
) -> None:
    from tests.fault_corpus import build_fault_corpus

    folder = tmp_path / "corpus"
    written = build_fault_corpus(folder, seed=0)
    assert len(written) >= 300
    peak = tmp_path / "peak-kib"
    env = {
        **os.environ,
        "IMGVEC_LIBRARY": str(library),
        "IMGVEC_TEST_MAXRSS_FILE": str(peak),
        "IMGVEC_KEEP_FREED_MEMORY": "0",
    }

    done = subprocess.run(
        [sys.executable, str(RUNNER), "add", str(folder), *FAKE_ARGS, "--json", "--verbose"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert done.returncode == 1, done.stderr[-3000:]
    assert_only_imgvec_lines(done.stderr)
    report = json.loads(done.stdout)
    errors = {e["path"]: e["reason"] for e in report["errors"]}
    assert all(reason and "\n" not in reason for reason in errors.values())
    assert len(error_lines(done.stderr)) == len(errors) == report["failed"]
    ignored = [line for line in done.stderr.splitlines() if line.startswith("ignored: ")]
    assert len(ignored) == report["ignored"]
    ignored_paths = {line.removeprefix("ignored: ").rsplit(": ", 1)[0] for line in ignored}
    added = library_paths(library)
    for path in map(scan.normalize, written):  # each in exactly one of the three
        assert [path in added, path in errors, display(path) in ignored_paths].count(True) == 1
    assert report["added"] + report["failed"] + report["ignored"] == len(written)
    assert int(peak.read_text()) / 1024 < PEAK_MEMORY_BOUND_MB


def test_help_prints_its_brackets(imgvec: Imgvec) -> None:
    """Help texts are Rich markup too: "[default: ...]" used to vanish from every --help."""
    result = imgvec("add", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "[env: IMGVEC_LIBRARY; default: the per-user data directory]" in text
    assert "[default: vit_b_16, or the library's model]" in text


def test_a_database_url_that_cannot_be_used_is_one_line_without_its_password(
    imgvec: Imgvec,
) -> None:
    for url, words in [
        ("bogus://x", "cannot use the database URL bogus://x: Can't load plugin"),
        (
            "postgresql+psycopg://someone:secret@127.0.0.1:1/x",
            "cannot open the database postgresql+psycopg://someone:***@127.0.0.1:1/x: ",
        ),
    ]:
        result = imgvec("status", "--db", url)
        assert result.exit_code == 2, result.stderr
        [line] = result.stderr.splitlines()
        assert line.startswith(f"error: {words}") and "secret" not in line, line
