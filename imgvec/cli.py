"""The ``imgvec`` command: a thin layer over :class:`imgvec.library.Library`.

Exit codes: 0 success; 1 some inputs failed (each named on stderr); 2 the command could not run
(bad usage, library or model problem); 130 interrupted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, NoReturn

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

from imgvec.errors import ImgvecError
from imgvec.library import DEFAULT_K, DEFAULT_MODEL, Library

EXIT_FAILED_INPUTS = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

app = typer.Typer(
    help="Find similar images in your photo folders, locally.\n\n"
    "Start with `imgvec add PATH`, then `imgvec query IMAGE`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

# emoji=False: a file named "a:smile:b.jpg" must be printed as it is.
out = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

LibraryOption = Annotated[
    Path | None,
    typer.Option(
        "--library",
        "-L",
        help="Library directory [env: IMGVEC_LIBRARY; default: the per-user data directory].",
        show_default=False,
    ),
]
DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="SQLAlchemy URL of the metadata database instead of the library's "
        "SQLite file [env: IMGVEC_DB].",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help=f"Embedding model (see `imgvec models`) [default: "
        f"{DEFAULT_MODEL}, or the library's model].",
        show_default=False,
    ),
]
WeightsOption = Annotated[
    str | None,
    typer.Option(
        "--weights",
        "-w",
        help="'default' (pretrained, downloaded once and cached), "
        "'none' (random, fixed seed: tests and demos) or the PATH of a state dict.",
        show_default=False,
    ),
]
LayerOption = Annotated[
    str | None,
    typer.Option(
        "--layer",
        help="Which layer of the model gives the embedding (see `imgvec models`).",
        show_default=False,
    ),
]


def display(path: str) -> str:
    """A path fit for one line of a terminal: control and undecodable characters escaped."""
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
        for ch in path
    )


class ConsoleReporter:
    """Progress bars and notices on stderr, so stdout carries only results."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self._progress: Progress | None = None

    def _print(self, text: str, style: str | None = None) -> None:
        console = self._progress.console if self._progress else err
        console.print(text, style=style, markup=False, highlight=False)

    def notice(self, message: str) -> None:
        if not self.quiet:
            self._print(message, "dim")

    def file_error(self, path: str, reason: str) -> None:
        self._print(f"error: {display(path)}: {reason}", "red")

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


@contextmanager
def open_library(
    library: Path | None, db: str | None, *, create: bool = True, quiet: bool = False
) -> Iterator[Library]:
    reporter = ConsoleReporter(quiet=quiet)
    try:
        with Library.open(library, db, reporter=reporter, create=create) as lib:
            yield lib
    except ImgvecError as error:
        reporter.done()
        fail(str(error))
    except KeyboardInterrupt:
        reporter.done()
        fail("interrupted", EXIT_INTERRUPTED)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@app.command()
