"""How the command line writes: results on stdout, one line per problem on stderr, progress
bars on stderr; untrusted text (paths, database values) printed verbatim, never as markup."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

EXIT_FAILED_INPUTS = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


# emoji=False: a file named "a:smile:b.jpg" must be printed as it is.
out = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def display(path: str) -> str:
    """A path fit for one line of a terminal: control and undecodable characters escaped."""
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
        for ch in path
    )


class PlainTable(Table):
    """A Rich table whose title, headers and cells are printed as they are: paths and database
    values are untrusted text, and Rich would read ``[old]`` or ``[/]`` in them as markup."""

    def __init__(self, *headers: str, title: str | None = None, **options: Any) -> None:
        super().__init__(title=None if title is None else Text(display(title)), box=None, **options)
        for header in headers:
            self.add_column(header)

    def add_column(self, header: Any = "", *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("overflow", "fold")
        super().add_column(Text(display(str(header))), *args, **kwargs)

    def add_row(self, *values: Any, **kwargs: Any) -> None:
        cells = [Text(display("" if value is None else str(value))) for value in values]
        super().add_row(*cells, **kwargs)


class ConsoleReporter:
    """Progress bars and notices on stderr, so stdout carries only results."""

    def __init__(self, quiet: bool = False, verbose: bool = False) -> None:
        self.quiet = quiet
        self.verbose = verbose
        self._progress: Progress | None = None

    def _print(self, text: str, style: str | None = None) -> None:
        console = self._progress.console if self._progress else err
        console.print(text, style=style, markup=False, highlight=False)

    def notice(self, message: str) -> None:
        if not self.quiet:
            self._print(message, "dim")

    def file_error(self, path: str, reason: str) -> None:
        self._print(f"error: {display(path)}: {display(reason)}", "red")

    def file_ignored(self, path: str, reason: str) -> None:
        if self.verbose:
            self._print(f"ignored: {display(path)}: {reason}", "dim")

    def progress(self, description: str, total: int) -> Callable[[int], None]:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err,
            disable=self.quiet,
            transient=False,
        )
        self._progress.start()
        task = self._progress.add_task(description, total=total)
        progress = self._progress
        return lambda n: progress.advance(task, n)

    def done(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    err.print(f"error: {message}", style="red", markup=False, highlight=False)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_rows(rows: list[tuple[str, ...]]) -> None:
    """The first row is the header."""
    table = PlainTable(*rows[0])
    for row in rows[1:]:
        table.add_row(*row)
    out.print(table)


@contextmanager
def own_terminal() -> Iterator[None]:
    """Only imgvec's lines reach stderr: C libraries (libtiff, libjpeg, ...) write their
    diagnostics to file descriptor 2 directly, and Python warnings from the libraries below
    would follow. Both go to an unnamed temporary file instead, while ``sys.stderr`` (and so
    every line imgvec prints, and any traceback) keeps the real stderr. ``IMGVEC_DEBUG=1``
    shows what was held back, at the end."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError, ValueError):  # no real stderr (an embedding host)
        yield
        return
    original = sys.stderr
    showwarning = warnings.showwarning
    with tempfile.TemporaryFile() as held:

        def hold_warning(
            message: Any,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: Any = None,
            line: str | None = None,
        ) -> None:
            held.write(warnings.formatwarning(message, category, filename, lineno, line).encode())

        os.dup2(held.fileno(), 2)
        sys.stderr = os.fdopen(
            os.dup(saved), "w", buffering=1, encoding=original.encoding, errors="backslashreplace"
        )
        warnings.showwarning = hold_warning
        try:
            yield
        finally:
            warnings.showwarning = showwarning
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sys.stderr.close()
            sys.stderr = original
            if os.environ.get("IMGVEC_DEBUG") == "1" and held.tell():
                held.seek(0)
                original.write("held back from stderr:\n" + held.read().decode(errors="replace"))
