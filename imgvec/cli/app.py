"""The ``imgvec`` command: a thin layer over :class:`imgvec.api.Library`.

Exit codes: 0 success; 1 some inputs failed (each named on stderr); 2 the command could not run
(bad usage, library or model problem); 130 interrupted.
"""

from __future__ import annotations

import copy
import csv
import gc
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from imgvec import reporting
from imgvec.cli.render import (
    EXIT_FAILED_INPUTS,
    EXIT_INTERRUPTED,
    ConsoleReporter,
    PlainTable,
    display,
    err,
    fail,
    out,
    own_terminal,
    print_json,
    print_rows,
)
from imgvec.config import DEFAULT_BATCH_SIZE, DEFAULT_K, DEFAULT_MODEL, PRECISIONS
from imgvec.errors import ImgvecError, cannot_write, storage_problem
from imgvec.types import DupesReport, IndexVersionInfo, ModelStatus, PairSignals, QueryResult

if TYPE_CHECKING:  # imported where used: SQLAlchemy's import alone is a third of a cold query
    from imgvec.api import Library

CANNOT_CATCH_UP = "read-only here, so the newest changes are not searched"

app = typer.Typer(
    help="Find similar images in your photo folders, locally.\n\n"
    "Start with `imgvec add PATH`, then `imgvec query IMAGE`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

LibraryOption = Annotated[
    Path | None,
    typer.Option(
        "--library",
        "-L",
        help="Library directory \\[env: IMGVEC_LIBRARY; default: the per-user data directory].",
        show_default=False,
    ),
]
DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="SQLAlchemy URL of the metadata database instead of the library's "
        "SQLite file \\[env: IMGVEC_DB].",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help=f"Embedding model (see `imgvec models`) \\[default: "
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
Precision = Enum("Precision", {name: name for name in PRECISIONS}, type=str)  # type: ignore[misc]
PrecisionOption = Annotated[
    Precision,
    typer.Option(
        "--precision",
        help="Model arithmetic: 'auto' (bfloat16 where the CPU or GPU has it, else float32), "
        "'fp32' or 'bf16'. Vectors of both agree to a cosine of 0.99+ and share one index.",
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


RayOption = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="ADDRESS",
        help="Read, decode and embed on the Ray cluster at ADDRESS (HOST:PORT of its head, "
        "ray://HOST:PORT, or auto); this process stays the only writer. Needs "
        "pip install 'imgvec\\[ray]'.",
        show_default=False,
    ),
]
VectorsOption = Annotated[
    str | None,
    typer.Option(
        "--vectors",
        metavar="URL",
        help="Keep the indexes in Milvus instead of FAISS files in the library folder: "
        "milvus://HOST:PORT\\[/DB] (a Milvus server) or milvus-lite://PATH.db (a local Milvus "
        "Lite store); default: $IMGVEC_VECTORS, else files. Chosen when the library is made, "
        "then recorded (imgvec index move moves it). Needs pip install 'imgvec\\[milvus]'.",
        show_default=False,
    ),
]
ShipBytesOption = Annotated[
    bool,
    typer.Option(
        "--ship-bytes",
        help="With --ray: read the files here and send their bytes to the workers (for "
        "workers that do not share the files' storage).",
    ),
]


def _check_vectors(url: str | None) -> None:
    """A --vectors store that cannot be used: one line, before any library is made for it."""
    if url is not None:
        from imgvec.api import Library

        try:
            Library.check_vector_store(url)
        except ImgvecError as error:
            fail(str(error))


@contextmanager
def open_library(
    library: Path | None,
    db: str | None,
    *,
    create: bool = True,
    quiet: bool = False,
    verbose: bool = False,
    precision: str = "auto",
) -> Iterator[Library]:
    """The library, with every way a command can stop turned into one line and an exit code
    (see :func:`one_line_errors`)."""
    reporter = ConsoleReporter(quiet=quiet, verbose=verbose)
    with one_line_errors(reporter):
        from imgvec.api import Library  # here, so that a Ctrl-C meanwhile is one line too

        with Library.open(library, db, reporter=reporter, create=create) as lib:
            lib.precision = precision
            yield lib


@contextmanager
def one_line_errors(reporter: ConsoleReporter) -> Iterator[None]:
    """Every way a command can stop, as one line and an exit code: user errors and full or
    read-only storage exit 2, Ctrl-C 130."""
    try:
        yield
    except ImgvecError as error:
        reporter.done()
        fail(str(error))
    except KeyboardInterrupt:
        reporter.done()
        fail("interrupted", EXIT_INTERRUPTED)
    except Exception as error:
        problem = storage_problem(error)
        if problem is None:
            raise
        reporter.done()
        fail(cannot_write(problem))


@app.command()
def init(
    model: ModelOption = None,
    weights: WeightsOption = None,
    layer: LayerOption = None,
    vectors: VectorsOption = None,
    library: LibraryOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create a library and fix its embedding model (otherwise the first `add` does this).

    Example: imgvec init --model resnet50 --layer avgpool
             imgvec init --vectors milvus://localhost:19530
    """
    _check_vectors(vectors)
    with open_library(library, db) as lib:
        info = lib.init(model, weights, layer, vectors)
        where = lib.vector_store()
        if json_output:
            print_json({"library": str(lib.paths.root), "model": info.to_json(), "vectors": where})
        else:
            out.print(f"Library {lib.paths.root} embeds with {info.label()}", markup=False)
            if where is not None:
                out.print(f"Its indexes live in {where}", markup=False)


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
    ] = DEFAULT_BATCH_SIZE,
    precision: PrecisionOption = Precision.auto,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Also remove the images of folders that are now empty or missing (without it "
            "they are kept: that is what a drive that is not mounted looks like).",
        ),
    ] = False,
    dupes: Annotated[
        bool,
        typer.Option(
            "--dupes",
            help="Then list the duplicates of what was just added (as `imgvec dupes`).",
        ),
    ] = False,
    ray: RayOption = None,
    ship_bytes: ShipBytesOption = False,
    vectors: VectorsOption = None,
    library: LibraryOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or notices.")] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Also list ignored files (not images, hidden) on stderr."
        ),
    ] = False,
) -> None:
    """Add images: new files are embedded, unchanged ones skipped, moved ones keep their vector.

    Files deleted from a folder being added are removed from the library; a folder that cannot
    be read, or that is now empty or missing, keeps its images (and is reported). Unreadable
    files are reported one per line and recorded, and tried again next time; the rest is added.
    Files that are not images are counted as ignored. Safe to interrupt: run it again to continue.

    Example: imgvec add ~/Pictures --model mobilenet_v2
    """
    found = None
    _check_vectors(vectors)
    with open_library(library, db, quiet=quiet, verbose=verbose, precision=precision.value) as lib:
        before = lib.last_change() if dupes else 0
        report = lib.add(
            [str(p) for p in paths],
            model=model,
            weights=weights,
            layer=layer,
            batch_size=batch_size,
            prune=prune,
            ray=ray,
            ship_bytes=ship_bytes,
            vectors=vectors,
        )
        if dupes and not report.interrupted:
            found = lib.dupes(since_seq=before)
    if json_output:
        data = report.to_json()
        if found is not None:
            data["dupes"] = found.to_json()
        print_json(data)
    else:
        prefix = "Interrupted after committing: " if report.interrupted else ""
        out.print(prefix + report.summary().capitalize(), markup=False)
        if found is not None:
            _print_dupes(found)
    if report.interrupted:
        err.print("Run the same `imgvec add` again to continue.", markup=False)
        raise typer.Exit(EXIT_INTERRUPTED)
    if report.failed or (found is not None and found.errors):
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
        print_json(report.to_json())
    else:
        out.print(
            f"Removed {report.removed} image{'' if report.removed == 1 else 's'}", markup=False
        )
    if report.errors:
        raise typer.Exit(EXIT_FAILED_INPUTS)


@app.command()
def query(
    images: Annotated[
        list[Path] | None,
        typer.Argument(help="Query images (need not be in the library).", show_default=False),
    ] = None,
    text: Annotated[
        list[str] | None,
        typer.Option(
            "--text",
            "-t",
            help="Words to search for (repeatable), with a model that has a text tower (see "
            "`imgvec models`); with query images, each image is combined with the words "
            "(each part normalised, summed, normalised).",
            show_default=False,
        ),
    ] = None,
    k: Annotated[int, typer.Option("-k", "--top", min=1, help="Results per query.")] = DEFAULT_K,
    where: Annotated[
        str | None,
        typer.Option(
            "--where",
            help="Only images matching this SQL condition on the `photos` "
            "view, e.g. \"camera_make = 'Canon' AND taken_at >= '2024-01-01'\".",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Query another stored model with a complete index "
            "(NAME or NAME/LAYER, see `imgvec model list`) \\[default: the active one].",
            show_default=False,
        ),
    ] = None,
    show: Annotated[
        Path | None,
        typer.Option(
            "--show",
            help="Also write a contact sheet of each query and its matches "
            "with their scores: a .png image or a self-contained .html page.",
            show_default=False,
        ),
    ] = None,
    precision: PrecisionOption = Precision.auto,
    timings: Annotated[
        bool,
        typer.Option(
            "--timings",
            help="Also print on stderr the seconds spent importing imgvec, parsing the command, "
            "opening the library, importing ONNX Runtime or torch, loading the model, embedding, "
            "importing FAISS, opening the index and searching.",
        ),
    ] = False,
    library: LibraryOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Find the library images most similar to each query image (cosine similarity, best first).

    Examples: imgvec query holiday.jpg -k 5
              imgvec query holiday.jpg --where "folder LIKE '%/2023/%'"
              imgvec query --text "a dog on a beach"     (a CLIP or SigLIP model)
              imgvec query holiday.jpg --text "at night"
    """
    opening = time.perf_counter()
    stages: dict[str, float] = {}
    if reporting.command_started is not None:  # set by the entry point (imgvec.__main__)
        parse = opening - reporting.command_started
        stages = {"imports": reporting.import_seconds or 0.0, "parse": parse}
    if images and not text and where is None and model is None and precision != Precision.bf16:
        from imgvec.config import resolve_paths
        from imgvec.ops import cold_query

        stopwatch = reporting.Stopwatch()
        notices = ConsoleReporter()
        paths = resolve_paths(library, db)
        with one_line_errors(notices):
            quick = cold_query.answer(paths, [str(i) for i in images], k, notices.notice, stopwatch)
            if quick is not None:
                _answered(quick, stages | stopwatch.seconds, timings, show, json_output)
                return
        opening = time.perf_counter()  # the ordinary path: it says why the quick one could not
    with open_library(library, db, create=False, precision=precision.value) as lib:
        stages["open"] = time.perf_counter() - opening
        results = lib.query(
            [str(i) for i in images or []], k=k, where=where, model=model, text=text or []
        )
        _answered(results, stages | lib.stopwatch.seconds, timings, show, json_output, lib)


def _answered(
    results: list[QueryResult],
    stages: dict[str, float],
    timings: bool,
    show: Path | None,
    json_output: bool,
    lib: Library | None = None,
) -> None:
    """Print a query's answers (and with ``timings``, its stages on stderr; with ``show``, the
    contact sheet); then, on the ordinary path (``lib``), make any export the query lacked.
    Exits 1 when a query image failed."""
    if timings:
        spent = " ".join(f"{stage.replace(' ', '_')}={s:.4f}" for stage, s in stages.items())
        err.print(f"timings (s): {spent}", markup=False)
    if show is not None:
        from imgvec.tools.plots import contact_sheet

        contact_sheet(results, show)
        err.print(f"Contact sheet: {show}", markup=False)
    _print_results(results, json_output)
    if lib is not None:
        sys.stdout.flush()  # the answers first: making a missing export takes seconds
        lib.make_exports()
    if any(r.error for r in results):
        raise typer.Exit(EXIT_FAILED_INPUTS)


def _print_results(results: list[QueryResult], json_output: bool) -> None:
    if json_output:
        print_json([r.to_json() for r in results])
        return
    for result in results:
        if result.error:
            continue
        table = PlainTable(title=result.query, title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("score", justify="right")
        table.add_column("path")
        for rank, hit in enumerate(result.hits, 1):
            table.add_row(rank, f"{hit.score:.4f}", hit.path)
        out.print(table)


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
        catch_up = CANNOT_CATCH_UP if lib.read_only else "caught up by the next command"
    if json_output:
        print_json(info.to_json())
        return
    out.print(f"Library:  {info.library}", markup=False)
    out.print(f"Database: {info.database}", markup=False)
    out.print(f"Vectors:  {info.vectors or 'FAISS files in the library folder'}", markup=False)
    out.print(f"Images:   {info.images} ({info.failed} unreadable)", markup=False)
    for entry in info.models:
        marker = "active" if entry.active else "stored"
        out.print(
            f"Model:    {entry.model.label()} [{marker}], {entry.embeddings} embeddings, "
            f"queries on {runtime_label(entry)}",
            markup=False,
        )
    if info.index is None:
        out.print("Index:    none yet", markup=False)
    else:
        idx = info.index
        params = ", ".join(f"{k}={v}" for k, v in idx.params.items())
        measured = f", recall@10 {idx.recall:.3f}" if idx.recall is not None else ""
        held = (
            f"in {info.vectors}"
            if info.vectors
            else f"in {len(idx.segments)} segment(s), {idx.size_bytes / 1e6:.1f} MB"
        )
        out.print(
            f"Index:    version {idx.id}, {idx.kind}{f' ({params})' if params else ''}, "
            f"{idx.n_vectors} vectors {held}{measured}, built {idx.created_at:%Y-%m-%d %H:%M}"
            + (f" [behind the table: {catch_up}]" if idx.behind else ""),
            markup=False,
        )
    for failure in info.failures:
        out.print(f"  unreadable: {display(failure.path)}: {failure.reason}", markup=False)


def runtime_label(entry: ModelStatus) -> str:
    """What runs a model for a query of a new photo, in a few words."""
    if entry.query_runtime == "onnxruntime":
        return "ONNX Runtime"
    export = entry.export or {}
    if export.get("error"):
        return "torch (not exportable)"
    return "torch (export missing)" if export else "torch (not exported yet)"


@app.command()
def sql(
    statement: Annotated[str, typer.Argument(help="One SQL statement (read-only).")],
    csv_output: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
    library: LibraryOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Run read-only SQL over the library's metadata (the database itself refuses writes).

    Query the `photos` view (one row per readable image: path, folder, width, height, format,
    taken_at, camera_make, camera_model, lens, gps_lat, gps_lon, ...) or the tables.

    Example: imgvec sql "SELECT camera_model, count(*) FROM photos GROUP BY 1 ORDER BY 2 DESC"
    """
    with open_library(library, db, create=False) as lib:
        result = lib.sql(statement)
    if result.truncated:
        err.print(f"Only the first {len(result.rows)} rows are shown.", markup=False)
    if json_output:
        print_json(result.to_json())
    elif csv_output:
        writer = csv.writer(sys.stdout)
        writer.writerow(result.columns)
        writer.writerows(result.rows)
    else:
        table = PlainTable(*result.columns)
        for row in result.rows:
            table.add_row(*row)
        out.print(table)


@app.command()
def serve(
    library: LibraryOption = None,
    db: DbOption = None,
    host: Annotated[
        str,
        typer.Option(help="Address to listen on; any but loopback needs a token (see --token)."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free one).", min=0, max=65535)] = 8765,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="IMGVEC_TOKEN",
            help="Demand this token from every request \\[env: IMGVEC_TOKEN; default: none on "
            "loopback, a new one printed at start on any other address].",
            show_default=False,
            show_envvar=False,
        ),
    ] = None,
    allow_writes: Annotated[
        bool,
        typer.Option(
            "--allow-writes", help="Allow add, remove and moving duplicates aside over HTTP."
        ),
    ] = False,
    watch: Annotated[
        list[Path] | None,
        typer.Option(
            help="Keep this folder in the library as files appear, change and go (repeatable).",
            show_default=False,
        ),
    ] = None,
    max_upload_mb: Annotated[
        float, typer.Option(help="Largest image a search may upload, in MiB.", min=0.001)
    ] = 32.0,
    sql_timeout: Annotated[
        float,
        typer.Option(help="Seconds an SQL statement or --where condition may run.", min=0.1),
    ] = 10.0,
) -> None:
    """Serve the library over HTTP: a web page to search and review it, and a JSON API.

    Open the printed address in a browser: drop a photo to find the ones like it, click a result
    for more like it, filter with the same SQL as `query --where`, review duplicate groups. The
    API (the JSON of `--json`) is described at /docs. Queries never write to the library; new
    images and model switches made by other imgvec processes show without a restart.

    Example: imgvec serve --watch ~/Pictures
    """
    try:
        from imgvec.serve.app import Settings
        from imgvec.serve.run import serve as run_server
    except ImportError as error:
        fail(
            f"imgvec serve needs the serve extra ({error.name} is missing): "
            "pip install 'imgvec[serve]'"
        )
    settings = Settings(
        library=None if library is None else str(library),
        db=db,
        host=host,
        port=port,
        token=token,
        allow_writes=allow_writes,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        sql_timeout_s=sql_timeout,
        watch=[str(folder) for folder in watch or []],
    )
    try:
        run_server(settings, lambda line: err.print(line, markup=False, highlight=False))
    except (ImgvecError, OSError) as error:
        fail(str(error))


@app.command()
def backfill(
    library: LibraryOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Read EXIF and pixel sizes of images added by an older imgvec (headers only, no model).

    Example: imgvec backfill
    """
    with open_library(library, db, create=False) as lib:
        report = lib.backfill()
    if json_output:
        print_json(report.to_json())
    else:
        out.print(f"Read metadata of {report.updated} images", markup=False)
    if report.errors:
        raise typer.Exit(EXIT_FAILED_INPUTS)


@app.command()
def bench(
    sizes: Annotated[str, typer.Option(help="Library sizes, comma-separated.")] = "100,1000,10000",
    dim: Annotated[int, typer.Option(min=1, help="Vector dimension (synthetic vectors).")] = 768,
    queries: Annotated[int, typer.Option(min=1, help="Query vectors per size.")] = 100,
    threads: Annotated[
        int,
        typer.Option(
            min=1,
            help="Threads for FAISS and BLAS while measuring (1: steady single-query figures).",
        ),
    ] = 1,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Write a log-log plot of latency against size to this PNG.", show_default=False
        ),
    ] = None,
    use_library: Annotated[
        bool,
        typer.Option(
            "--library-vectors",
            help="Benchmark on the "
            "library's own vectors (implied by --library) "
            "instead of synthetic ones.",
        ),
    ] = False,
    library: LibraryOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Compare exact NumPy search, FAISS Flat and FAISS IVF (several nprobe) on the same vectors.

    Reports build time, single-query latency (p50, mean) and recall@10 against exact search,
    with FAISS's and BLAS's threads held to --threads.
    Synthetic clustered vectors by default; with --library (or --library-vectors for the
    default library) the library's own vectors.

    Example: imgvec bench --sizes 1000,10000,100000 --plot bench.png
    """
    from imgvec.tools.bench import plot_bench, run_bench

    try:
        wanted = [int(size) for size in sizes.split(",") if size.strip()]
    except ValueError:
        fail(f"--sizes takes comma-separated numbers, not {sizes!r}")
    vectors = None
    if use_library or library is not None:
        with open_library(library, db, create=False) as lib:
            vectors = lib.vectors()[1]
    try:
        report = run_bench(wanted, dim=dim, queries=queries, vectors=vectors, threads=threads)
    except ImgvecError as error:
        fail(str(error))
    if plot is not None:
        plot_bench(report, plot)
    if json_output:
        sys.stdout.write(report.to_json() + "\n")
    else:
        print_rows(report.table())
        if plot is not None:
            out.print(f"Plot: {plot}", markup=False)


@app.command("export")
def export_command(
    out_file: Annotated[
        Path,
        typer.Argument(
            metavar="OUT", help="File to write: .npz, .parquet or .h5.", show_default=False
        ),
    ],
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="npz, parquet or hdf5 \\[default: from the extension].",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="A stored model \\[default: the active one].", show_default=False
        ),
    ] = None,
    library: LibraryOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Write a model's vectors with image ids, paths and content hashes, for other tools.

    Example: imgvec export vectors.parquet
    """
    with open_library(library, db, create=False) as lib:
        info = lib.export_vectors(out_file, fmt, model)
    if json_output:
        print_json(info.to_json())
    else:
        out.print(
            f"Wrote {info.vectors} {info.dim}-d vectors of {info.model} to {info.path} "
            f"({info.format}, {info.size_bytes / 1e6:.1f} MB)",
            markup=False,
        )


@app.command("import")
def import_command(
    file: Annotated[
        Path, typer.Argument(help="A file written by imgvec export.", show_default=False)
    ],
    library: LibraryOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Restore a model's vectors from an export, matching images by content hash (or path).

    No model runs; the model's index is brought up to date.

    Example: imgvec import vectors.parquet
    """
    with open_library(library, db) as lib:
        info = lib.import_vectors(file)
    if json_output:
        print_json(info.to_json())
    else:
        out.print(
            f"Imported {info.imported} vectors of {info.model} ({info.by_hash} by hash, "
            f"{info.by_path} by path; {info.unmatched} not in this library)",
            markup=False,
        )


@app.command()
def plot(
    out_file: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")] = Path(
        "imgvec-embeddings.png"
    ),
    dims: Annotated[int, typer.Option(min=2, max=3, help="2 or 3 dimensions.")] = 2,
    color_by: Annotated[
        str,
        typer.Option(
            "--color-by",
            help="A column of the photos view: folder, format, camera_model, taken_at, ...",
        ),
    ] = "folder",
    thumbnails: Annotated[
        int, typer.Option(min=0, help="Thumbnails drawn at their points (2-D).")
    ] = 12,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="A stored model \\[default: the active one].", show_default=False
        ),
    ] = None,
    library: LibraryOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Plot the library's embeddings reduced with PCA, coloured by a metadata column.

    Example: imgvec plot --out map.png --color-by camera_model
    """
    from imgvec.tools.plots import plot_embeddings

    with open_library(library, db, create=False) as lib:
        info = plot_embeddings(
            lib, out_file, dims=dims, color_by=color_by, thumbnails=thumbnails, model=model
        )
    if json_output:
        print_json(asdict(info))
    else:
        variance = ", ".join(f"{v:.1%}" for v in info.explained_variance)
        out.print(
            f"Wrote {info.path}: {info.points} images in {info.dims}-D "
            f"(explained variance {variance}), coloured by {info.color_by}",
            markup=False,
        )


@app.command("eval")
def eval_command(
    folder: Annotated[Path, typer.Argument(help="Folder of labelled images.", show_default=False)],
    groundtruth: Annotated[
        Path,
        typer.Option(
            "--groundtruth",
            "-g",
            help="CSV with columns filename and group (or group_id).",
            show_default=False,
        ),
    ],
    model: ModelOption = None,
    weights: WeightsOption = None,
    layer: LayerOption = None,
    transforms: Annotated[
        bool,
        typer.Option(
            "--transforms",
            help="Also measure copy "
            "detection: query with seeded variants of every "
            "image (crop, rotate, scale, brightness/contrast, "
            "flip, blur, greyscale, heavy JPEG); top-1 per "
            "transform.",
        ),
    ] = False,
    per_transform: Annotated[
        int | None,
        typer.Option(
            min=1, help="Images sampled per transform \\[default: all].", show_default=False
        ),
    ] = None,
    dupes: Annotated[
        bool,
        typer.Option(
            "--dupes",
            help="Measure `imgvec dupes` instead: build a seeded near-duplicate set from the "
            "photos (copy, JPEG q30, 50% resize, 90% crop, EXIF rotation, metadata stripped, "
            "PNG) and count duplicate pairs found and sibling photos wrongly grouped.",
        ),
    ] = False,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            help="With --dupes: the cosine cut \\[default: the model's calibrated one].",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="With --dupes: only the first N photos of the ground truth.",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the transforms.")] = 0,
    precision: PrecisionOption = Precision.auto,
    library: Annotated[
        Path | None,
        typer.Option(
            "--library",
            "-L",
            help="Keep the evaluation library here \\[default: a temporary one].",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Measure retrieval quality of a model on a labelled set: mAP, recall@k, UKBench N-S score.

    Every labelled image queries the others; with --transforms, copy detection too.

    Example: imgvec eval ukbench/images --groundtruth ukbench/groundtruth.csv --model mobilenet_v2
    """

    if dupes:
        _eval_dupes(
            folder,
            groundtruth,
            model,
            weights,
            layer,
            threshold,
            limit,
            seed,
            precision.value,
            library,
            json_output,
        )
        return
    from imgvec.tools.evaluate import evaluate_folder

    with (  # open_library turns an ImgvecError into a one-line error and exit code 2
        tempfile.TemporaryDirectory(prefix="imgvec-eval-") as scratch,
        open_library(library or Path(scratch), None, precision=precision.value) as lib,
    ):
        report = evaluate_folder(
            lib,
            folder,
            groundtruth,
            model=model,
            weights=weights,
            layer=layer,
            transforms=transforms,
            seed=seed,
            per_transform=per_transform,
        )
    if json_output:
        sys.stdout.write(report.to_json() + "\n")
        return
    out.print(f"{report.model}: {report.images} images in {report.groups} groups", markup=False)
    rows = [("metric", "value"), ("mAP", f"{report.map:.3f}")]
    rows += [(f"recall@{k}", f"{value:.3f}") for k, value in report.recall_at.items()]
    if report.ns_score is not None:
        rows.append(("UKBench N-S (of 4)", f"{report.ns_score:.3f}"))
    for name, accuracy in (report.transforms or {}).items():
        rows.append((f"copy detection top-1: {name}", f"{accuracy:.3f}"))
    print_rows(rows)


dupes_app = typer.Typer()  # its help is the callback's docstring
app.add_typer(dupes_app, name="dupes")


@dupes_app.callback(invoke_without_command=True)
def dupes(
    ctx: typer.Context,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            "-t",
            help="Cosine cut for candidates \\[default: calibrated for the model]. Lower finds "
            "more distant edits (and checks more pairs on pixels); pixels still decide.",
            show_default=False,
        ),
    ] = None,
    keep: Annotated[
        str,
        typer.Option(
            "--keep",
            help="Which member to keep: best (most pixels, then larger file, more EXIF, "
            "older), oldest, newest, or path:PATTERN (a glob; * spans folders).",
        ),
    ] = "best",
    where: Annotated[
        str | None,
        typer.Option(
            "--where",
            help="Only images matching this SQL condition on the `photos` view.",
            show_default=False,
        ),
    ] = None,
    new: Annotated[
        bool,
        typer.Option(
            "--new",
            help="Only images added since the last `imgvec dupes`, checked against the whole "
            "library.",
        ),
    ] = False,
    move_to: Annotated[
        str | None,  # not Path: Path("") is ".", and an empty DIR must be refused
        typer.Option(
            "--move-to",
            help="Move every duplicate but the kept one into DIR (paths relative to their "
            "common folder are kept); `imgvec dupes undo` puts them back. Nothing is deleted.",
            show_default=False,
            metavar="DIR",
        ),
    ] = None,
    explain: Annotated[
        tuple[Path, Path] | None,
        typer.Option(
            "--explain",
            help="Show every signal, the cuts and the verdict for two library files.",
            show_default=False,
            metavar="A B",
        ),
    ] = None,
    csv_output: Annotated[
        bool, typer.Option("--csv", help="Print CSV, one row per member.")
    ] = False,
    library: LibraryOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or notices.")] = False,
) -> None:
    """Find groups of duplicate photos: exact copies and near-duplicates (re-encoded, resized,
    lightly cropped, rotated by EXIF, metadata stripped), never merely similar shots.

    Candidates come from the index (cosine cut); the pixels decide: same content hash, or
    perceptual hashes within 2 bits, or one aligning inside the other as a crop. In a group
    every member is a duplicate of every other; the first one is kept.

    Examples: imgvec dupes
              imgvec dupes --where "folder LIKE '%/2024/%'" --keep oldest --csv
              imgvec dupes --move-to ~/dupes      (then: imgvec dupes undo)
              imgvec dupes --explain a.jpg b.jpg
    """
    if ctx.invoked_subcommand is not None:
        return
    if json_output and csv_output:
        fail("choose one of --json and --csv")
    with open_library(library, db, create=False, quiet=quiet) as lib:
        if explain is not None:
            signals = lib.explain_dupes(explain[0], explain[1], threshold)
            if json_output:
                print_json(signals.to_json())
            else:
                _print_signals(signals)
            return
        if move_to is not None:
            lib.check_move_target(move_to)  # before the search: one line, nothing moved
        report = lib.dupes(threshold=threshold, keep=keep, where=where, new=new)
        moved = lib.move_dupes(report, move_to) if move_to is not None else None
    if json_output:
        data = report.to_json()
        if moved is not None:
            data["moved"] = moved.to_json()
        print_json(data)
    elif csv_output:
        _print_dupes_csv(report)
    else:
        _print_dupes(report)
        if moved is not None:
            out.print(
                f"Moved {len(moved.moved)} files to {move_to} (run {moved.run}; "
                "`imgvec dupes undo` puts them back)",
                markup=False,
            )
    if report.errors or (moved is not None and moved.errors):
        raise typer.Exit(EXIT_FAILED_INPUTS)


def _print_dupes(report: DupesReport) -> None:
    """One block per group, one line per member, the path last (never wrapped or cut)."""
    if report.groups:
        out.print(
            f"  keep  {'pixels':>11}  {'bytes':>10}  {'taken':19}  similar  signal  path",
            markup=False,
        )
    for number, group in enumerate(report.groups, 1):
        out.print(f"Group {number}", markup=False)
        for m in group.members:
            pixels = f"{m.width}x{m.height}" if m.width and m.height else "?"
            taken = (m.taken_at or "")[:19]
            out.print(
                f"  {'keep' if m.keep else '    '}  {pixels:>11}  {m.size_bytes:>10}  "
                f"{taken:19}  {m.similarity:.4f}  {m.signal:6}  {display(m.path)}",
                markup=False,
            )
    files = sum(len(g.members) for g in report.groups)
    out.print(
        f"{len(report.groups)} groups, {files} files, {report.duplicates} duplicates "
        f"(model {report.model}, cosine cut {report.threshold:g} {report.threshold_source}; "
        f"{report.candidate_pairs} candidate pairs, {report.pixel_checks} crop checks)",
        markup=False,
    )


def _print_dupes_csv(report: DupesReport) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(
        [
            "group",
            "keep",
            "path",
            "width",
            "height",
            "size_bytes",
            "taken_at",
            "similarity",
            "signal",
            "id",
        ]
    )
    for number, group in enumerate(report.groups, 1):
        for m in group.members:
            writer.writerow(
                [
                    number,
                    int(m.keep),
                    m.path,
                    m.width,
                    m.height,
                    m.size_bytes,
                    m.taken_at,
                    m.similarity,
                    m.signal,
                    m.id,
                ]
            )


def _print_signals(s: PairSignals) -> None:
    def mark(ok: bool) -> str:
        return "yes" if ok else "no"

    rows = [
        ("signal", "value", "cut", "passes"),
        ("same content (SHA-256)", str(s.same_content), "", mark(s.same_content)),
        ("cosine", f"{s.cosine:.4f}", f">= {s.threshold:g}", mark(s.cosine >= s.threshold)),
    ]
    if s.phash_distance is not None:
        rows.append(
            (
                "phash distance (bits)",
                str(s.phash_distance),
                f"<= {s.phash_max}",
                mark(s.phash_distance <= s.phash_max),
            )
        )
    if s.crop_ncc is not None:
        rows.append(("crop: coarse alignment", f"{s.crop_coarse:.4f}", "", ""))
        rows.append(
            (
                "crop: fine alignment NCC",
                f"{s.crop_ncc:.4f}",
                f">= {s.crop_ncc_min:g}",
                mark(s.crop_ncc >= s.crop_ncc_min),
            )
        )
        rows.append(
            (
                "crop: lowest block NCC",
                f"{s.crop_block_min:.4f}",
                f">= {s.crop_block_min_min:g}",
                mark((s.crop_block_min or -1) >= s.crop_block_min_min),
            )
        )
        parallax = s.crop_parallax if s.crop_parallax is not None else -1.0
        rows.append(
            (
                "crop: parallax (px at 256)",
                "not measured" if parallax < 0 else f"{parallax:.2f}",
                f"<= {s.crop_parallax_max:g}",
                mark(0 <= parallax <= s.crop_parallax_max),
            )
        )
    print_rows(rows)
    verdict = "near-duplicates" if s.duplicate else "not duplicates"
    out.print(
        f"{display(s.a)} and {display(s.b)}: {verdict} (decided by {s.decided_by})", markup=False
    )


@dupes_app.command("undo")
def dupes_undo(
    every_run: Annotated[
        bool, typer.Option("--all", help="Undo every `--move-to` run, not only the latest.")
    ] = False,
    library: LibraryOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Put back the files the latest `imgvec dupes --move-to` moved (--all: every run).

    Example: imgvec dupes undo
    """
    with open_library(library, db, create=False) as lib:
        report = lib.undo_dupes(every_run)
    if json_output:
        print_json(report.to_json())
    else:
        if report.moved or report.errors:
            out.print(f"Moved {len(report.moved)} files back", markup=False)
        else:
            out.print("Nothing to undo", markup=False)
    if report.errors:
        raise typer.Exit(EXIT_FAILED_INPUTS)


def _eval_dupes(
    folder: Path,
    groundtruth: Path,
    model: str | None,
    weights: str | None,
    layer: str | None,
    threshold: float | None,
    limit: int | None,
    seed: int,
    precision: str,
    library: Path | None,
    json_output: bool,
) -> None:
    from imgvec.tools.evaluate_dupes import evaluate_dupes

    with (
        tempfile.TemporaryDirectory(prefix="imgvec-eval-") as scratch,
        open_library(library or Path(scratch), None, precision=precision, quiet=True) as lib,
    ):
        report = evaluate_dupes(
            lib,
            folder,
            groundtruth,
            model=model,
            weights=weights,
            layer=layer,
            threshold=threshold,
            seed=seed,
            limit=limit,
        )
    if json_output:
        print_json(report.to_json())
        return
    out.print(
        f"{report.model}: {report.photos} photos, {report.files} files (seed {report.seed}); "
        f"cosine cut {report.threshold:g} ({report.threshold_source})",
        markup=False,
    )
    rows = [
        ("pairs", "count", "precision", "recall"),
        (
            "all duplicate pairs",
            str(report.duplicate_pairs),
            f"{report.precision:.4f}",
            f"{report.recall:.4f}",
        ),
        ("sibling pairs grouped", f"{report.siblings_grouped} of {report.sibling_pairs}", "", ""),
    ]
    for name, counts in report.per_transform.items():
        rows.append(
            (f"  {name} (with its original)", str(counts.pairs), "", f"{counts.recall:.4f}")
        )
    print_rows(rows)
    if report.sweep:
        sweep = [("cut", "precision", "recall", "siblings grouped")]
        sweep += [
            (f"{p.cut:g}", f"{p.precision:.4f}", f"{p.recall:.4f}", str(p.sibling_pairs))
            for p in report.sweep
        ]
        print_rows(sweep)
        out.print(f"Suggested cut: {report.suggested_cut:g}", markup=False)
    out.print(f"Seconds: add {report.seconds_add}, dupes {report.seconds_dupes}", markup=False)


model_app = typer.Typer(
    help="Embedding models of the library: list, switch (re-embedding beside the old), drop.",
    no_args_is_help=True,
)
app.add_typer(model_app, name="model")


@model_app.command("list")
def model_list(
    library: LibraryOption = None, db: DbOption = None, json_output: JsonOption = False
) -> None:
    """Every model the library knows: identity, dimension, vectors, index, which is active.

    Example: imgvec model list
    """
    with open_library(library, db, create=False) as lib:
        statuses = lib.models()
    if json_output:
        print_json([s.to_json() for s in statuses])
        return
    table = PlainTable("", "model", "weights", "dim", "vectors", "complete", "index", "queries on")
    for s in statuses:
        table.add_row(
            "*" if s.active else "",
            f"{s.model.name}/{s.model.layer}",
            s.model.short_weights(),
            str(s.model.dim),
            f"{s.embeddings}/{s.images}",
            "yes" if s.complete else "no",
            "yes" if s.indexed else "no",
            runtime_label(s),
        )
    out.print(table)
    out.print("* the active model (queries use it unless --model says otherwise)", markup=False)


@model_app.command("use")
def model_use(
    name: Annotated[str, typer.Argument(help="The model to switch to (see `imgvec models`).")],
    weights: WeightsOption = None,
    layer: LayerOption = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Images per model call.")
    ] = DEFAULT_BATCH_SIZE,
    precision: PrecisionOption = Precision.auto,
    ray: RayOption = None,
    ship_bytes: ShipBytesOption = False,
    library: LibraryOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or notices.")] = False,
) -> None:
    """Switch the library to another embedding model, safely.

    Every image is embedded with the new model beside the old one, its index is built, and only
    then does the library switch, in one transaction; queries use the old model until then.
    Interrupt it any time: running it again continues where it stopped. Switching back to a
    model whose vectors are still stored is instant.

    Example: imgvec model use resnet50 --layer avgpool
    """
    with open_library(library, db, create=False, quiet=quiet, precision=precision.value) as lib:
        report = lib.use_model(name, weights, layer, batch_size, ray, ship_bytes)
    if json_output:
        print_json(report.to_json())
    elif report.switched:
        out.print(
            f"Switched to {name}: embedded {report.embedded}, reused {report.reused}, "
            f"already stored {report.already}",
            markup=False,
        )
    else:
        out.print(
            f"Not switched: embedded {report.embedded}, reused {report.reused}, "
            f"failed {report.failed}",
            markup=False,
        )
    if report.interrupted:
        err.print("Interrupted; run the same command again to continue.", markup=False)
        raise typer.Exit(EXIT_INTERRUPTED)
    if not report.switched:
        raise typer.Exit(EXIT_FAILED_INPUTS)


@model_app.command("drop")
def model_drop(
    name: Annotated[str, typer.Argument(help="A stored model that is not active.")],
    library: LibraryOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Delete a model that is not active: its vectors, its index files and rows.

    Example: imgvec model drop vgg16
    """
    with open_library(library, db, create=False) as lib:
        dropped = lib.drop_model(name)
    if json_output:
        print_json({"model": name, "vectors_deleted": dropped})
    else:
        out.print(f"Dropped {name} and its {dropped} vectors", markup=False)


index_app = typer.Typer(
    help="The index (versioned FAISS files, or a Milvus collection): status, versions, build, "
    "compact, verify, rollback, gc, move.",
    no_args_is_help=True,
)
app.add_typer(index_app, name="index")
KindOption = Annotated[
    str | None,
    typer.Option(
        "--kind",
        help="flat (exact), ivf, or ivfpq (compressed) \\[default: by library size].",
        show_default=False,
    ),
]


def _print_version(version: IndexVersionInfo, json_output: bool) -> None:
    if json_output:
        print_json(version.brief_json())
        return
    measured = f", recall@10 {version.recall:.3f}" if version.recall is not None else ""
    out.print(
        f"Index version {version.id} ({version.operation}): {version.kind} "
        f"({', '.join(f'{k}={v}' for k, v in version.params.items()) or 'exact search'}), "
        f"{version.n_vectors} vectors{measured}",
        markup=False,
    )


@index_app.command("status")
def index_status(
    library: LibraryOption = None, db: DbOption = None, json_output: JsonOption = False
) -> None:
    """The active index version: kind, parameters, segments, measured recall and nprobe.

    Example: imgvec index status
    """
    with open_library(library, db, create=False) as lib:
        active = lib.index_status()
        catch_up = CANNOT_CATCH_UP if lib.read_only else "the next command catches it up"
    if active is None:
        fail("no index yet: add images, or run imgvec index rebuild")
    if json_output:
        print_json(active.to_json(behind=True))
        return
    params = ", ".join(f"{k}={v}" for k, v in active.params.items()) or "exact search"
    out.print(
        f"Version:   {active.id} ({active.operation}, {active.created_at:%Y-%m-%d %H:%M})",
        markup=False,
    )
    out.print(f"Kind:      {active.kind} ({params})", markup=False)
    trained = f", trained on {active.train_size}" if active.train_size else ""
    out.print(f"Vectors:   {active.n_vectors}{trained}", markup=False)
    if active.recall is not None:
        setting = f" at nprobe={active.params['nprobe']}" if "nprobe" in active.params else ""
        out.print(f"Recall@10: {active.recall:.3f} against exact search{setting}", markup=False)
    for segment in active.segments:
        out.print(
            f"Segment:   {segment['role']:5} {segment['n_vectors']:>9} vectors "
            f"{segment['size_bytes'] / 1e6:8.2f} MB  {segment['path']}",
            markup=False,
        )
    if active.behind:
        out.print(f"Behind the table: {catch_up}.", markup=False)


@index_app.command("list")
def index_list(
    library: LibraryOption = None, db: DbOption = None, json_output: JsonOption = False
) -> None:
    """Every kept index version, newest first (the targets of `imgvec index rollback`).

    Example: imgvec index list
    """
    with open_library(library, db, create=False) as lib:
        versions = lib.index_versions()
    if json_output:
        print_json([v.to_json() for v in versions])
        return
    table = PlainTable(
        "version", "status", "made by", "kind", "vectors", "segments", "recall@10", "created"
    )
    for v in versions:
        table.add_row(
            str(v.id),
            v.status,
            v.operation,
            v.kind,
            str(v.n_vectors),
            str(len(v.segments)),
            f"{v.recall:.3f}" if v.recall is not None else "-",
            f"{v.created_at:%Y-%m-%d %H:%M}",
        )
    out.print(table)


@index_app.command("build")
def index_build(
    kind: KindOption = None,
    nlist: Annotated[
        int | None,
        typer.Option(min=1, help="IVF lists \\[default: ~4*sqrt(N)].", show_default=False),
    ] = None,
    nprobe: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="IVF lists searched per query \\[default: tuned to recall@10 0.95].",
            show_default=False,
        ),
    ] = None,
    library: LibraryOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Build a new index version from the stored vectors, overriding the automatic choices.

    No model is loaded. IVF kinds are trained, and nprobe is tuned until recall@10 against exact
    search reaches 0.95 on a sample of the library's own vectors (both are recorded).

    Example: imgvec index build --kind ivf --nlist 256
    """
    with open_library(library, db, create=False) as lib:
        _print_version(lib.build_index(kind, nlist, nprobe), json_output)


@index_app.command("rebuild")
def index_rebuild(
    library: LibraryOption = None, db: DbOption = None, json_output: JsonOption = False
) -> None:
    """Build a fresh index version from the stored vectors, with automatic choices (no model).

    Example: imgvec index rebuild
    """
    with open_library(library, db, create=False) as lib:
        _print_version(lib.build_index(), json_output)


@index_app.command("move")
def index_move(
    url: Annotated[
        str,
        typer.Argument(
            metavar="URL",
            help="milvus://HOST:PORT\\[/DB] (a Milvus server), milvus-lite://PATH.db (a local "
            "Milvus Lite store) or files (FAISS files in the library folder, the default).",
            show_default=False,
        ),
    ],
    library: LibraryOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Move the indexes to another store: each model's index is built there from the stored
    vectors (nothing is embedded again), then the library switches, then the old one is deleted.

    Safe to interrupt: until it finishes, the library uses the old store; run it again to finish.
    Example: imgvec index move milvus://milvus.lan:19530
             imgvec index move files
    """
    with open_library(library, db, create=False) as lib:
        moved = lib.move_vectors(url)
        where = lib.vector_store()
    if json_output:
        print_json({"vectors": where, "models": moved})
    else:
        place = where or "FAISS files in the library folder"
        done = f"; moved the index of {', '.join(moved)}" if moved else ""
        out.print(f"Indexes in {place}{done}", markup=False)


@index_app.command("compact")
def index_compact(
    library: LibraryOption = None, db: DbOption = None, json_output: JsonOption = False
) -> None:
    """Fold delta segments and tombstones into the base now (otherwise done by threshold).

    Example: imgvec index compact
    """
    with open_library(library, db, create=False) as lib:
        _print_version(lib.compact_index(), json_output)


@index_app.command("verify")
def index_verify(
    library: LibraryOption = None, db: DbOption = None, json_output: JsonOption = False
) -> None:
    """Check index files against their checksums (or a Milvus collection's ids), and the index
    against the table.

    Exits 1 on a missing, truncated or altered file (or collection), a foreign file in the index
    folder, a stored vector missing from the index, an id live twice, or an entry with no row.

    Example: imgvec index verify
    """
    with open_library(library, db, create=False) as lib:
        report = lib.verify_index()
        where = lib.vector_store()
    if json_output:
        print_json(report.to_json())
    else:
        held = f"a collection in {where}" if where else f"{report.checked_segments} segment(s)"
        out.print(
            f"Version {report.version}: {held}, {report.live_vectors} live vectors, "
            f"{report.pending_changes} changes not yet indexed",
            markup=False,
        )
        for leftover in report.leftovers:
            out.print(
                f"leftover of an interrupted write (the next write deletes it): {leftover}",
                markup=False,
            )
        for problem in report.problems:
            err.print(f"problem: {problem}", style="red", markup=False)
        out.print("OK" if report.ok else f"{len(report.problems)} problem(s)", markup=False)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED_INPUTS)


@index_app.command("rollback")
def index_rollback(
    version: Annotated[int, typer.Argument(help="A version number from `imgvec index list`.")],
    library: LibraryOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Make an earlier index version active again, then apply later changes to it.

    Example: imgvec index rollback 3
    """
    with open_library(library, db, create=False) as lib:
        _print_version(lib.rollback_index(version), json_output)


@index_app.command("gc")
def index_gc(
    keep: Annotated[int, typer.Option(min=0, help="Retired versions to keep for rollback.")] = 2,
    library: LibraryOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Delete old retired versions and every index file no kept version uses (never the active).

    Example: imgvec index gc --keep 0
    """
    with open_library(library, db, create=False) as lib:
        report = lib.gc_index(keep)
    if json_output:
        print_json(report.to_json())
    else:
        out.print(
            f"Deleted {report.versions_deleted} versions and {report.files_deleted} files "
            f"({report.bytes_freed / 1e6:.1f} MB)",
            markup=False,
        )


@app.command()
def models(json_output: JsonOption = False) -> None:
    """List the embedding models imgvec can use, with their layers and dimensions."""
    from imgvec.api import Library

    specs = Library.available_models()
    if json_output:
        print_json([s.to_json() for s in specs.values()])
        return
    table = PlainTable("model", "layer", "dim", "text", "description")
    for spec in specs.values():
        for name, layer in spec.layers.items():
            default = " (default)" if name == spec.default_layer else ""
            table.add_row(
                spec.name + (" *" if spec.name == DEFAULT_MODEL else ""),
                name + default,
                str(layer.dim),
                "yes" if spec.encode_text is not None else "",
                layer.description,
            )
    out.print(table)
    out.print("* the default model; text: takes words (imgvec query --text)", markup=False)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out.print(f"imgvec {version('imgvec')}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _imgvec(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print imgvec's version and exit.", is_eager=True, callback=_version
        ),
    ] = False,
) -> None:
    """Find similar images in your photo folders, locally."""


def for_command(argv: list[str]) -> typer.Typer:
    """The app that runs ``imgvec ARGV``: when ARGV starts with a command's name, an app with
    only that command (or group). Typer builds the options of every command before it parses
    any (0.12-0.20 s of a 0.8 s cold query, for 27 commands); a command's help, usage errors
    and work are the same either way."""
    if not argv:
        return app
    commands = [
        c
        for c in app.registered_commands
        if (c.name or typer.main.get_command_name(c.callback.__name__)) == argv[0]  # type: ignore[union-attr]
    ]
    groups = [g for g in app.registered_groups if g.name == argv[0]]
    if not commands and not groups:
        return app  # the top level's help, or Typer's "No such command" with its suggestions
    narrowed = copy.copy(app)
    narrowed.registered_commands, narrowed.registered_groups = commands, groups
    return narrowed


def main() -> None:
    """The ``imgvec`` command."""
    try:
        with own_terminal():
            for_command(sys.argv[1:2])()
    except KeyboardInterrupt:  # before Typer's own handling starts (building the commands)
        err.print("error: interrupted", style="red", markup=False, highlight=False)
        raise SystemExit(EXIT_INTERRUPTED) from None
    finally:
        # Exit without the interpreter collecting torch's many objects one by one: about 1 s
        # of every command that ran a model. The operating system frees them at once.
        gc.freeze()
