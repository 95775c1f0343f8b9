"""``imgvec serve --watch DIR``: keep folders in the library as files appear, change and go.

watchdog (inotify on Linux, FSEvents on macOS, ReadDirectoryChangesW on Windows) reports each
change; changes are debounced into batches: a batch is taken once the folders have been quiet for
:data:`QUIET_S` seconds (a copy of many files is one batch), or at the latest :data:`LONGEST_S`
after its first change (a folder that never stops changing is still kept up). Each batch is the
same incremental add as ``imgvec add`` of the folders that changed: unchanged files cost a stat,
moves reuse vectors, removed files leave the library. Changes inside the library folder itself
(thumbnails, index files) are ignored.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

QUIET_S = 2.0
"""Seconds without a change before a batch is added."""
LONGEST_S = 30.0
"""Seconds after a batch's first change at which it is added even if changes go on."""
IGNORED_EVENTS = frozenset({"opened", "closed_no_write", "attrib"})
"""Events that change nothing imgvec stores (reads; permission bits are seen at the next add)."""


def folders_to_add(changed: Iterable[str], roots: list[Path]) -> list[str]:
    """The folders to add again for a set of changed paths: each path's folder (its nearest
    existing ancestor when it is gone), within the watched ``roots`` and never above one (a
    watched folder that is gone adds nothing: its images stay, as ``imgvec add`` keeps those of
    a missing folder), without folders that lie under another one of the list (adding a folder
    covers what is under it). Sorted."""
    found: set[Path] = set()
    for path in map(Path, changed):
        root = next((r for r in roots if path == r or r in path.parents), None)
        if root is None:
            continue
        folder = path if path == root or path.is_dir() else path.parent
        while folder != root and not folder.is_dir():
            folder = folder.parent
        if folder.is_dir():  # never above the root: a watched folder that is gone adds nothing
            found.add(folder)
    top = [f for f in found if not any(other in f.parents for other in found)]
    return sorted(map(str, top))


class Watcher(FileSystemEventHandler):
    """Watches ``roots`` and calls ``apply(folders)`` with each batch, on its own thread; the
    first batch is the roots themselves (what changed while no one watched). ``apply`` returns
    False to have the batch taken again with the next one (the library was busy); an exception
    is given to ``failed`` and the watching goes on."""

    def __init__(
        self,
        roots: list[str | os.PathLike[str]],
        apply: Callable[[list[str]], bool],
        failed: Callable[[BaseException], None],
        ignore: Path | None = None,
        quiet_s: float = QUIET_S,
        longest_s: float = LONGEST_S,
    ) -> None:
        self.roots = [Path(os.path.abspath(r)) for r in roots]  # as imgvec stores paths
        for root in self.roots:
            if not root.is_dir():
                raise NotADirectoryError(f"cannot watch {root}: not a folder")
        self.apply, self.failed = apply, failed
        self.ignore = None if ignore is None else Path(os.path.abspath(ignore))
        self.quiet_s, self.longest_s = quiet_s, longest_s
        self._changed: set[str] = set(map(str, self.roots))
        self._first = self._last = -LONGEST_S
        self._wake = threading.Condition()
        self._stopping = False
        self._observer = Observer()
        self._thread = threading.Thread(target=self._batches, name="imgvec-watch", daemon=True)

    def start(self) -> None:
        for root in self.roots:
            self._observer.schedule(self, str(root), recursive=True)
        self._observer.start()
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._observer.stop()
        self._observer.join()
        self._thread.join()

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in IGNORED_EVENTS:
            return
        paths = [os.fsdecode(event.src_path)]
        if event.event_type in ("deleted", "moved") and Path(paths[0]) in self.roots:
            self.failed(
                NotADirectoryError(
                    f"{paths[0]} is gone: no longer watched (its images stay in the library; "
                    "restart imgvec serve to watch it again)"
                )
            )
        if event.dest_path:
            paths.append(os.fsdecode(event.dest_path))
        if self.ignore is not None:
            paths = [p for p in paths if not Path(p).is_relative_to(self.ignore)]
        if paths:
            self._note(paths)

    def _note(self, paths: list[str]) -> None:
        with self._wake:
            now = time.monotonic()
            if not self._changed:
                self._first = now
            self._last = now
            self._changed.update(paths)
            self._wake.notify()

    def _batches(self) -> None:
        while True:
            with self._wake:
                while not self._changed and not self._stopping:
                    self._wake.wait()
                while self._changed and not self._stopping:
                    now = time.monotonic()
                    due = min(self._last + self.quiet_s, self._first + self.longest_s)
                    if now >= due:
                        break
                    self._wake.wait(due - now)
                if self._stopping:
                    return
                changed, self._changed = self._changed, set()
            folders = folders_to_add(changed, self.roots)
            if not folders:
                continue
            try:
                done = self.apply(folders)
            except Exception as error:
                self.failed(error)
                continue
            if not done:
                self._note(folders)
