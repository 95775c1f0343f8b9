"""How long-running library operations talk to their caller: notices, file errors, progress."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol


class Reporter(Protocol):
    def notice(self, message: str) -> None:
        """Something the user should know (schema upgraded, model loading, index rebuilt)."""

    def file_error(self, path: str, reason: str) -> None:
        """A file that could not be used; the rest of the batch goes on."""

    def file_ignored(self, path: str, reason: str) -> None:
        """A file that is not an image, or is hidden (shown only with ``--verbose``)."""

    def progress(self, description: str, total: int) -> Callable[[int], None]:
        """Start a progress display of ``total`` steps; returns ``advance(n)``."""

    def done(self) -> None:
        """The current progress display is finished."""


class SilentReporter:
    """Reports nothing: the default for the Python API."""

    def notice(self, message: str) -> None:
        pass

    def file_error(self, path: str, reason: str) -> None:
        pass

    def file_ignored(self, path: str, reason: str) -> None:
        pass

    def progress(self, description: str, total: int) -> Callable[[int], None]:
        return lambda _n: None

    def done(self) -> None:
        pass


@contextmanager
def progress(reporter: Reporter, description: str, total: int) -> Iterator[Callable[[int], None]]:
    advance = reporter.progress(description, total)
    try:
        yield advance
    finally:
        reporter.done()


class Stopwatch:
    """Seconds spent in named stages, summed over calls (``imgvec query --json`` reports them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


import_seconds: float | None = None
"""Seconds the ``imgvec`` command took to import its command line (SQLAlchemy, Rich, Typer, the
API...), set by :mod:`imgvec.__main__`; ``query --timings`` shows it as ``imports``."""
command_started: float | None = None
"""``time.perf_counter()`` when :mod:`imgvec.__main__` handed over to the command line: what
passes before the command runs is Typer parsing its arguments (``parse`` in ``--timings``)."""
