"""``imgvec dupes --move-to DIR`` and ``imgvec dupes undo``: move duplicates aside, and back.

Nothing is deleted. Each move is recorded before the file moves (state ``moving``, or
``returning`` for an undo) and settled after (``moved``, ``undone``; ``failed`` when the file
stayed). The image row follows its file, so a moved file keeps its vector and is never embedded
again. A move is one ``rename`` (atomic), or across file systems a copy to a temporary name,
fsync, rename into place, then unlink of the original. A run killed half-way leaves records in
``moving``/``returning``; the next writer settles each from where the file is
(:func:`settle_interrupted`), so every file is at its old place or its new one, recorded so.
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import os
import shutil
from pathlib import Path

from imgvec.atomic import fsync_dir
from imgvec.errors import ImgvecError
from imgvec.ops.parts import Parts
from imgvec.scan import sha256_file
from imgvec.storage import store
from imgvec.storage.schema import DupeMove
from imgvec.types import DupesReport, FileError, MovedFile, MoveReport

TEMP_SUFFIX = ".imgvec-moving"


def move_aside(parts: Parts, report: DupesReport, target: str) -> MoveReport:
    """Move every non-keeper of the report's groups into ``target``, keeping their paths
    relative to the deepest folder that holds them all. A file that vanished, changed since it
    was indexed, or whose new name is taken, stays, with a one-line reason. The caller holds the
    write lock."""
    doomed = [(m, g.keeper) for g in report.groups for m in g.members if not m.keep]
    result = MoveReport()
    if not doomed:
        return result
    check_target(parts, target)
    base = os.path.commonpath([os.path.dirname(m.path) for m, _ in doomed])
    with parts.sessions() as session:
        result.run = store.last_move_run(session) + 1
    for member, keeper in doomed:
        destination = os.path.join(target, os.path.relpath(member.path, base))
        reason = _refuse(parts, member.id, member.path, destination)
        if reason is not None:
            parts.fail(result.errors, member.path, f"not moved: {reason}")
            continue
        with parts.sessions() as session, session.begin():
            move_id = store.record_move(
                session, result.run, member.id, keeper.id, member.path, destination
            ).id
        try:
            _move_file(member.path, destination)
        except OSError as error:
            with parts.sessions() as session, session.begin():
                store.settle_move(session, move_id, "failed", None)
            parts.fail(result.errors, member.path, f"not moved: {_reason(error)}")
            continue
        with parts.sessions() as session, session.begin():
            store.settle_move(session, move_id, "moved", destination)
        result.moved.append(MovedFile(member.id, member.path, destination))
    return result


def undo(parts: Parts, every_run: bool = False) -> MoveReport:
    """Move back the files of the latest ``--move-to`` run that has files still moved
    (``every_run``: of all runs). A file whose old place is taken again, or that is no longer
    where it was moved, stays, with a one-line reason. The caller holds the write lock."""
    result = MoveReport()
    with parts.sessions() as session:
        run = None if every_run else store.last_move_run(session, "moved")
        pending = [_plain(m) for m in store.moves(session, ("moved",), run)]
    result.run = run or 0
    for move in pending:
        reason = _refuse(parts, move.image_id, move.to_path, move.from_path)
        if reason is not None:
            parts.fail(result.errors, move.to_path, f"not moved back: {reason}")
            continue
        with parts.sessions() as session, session.begin():
            store.settle_move(session, move.id, "returning", None)
        try:
            _move_file(move.to_path, move.from_path)
        except OSError as error:
            with parts.sessions() as session, session.begin():
                store.settle_move(session, move.id, "moved", None)
            parts.fail(result.errors, move.to_path, f"not moved back: {_reason(error)}")
            continue
        with parts.sessions() as session, session.begin():
            store.settle_move(session, move.id, "undone", move.from_path)
        result.moved.append(MovedFile(move.image_id, move.to_path, move.from_path))
    return result


def settle_interrupted(parts: Parts) -> list[FileError]:
    """Settle moves a killed run left half-done, from where each file is now. Run by every
    writer before it writes (:meth:`imgvec.api.Library.writing`)."""
    problems: list[FileError] = []
    with parts.sessions() as session:
        open_moves = [_plain(m) for m in store.moves(session, ("moving", "returning"))]
    for move in open_moves:
        forward = move.state == "moving"
        source, destination = (
            (move.from_path, move.to_path) if forward else (move.to_path, move.from_path)
        )
        done, stayed = "moved" if forward else "undone", "failed" if forward else "moved"
        at_source, at_destination = os.path.lexists(source), os.path.lexists(destination)
        _remove_temp(destination)
        if at_destination and at_source and not _same_file(source, destination):
            # Two different files: one is ours, the other took a name since (a camera reusing
            # the old name); the content hash tells which, and the other is not ours to touch.
            with parts.sessions() as session:
                image = store.image(session, move.image_id)
            ours = image is not None and _sha256(destination) == image.content_hash
            at_source, at_destination = not ours, ours
        elif at_destination and at_source:  # linked or copied, old name not yet removed
            try:
                os.unlink(source)  # finish the move
                at_source = False
            except OSError:
                try:
                    os.unlink(destination)  # or take it back
                    at_destination = False
                except OSError as error:
                    parts.fail(problems, source, f"cannot settle an interrupted move: {error}")
                    continue
        with parts.sessions() as session, session.begin():
            if at_destination:
                store.settle_move(session, move.id, done, destination)
            else:
                store.settle_move(session, move.id, stayed, None)
                if not at_source:
                    parts.fail(problems, source, "was being moved by imgvec dupes and is gone")
    return problems


def _plain(move: DupeMove) -> DupeMove:
    """A detached copy (the session that loaded it is closed)."""
    return DupeMove(
        id=move.id,
        run=move.run,
        image_id=move.image_id,
        keeper_id=move.keeper_id,
        from_path=move.from_path,
        to_path=move.to_path,
        state=move.state,
    )


def _refuse(parts: Parts, image_id: int, source: str, destination: str) -> str | None:
    """Why a file must not be moved: gone, changed since indexed (size, modification time, or
    content: its SHA-256 is read again), or its new name taken."""
    with parts.sessions() as session:
        row = store.image(session, image_id)
        known = None if row is None else (row.path, row.size, row.mtime_ns, row.content_hash)
    if known is None or known[0] != source:
        return "no longer in the library at this path"
    try:
        info = os.stat(source)
        if (info.st_size, info.st_mtime_ns) != known[1:3] or sha256_file(source) != known[3]:
            return "changed since it was added (run imgvec add first)"
    except FileNotFoundError:
        return "vanished since it was added"
    except OSError as error:
        return _reason(error)
    if os.path.lexists(destination):
        return f"{destination} already exists"
    return None


def check_target(parts: Parts, target: str) -> None:
    """Refuse, before anything moves, a target inside the library's folder, or one that is not
    a folder or cannot be written (made if missing, and a file created and deleted in it):
    ImgvecError naming it (one line, not one per file)."""
    root = os.path.realpath(parts.root)
    if os.path.commonpath([root, os.path.realpath(target)]) == root:
        raise ImgvecError(f"cannot move duplicates into the library's own folder ({parts.root})")
    if os.path.lexists(target) and not os.path.isdir(target):
        raise ImgvecError(f"cannot move duplicates into {target}: it is not a folder")
    try:
        os.makedirs(target, exist_ok=True)
        probe = os.path.join(target, f".imgvec-probe-{os.getpid()}")
        with open(probe, "x"):
            pass
        os.unlink(probe)
    except OSError as error:
        raise ImgvecError(f"cannot move duplicates into {target}: {_reason(error)}") from None


def _sha256(path: str) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None


def _same_file(a: str, b: str) -> bool:
    """Two names of one file (a hard link), or two files with the same bytes (a copy)."""
    try:
        return os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def _move_file(source: str, destination: str) -> None:
    """Move one file: never replaces an existing file; on failure the source stays."""
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    try:
        os.link(source, destination)  # fails if the name is taken (no silent replace)
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
            raise
        _copy_then_unlink(source, destination)
        return
    _unlink_or_take_back(source, destination)
    fsync_dir(Path(os.path.dirname(source)))
    fsync_dir(Path(os.path.dirname(destination)))


def _unlink_or_take_back(source: str, destination: str) -> None:
    """Remove the old name; if that is refused (a read-only folder), remove the new one
    instead, so the file is only at its old place, and raise."""
    try:
        os.unlink(source)
    except OSError:
        os.unlink(destination)
        raise


def _copy_then_unlink(source: str, destination: str) -> None:
    temp = destination + TEMP_SUFFIX
    try:
        shutil.copy2(source, temp)  # keeps mtime_ns: the library sees the file unchanged
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        if os.path.lexists(destination):
            raise FileExistsError(errno.EEXIST, "name taken", destination)
        os.rename(temp, destination)
    except BaseException:
        _remove_temp(destination)
        raise
    fsync_dir(Path(os.path.dirname(destination)))
    _unlink_or_take_back(source, destination)
    fsync_dir(Path(os.path.dirname(source)))


def _remove_temp(destination: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(destination + TEMP_SUFFIX)


def _reason(error: OSError) -> str:
    return error.strerror or str(error)
