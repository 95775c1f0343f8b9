"""The HTTP application: every endpoint is one call of the Python API (:class:`Library`), and
answers with the JSON the CLI prints for ``--json`` (the types' ``to_json``).

Reading and writing are kept apart. Queries run on a library object that never writes (it
searches the active index version as it is, with removals applied), so they go on while another
process, or this server with ``--allow-writes``, adds or switches models; new index versions and
model switches are picked up on the next request, from the database. Writes (``--allow-writes``
or ``--watch``) run one at a time on a second library object, under the same one-writer lock as
the CLI. Searches run one at a time (milliseconds: the index cache is not shared across threads),
and so do embeddings of uploads, apart from the searches, so that loading the model (seconds, on
the first upload) holds up no search by id; metadata, SQL and thumbnails run in parallel.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote

import numpy as np
from fastapi import Body, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from imgvec.api import DEFAULT_K, Library, combine, text_label
from imgvec.errors import (
    ImageError,
    ImageNotFound,
    ImageTooLarge,
    ImgvecError,
    LibraryLocked,
    NotAnImage,
    StorageError,
    WeightsUnavailable,
)
from imgvec.serve import security
from imgvec.types import QueryResult

log = logging.getLogger("imgvec.serve")
T = TypeVar("T")

MAX_UPLOAD_BYTES = 32 * 1024 * 1024
"""Default upload limit: larger than any camera JPEG or HEIC, far below memory."""
MAX_UPLOAD_PIXELS = 64_000_000
"""Default pixel limit of an upload (64 MP: a 9,000 x 7,000 photo), checked from the header."""
MAX_K = 1000
MAX_TEXT, MAX_TEXTS = 1000, 16
"""Characters of one ``text`` query parameter (CLIP reads 77 tokens of it at most), and how
many of them one search takes."""
MAX_ID = 2**63 - 1
"""Ids are SQL BIGINTs: a larger number can name no image."""
SQL_TIMEOUT_S = 10.0
"""Default time limit of users' SQL (``/api/sql``, ``where``): a runaway statement would
otherwise hold a thread, and Ctrl-C, for ever."""
MULTIPART_SLACK = 64 * 1024
"""Bytes a multipart form may add around the image (boundaries, headers)."""
PAGE_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
"""The page's files, by the name in the URL: a fixed table, so no URL names a path."""
_STATUS = [
    (ImageNotFound, 404),
    (NotAnImage, 415),
    (ImageTooLarge, 413),
    (ImageError, 422),
    (LibraryLocked, 409),
    (WeightsUnavailable, 503),
    (StorageError, 503),
    (ImgvecError, 400),
]
"""HTTP status of each error the API raises (the first that matches)."""


@dataclass
class Settings:
    """What ``imgvec serve`` was told (see its ``--help``)."""

    library: str | None = None
    db: str | None = None
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    """Demanded from every request when set (see :mod:`imgvec.serve.security`)."""
    allow_writes: bool = False
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_upload_pixels: int = MAX_UPLOAD_PIXELS
    sql_timeout_s: float = SQL_TIMEOUT_S
    watch: list[str] = field(default_factory=list)


class NotFound(ImgvecError):
    pass


class Forbidden(ImgvecError):
    pass


class LogReporter:
    """Library notices and per-file errors go to the server's log, each notice once."""

    def __init__(self) -> None:
        self._told: set[str] = set()

    def notice(self, message: str) -> None:
        if message not in self._told:
            self._told.add(message)
            log.warning("%s", message)

    def file_error(self, path: str, reason: str) -> None:
        log.warning("%s: %s", path, reason)

    def file_ignored(self, path: str, reason: str) -> None:
        log.info("%s: %s", path, reason)

    def progress(self, description: str, total: int) -> Callable[[int], None]:
        return lambda _n: None

    def done(self) -> None:
        pass