def init(
    model: ModelOption = None,
    weights: WeightsOption = None,
    layer: LayerOption = None,
    library: LibraryOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create a library and fix its embedding model (otherwise the first `add` does this).

    Example: imgvec init --model resnet50 --layer avgpool
    """
    with open_library(library, db) as lib:
        info = lib.init(model, weights, layer)
        if json_output:
            print_json({"library": str(lib.paths.root), "model": asdict(info)})
        else:
            out.print(f"Library {lib.paths.root} embeds with {info.label()}", markup=False)


@app.command()
def add(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Image files and folders (recursively).", show_default=False),
    ],
    model: ModelOption = None,
    weights: WeightsOption = None,
    layer: LayerOption = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Images per model call and per database commit.")
    ] = 32,
    library: LibraryOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or notices.")] = False,
) -> None:
    """Add images: new files are embedded, unchanged ones skipped, moved ones keep their vector.

    Files that vanished from a folder being added are removed from the library. Unreadable files
    are reported one per line and recorded; the rest is added. Safe to interrupt: run it again to
    continue.

    Example: imgvec add ~/Pictures --model mobilenet_v2
    """
    with open_library(library, db, quiet=quiet) as lib:
        report = lib.add(
            [str(p) for p in paths],
            model=model,
            weights=weights,
            layer=layer,
            batch_size=batch_size,
        )
    if json_output:
        print_json(report.to_json())
    else:
        prefix = "Interrupted after committing: " if report.interrupted else ""
        out.print(prefix + report.summary().capitalize(), markup=False)
    if report.interrupted:
        err.print("Run the same `imgvec add` again to continue.", markup=False)
        raise typer.Exit(EXIT_INTERRUPTED)
    if report.failed:
        raise typer.Exit(EXIT_FAILED_INPUTS)


@app.command()
def remove(
    paths: Annotated[
        list[Path], typer.Argument(help="Files or folders to forget.", show_default=False)
    ],
    library: LibraryOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Remove files or whole folders from the library (the files on disk are not touched).

    Example: imgvec remove ~/Pictures/screenshots
    """
    with open_library(library, db, create=False) as lib:
        report = lib.remove([str(p) for p in paths])
    if json_output:
        print_json({"removed": report.removed, "errors": [asdict(e) for e in report.errors]})
    else:
        out.print(f"Removed {report.removed} images", markup=False)
    if report.errors:
        raise typer.Exit(EXIT_FAILED_INPUTS)


@app.command()
def query(
    images: Annotated[
        list[Path],
        typer.Argument(help="Query images (need not be in the library).", show_default=False),
    ],
    k: Annotated[int, typer.Option("-k", "--top", min=1, help="Results per query.")] = DEFAULT_K,
    library: LibraryOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Find the library images most similar to each query image (cosine similarity, best first).

    Example: imgvec query holiday.jpg -k 5
    """
    with open_library(library, db, create=False) as lib:
        results = lib.query([str(i) for i in images], k=k)
    if json_output:
        print_json(
            [
                {
                    "query": r.query,
                    "vector": r.vector_source,
                    "error": r.error,
                    "results": [asdict(hit) for hit in r.hits],
                }
                for r in results
            ]
        )
    else:
        for result in results:
            if result.error:
                continue
            table = Table(title=display(result.query), title_justify="left", box=None)
            table.add_column("#", justify="right")
            table.add_column("score", justify="right")
            table.add_column("path", overflow="fold")
            for rank, hit in enumerate(result.hits, 1):
                table.add_row(str(rank), f"{hit.score:.4f}", display(hit.path))
            out.print(table)
    if any(r.error for r in results):
        raise typer.Exit(EXIT_FAILED_INPUTS)


@app.command()
def status(
    library: LibraryOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show what the library holds: images, failures, models, and the index in use.

    Example: imgvec status --json
    """
    with open_library(library, db, create=False) as lib:
        info = lib.status()
    if json_output:
        print_json(asdict(info))
        return
    out.print(f"Library:  {info.library}", markup=False)
    out.print(f"Database: {info.database}", markup=False)
    out.print(f"Images:   {info.images} ({info.failed} unreadable)", markup=False)
    for entry in info.models:
        marker = "active" if entry.active else "stored"
        out.print(
            f"Model:    {entry.model.label()} [{marker}], {entry.embeddings} embeddings",
            markup=False,
        )
    if info.index is None:
        out.print("Index:    none yet", markup=False)
    else:
        idx = info.index
        params = ", ".join(f"{k}={v}" for k, v in idx.params.items())
        out.print(
            f"Index:    {idx.kind}{f' ({params})' if params else ''}, {idx.n_vectors} vectors, "
            f"{idx.size_bytes / 1e6:.1f} MB, built {idx.created_at:%Y-%m-%d %H:%M}"
            + (" [stale: rebuilt on next query]" if idx.stale else ""),
            markup=False,
        )
    for failure in info.failures:
        out.print(f"  unreadable: {display(failure.path)}: {failure.reason}", markup=False)


@app.command()
def models(json_output: JsonOption = False) -> None:
    """List the embedding models imgvec can use, with their layers and dimensions."""
    from imgvec.embedders.registry import available

    specs = available()
    if json_output:
        print_json(
            [
                {
                    "name": s.name,
                    "description": s.description,
                    "default_layer": s.default_layer,
                    "layers": {
                        n: {"dim": la.dim, "description": la.description}
                        for n, la in s.layers.items()
                    },
                    "default_weights": s.pretrained_id,
                    "preprocessing": s.preprocess.describe(),
                }
                for s in specs.values()
            ]
        )
        return
    table = Table(box=None)
    for column in ("model", "layer", "dim", "description"):
        table.add_column(column)
    for spec in specs.values():
        for name, layer in spec.layers.items():
            default = " (default)" if name == spec.default_layer else ""
            table.add_row(
                spec.name + (" *" if spec.name == DEFAULT_MODEL else ""),
                name + default,
                str(layer.dim),
                layer.description,
            )
    out.print(table)
    out.print("* the default model", markup=False)


def main() -> None:
    app()