class Server:
    """The libraries behind the endpoints: one for reading, one (made on the first write) for
    writing, and the locks that keep each to one thread where it must be."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.reporter = LogReporter()
        # A library is made only to be filled: with --watch. Raises ImgvecError when there is none.
        self.reader = self._open(create=bool(settings.watch))
        self._search_lock = threading.Lock()
        self._embed_lock = threading.Lock()
        self._review_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._reviewer: Library | None = None
        self._writer: Library | None = None

    def _open(self, create: bool = False, read_only: bool = True) -> Library:
        lib = Library.open(
            self.settings.library, self.settings.db, reporter=self.reporter, create=create
        )
        lib.read_only = read_only  # reading sides never take the write lock
        lib.limit_sql(self.settings.sql_timeout_s)
        return lib

    def close(self) -> None:
        for lib in (self.reader, self._reviewer, self._writer):
            if lib is not None:
                lib.close()

    def reviewing(self, call: Callable[[Library], T]) -> T:
        """``call`` on a reading library of its own (duplicate groups can take minutes: they
        must not hold up searches), one at a time; :class:`LibraryLocked` while one runs."""
        if not self._review_lock.acquire(blocking=False):
            raise LibraryLocked("duplicates are being listed already; try again when that ends")
        try:
            if self._reviewer is None:
                self._reviewer = self._open()
            return call(self._reviewer)
        finally:
            self._review_lock.release()

    def searching(self, call: Callable[[Library], T]) -> T:
        """``call(reader)`` alone among searches: the index cache is not shared across threads
        (a search takes milliseconds)."""
        with self._search_lock:
            return call(self.reader)

    def search_upload(
        self,
        data: bytes,
        name: str,
        k: int,
        where: str | None,
        model: str | None,
        texts: list[str] | None = None,
    ) -> QueryResult:
        """Embed (one upload at a time: loading the model, the first time, takes seconds), then
        search; searches by id go on meanwhile. The model is fixed first, so a switch in
        between cannot mix two models' vectors."""
        with self._embed_lock:
            if model is None:
                active = self.reader.model()
                if active is None:
                    raise ImgvecError("the library has no model yet: add images first")
                model = active.name
            vector = self.reader.embed_image(data, model, self.settings.max_upload_pixels)
            if texts:
                vector = combine([vector, *self.reader.embed_texts(texts, model)])
        return self.searching(lambda lib: lib.query_vector(vector, name, k, where, model))

    def embed_texts(self, texts: list[str], model: str | None) -> np.ndarray:
        """The words' vectors, one embedding at a time, as :meth:`search_upload` does."""
        with self._embed_lock:
            return self.reader.embed_texts(texts, model)

    @contextmanager
    def writing(self, wait: bool = False) -> Iterator[Library]:
        """The writing library, one write at a time: raises :class:`Forbidden` without
        ``--allow-writes`` (unless ``wait``: the watcher's own writes), :class:`LibraryLocked`
        while another write of this server runs."""
        if not (self.settings.allow_writes or wait):
            raise Forbidden("this server is read-only; start it with --allow-writes to change")
        if not self._write_lock.acquire(blocking=wait):
            raise LibraryLocked("another write of this server is running; try again when it ends")
        try:
            if self._writer is None:
                self._writer = self._open(create=True, read_only=False)
            yield self._writer
        finally:
            self._write_lock.release()


def create_app(settings: Settings, server: Server | None = None) -> FastAPI:
    """The application for ``settings`` (tests pass their own ``server``)."""
    server = server or Server(settings)
    # FastAPIOffline: /docs with Swagger UI's files served from the package, not a CDN (the
    # machine may be offline; the page must not fetch from elsewhere).
    app = FastAPIOffline(
        title="imgvec",
        summary="Search a photo library by image: the imgvec HTTP API",
        version="1",
        redoc_url=None,
        favicon_url="data:,",
    )
    app.state.server = server
    hosts = security.allowed_hosts(settings.host, settings.port)
    upload_limit = settings.max_upload_bytes + MULTIPART_SLACK

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Any]) -> Response:
        if hosts is not None and host_of(request.headers.get("host", "")) not in hosts:
            return problem(400, "unexpected Host header (the server answers on loopback only)")
        if request.headers.get("sec-fetch-site") == "cross-site":
            # A browser on another site's page (an <img>, a form): never ours to answer.
            return problem(403, "cross-site requests are refused")
        token = security.presented(
            request.headers.get("authorization"),
            request.cookies.get(security.COOKIE),
            request.query_params.get("token"),
        )
        if not security.allowed(settings.token, token):
            if token:
                return problem(401, "wrong token")
            return problem(401, "a token is needed: Authorization: Bearer TOKEN, or ?token=TOKEN")
        if request.method in ("POST", "PUT", "PATCH"):
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                return problem(411, "a request body needs a Content-Length")
            if int(length) > upload_limit:
                return problem(
                    413, f"request too large ({length} bytes, limit {settings.max_upload_bytes})"
                )
        try:
            response: Response = await call_next(request)
        except Exception as error:  # what no handler took: a fault of imgvec's own
            return _unexpected(request, error)
        if settings.token and request.query_params.get("token") == token and token:
            response.set_cookie(
                security.COOKIE, token, httponly=True, samesite="strict", max_age=7 * 86400
            )
        return response

    for error_type, status in _STATUS:
        app.add_exception_handler(error_type, _handler(status))
    app.add_exception_handler(NotFound, _handler(404))
    app.add_exception_handler(Forbidden, _handler(403))
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http_error)

    # --- the page ------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(_page_file("index.html").decode())

    @app.get("/page/{name}", include_in_schema=False)
    def page_file(name: str) -> Response:
        if name not in PAGE_FILES:
            raise NotFound(f"no page file {name!r}")
        return Response(_page_file(name), media_type=PAGE_FILES[name])

    # --- reading -------------------------------------------------------------------------------

    @app.get("/api/status", summary="What the library holds (as `imgvec status --json`)")
    def status() -> Json:
        return Json({**server.reader.status().to_json(), "writes": settings.allow_writes})

    @app.get("/api/models", summary="Every model, complete or not (as `imgvec model list --json`)")
    def models() -> Json:
        return Json([model.to_json() for model in server.reader.models()])

    @app.get("/api/index", summary="The active index version (as `imgvec index status --json`)")
    def index() -> Json:
        info = server.reader.index_status()
        return Json(None if info is None else info.to_json(behind=True))

    @app.get(
        "/api/search",
        summary="The k images most like a library image (by its id), or words, or both",
        description="`text` (repeatable) needs a model with a text tower (CLIP, SigLIP: "
        "`imgvec models`); with `id`, the image and the words are combined as `imgvec query "
        "IMAGE --text WORDS` does.",
    )
    def search_by_id(
        id: Annotated[
            int | None,
            Query(ge=1, le=MAX_ID, description="A library image id (`imgvec sql`, results)"),
        ] = None,
        text: Annotated[list[str] | None, Query(description="Words to search for")] = None,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = DEFAULT_K,
        where: Annotated[str | None, Query(description="SQL condition on `photos`")] = None,
        model: str | None = None,
    ) -> Json:
        texts = _texts(text)
        if id is None and not texts:
            raise ImgvecError("give an image id (`id`), words (`text`), or both")
        words = server.embed_texts(texts, model or None) if texts else None
        if id is None:
            assert words is not None
            label = text_label(texts)
            result = server.searching(
                lambda lib: lib.query_vector(combine(list(words)), label, k, _blank(where), model)
            )
            result.vector_source = "text"
        else:
            result = server.searching(
                lambda lib: lib.query_id(id, k, _blank(where), model or None, words)
            )
        return Json(result.to_json())

    @app.post(
        "/api/search",
        summary="The k images most like an uploaded image",
        description="The body is the image itself (any Content-Type), or a multipart form with "
        "the image in the field `image`; `text` (repeatable) combines words with it, for a model "
        "with a text tower. Nothing is written to the library.",
    )
    async def search_by_upload(
        request: Request,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = DEFAULT_K,
        where: str | None = None,
        model: str | None = None,
        text: Annotated[
            list[str] | None, Query(description="Words to combine with the image")
        ] = None,
    ) -> Json:
        texts = _texts(text)
        data, name = await _upload(request)
        if len(data) > settings.max_upload_bytes:
            raise ImageTooLarge(
                f"upload too large ({len(data)} bytes, limit {settings.max_upload_bytes})"
            )
        if not data:
            raise ImageError("empty upload (0 bytes)")

        found = await run_in_threadpool(
            server.search_upload, data, name, k, _blank(where), model or None, texts
        )
        return Json(found.to_json())

    @app.get("/api/images/{image_id}", summary="An image's row of the `photos` view")
    def image(image_id: ImageId) -> Json:
        row = server.reader.image(image_id)
        if row is None:
            raise NotFound(f"no image with id {image_id} in the library")
        return Json(row)

    @app.get("/api/images/{image_id}/thumbnail", summary="A JPEG thumbnail (cached on disk)")
    def thumbnail(image_id: ImageId, size: int = 256) -> Response:
        data = server.reader.thumbnail(image_id, size)
        return Response(
            data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"}
        )

    @app.get("/api/images/{image_id}/file", summary="The image file itself")
    def image_file(image_id: ImageId) -> FileResponse:
        row = server.reader.image(image_id)
        if row is None:
            raise NotFound(f"no image with id {image_id} in the library")
        path = Path(str(row["path"]))
        if not path.is_file():
            raise NotFound(f"image {image_id}'s file is gone: {path}")
        return FileResponse(path, filename=path.name, content_disposition_type="inline")

    @app.get("/api/dupes", summary="Groups of duplicates (as `imgvec dupes --json`)")
    def dupes(threshold: float | None = None, keep: str = "best", where: str | None = None) -> Json:
        report = server.reviewing(
            lambda lib: lib.dupes(threshold=threshold, keep=keep, where=_blank(where))
        )
        return Json(report.to_json())

    @app.get("/api/sql", summary="One read-only SQL statement (as `imgvec sql --json`)")
    def sql(q: Annotated[str, Query(description="The statement")]) -> Json:
        result = server.reader.sql(q)
        return Json(result.to_json(), headers={"X-Imgvec-Truncated": str(result.truncated).lower()})

    # --- writing (--allow-writes) --------------------------------------------------------------

    @app.post("/api/add", summary="Add files and folders (as `imgvec add --json`)")
    def add(
        paths: Annotated[list[str], Body(embed=True, min_length=1)],
        prune: Annotated[bool, Body(embed=True)] = False,
    ) -> Json:
        with server.writing() as lib:
            return Json(lib.add(_absolute(paths), prune=prune).to_json())

    @app.post("/api/remove", summary="Remove files and folders (as `imgvec remove --json`)")
    def remove(paths: Annotated[list[str], Body(embed=True, min_length=1)]) -> Json:
        with server.writing() as lib:
            return Json(lib.remove(_absolute(paths)).to_json())

    @app.post("/api/dupes/move", summary="Move non-keepers aside (as `imgvec dupes --move-to`)")
    def dupes_move(
        target: Annotated[str, Body(embed=True)],
        threshold: Annotated[float | None, Body(embed=True)] = None,
        keep: Annotated[str, Body(embed=True)] = "best",
        where: Annotated[str | None, Body(embed=True)] = None,
    ) -> Json:
        [target] = _absolute([target])
        with server.writing() as lib:
            report = lib.dupes(threshold=threshold, keep=keep, where=_blank(where))
            return Json(lib.move_dupes(report, target).to_json())

    @app.post("/api/dupes/undo", summary="Put moved duplicates back (as `imgvec dupes undo`)")
    def dupes_undo(every_run: Annotated[bool, Body(embed=True, alias="all")] = False) -> Json:
        with server.writing() as lib:
            return Json(lib.undo_dupes(every_run).to_json())

    return app


class Json(JSONResponse):
    """JSON as the CLI's ``--json`` prints it: values JSON lacks (datetimes) as ``str()`` gives
    them, so both read alike."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=str, ensure_ascii=False).encode()


def problem(status: int, message: str) -> Json:
    """THE error response: ``{"error": "one line"}``."""
    return Json({"error": message}, status_code=status)


def _handler(status: int) -> Callable[[Request, Exception], Response]:
    def handle(_request: Request, error: Exception) -> Response:
        return problem(status, str(error))

    return handle


ImageId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="A library image id")]


def _invalid(_request: Request, error: Exception) -> Response:
    """A parameter FastAPI could not take: 422, naming the parameter and why, in one line."""
    assert isinstance(error, RequestValidationError)
    reasons = [
        f"{'.'.join(str(part) for part in e['loc'] if part not in ('query', 'path', 'body'))}"
        f": {e['msg']}"
        for e in error.errors()
    ]
    return problem(422, "; ".join(reasons) or "invalid request")


def _http_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return problem(error.status_code, str(error.detail))


def _unexpected(request: Request, error: Exception) -> Response:
    """A fault of imgvec's own: 500, and one line in the log (not a traceback on the terminal)."""
    reason = f"{type(error).__name__}: {error}".splitlines()[0][:300]
    log.error("%s %s: %s", request.method, request.url.path, reason)
    return problem(500, f"internal error: {reason}")


def _texts(text: list[str] | None) -> list[str]:
    """The ``text`` parameters: none may be blank, at most :data:`MAX_TEXTS` of at most
    :data:`MAX_TEXT` characters (:class:`ImgvecError`, 400, otherwise)."""
    texts = list(text or [])
    if any(not t.strip() for t in texts):
        raise ImgvecError("a text to search for must not be empty")
    if len(texts) > MAX_TEXTS or any(len(t) > MAX_TEXT for t in texts):
        raise ImgvecError(f"at most {MAX_TEXTS} texts of at most {MAX_TEXT} characters")
    return texts


def _blank(where: str | None) -> str | None:
    """No condition for an empty or blank ``where``."""
    return where if where and where.strip() else None


def _absolute(paths: list[str]) -> list[str]:
    """Paths sent to the server must be absolute: its working folder is nothing to its clients."""
    relative = [path for path in paths if not os.path.isabs(path)]
    if relative:
        raise ImgvecError(f"paths must be absolute: {relative[0]!r}")
    return paths


def host_of(header: str) -> str:
    """The host of a ``Host`` header, without the port (``[::1]:8765`` -> ``[::1]``)."""
    if header.startswith("["):
        return header[: header.find("]") + 1]
    return header.split(":", 1)[0]


async def _upload(request: Request) -> tuple[bytes, str]:
    """The uploaded bytes and a name for them: a multipart form's ``image`` field, or the body."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=1)
        field = form.get("image")
        if field is None or isinstance(field, str):
            raise ImageError("the form has no file in the field 'image'")
        return await field.read(), field.filename or "upload"
    # X-Filename: the page sends the dropped file's name percent-encoded (headers are Latin-1);
    # raw UTF-8 bytes, as curl sends them, are read as UTF-8 too.
    name = request.headers.get("x-filename", "upload")
    with contextlib.suppress(UnicodeError):
        name = name.encode("latin-1").decode("utf-8")
    return await request.body(), unquote(name)


def _page_file(name: str) -> bytes:
    return resources.files("imgvec.serve").joinpath("page", name).read_bytes()
