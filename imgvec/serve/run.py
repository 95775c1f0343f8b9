"""Starting the server: the token, the watcher, uvicorn."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from urllib.parse import quote

import uvicorn

from imgvec.errors import LibraryLocked
from imgvec.serve import security
from imgvec.serve.app import Server, Settings, create_app, log


def serve(settings: Settings, say: Callable[[str], None]) -> None:
    """Serve until Ctrl-C. Tells ``say`` where, and the token when one is needed (a generated
    one is printed: it is the only way to learn it)."""
    settings.token, generated = security.needed_token(settings.host, settings.token)
    server = Server(settings)
    app = create_app(settings, server)
    watcher = None
    if settings.watch:
        from imgvec.serve.watch import Watcher

        watcher = Watcher(
            settings.watch,
            lambda folders: _add(server, folders),
            lambda error: log.error("watching: %s", error),
            ignore=server.reader.paths.root,
        )
    # Bound here, before anything is printed: the address printed is listening (port 0 takes a
    # free port), and a taken port is an error before any output.
    try:
        listening = _listen(settings.host.strip("[]"), settings.port)
    except OSError as error:
        server.close()
        where = f"{settings.host}:{settings.port}"
        raise OSError(f"cannot listen on {where}: {error.strerror or error}") from None
    port = listening.getsockname()[1]
    url = f"http://{_address(settings.host)}:{port}/"
    say(f"Serving the library at {server.reader.paths.root} on {url} (API: {url}docs)")
    if settings.token is not None:
        where = "generated for this run" if generated else "given"
        say(f"Every request needs the token ({where}); open {url}?token={quote(settings.token)}")
    if settings.watch:
        say(f"Watching {', '.join(settings.watch)}: changes are added as they happen")
    _log_imgvec_only()
    if watcher is not None:
        watcher.start()
    try:
        config = uvicorn.Config(app, log_config=None, access_log=False)
        uvicorn.Server(config).run(sockets=[listening])
    finally:
        if watcher is not None:
            watcher.stop()
        server.close()


def _address(host: str) -> str:
    """The address to print for a listening host: this machine's name for the wildcard ones
    (``0.0.0.0`` and ``::`` are not addresses a browser can open), IPv6 in brackets."""
    bare = host.strip("[]")
    if bare in ("0.0.0.0", "::", ""):
        return socket.gethostname()
    return f"[{bare}]" if ":" in bare else bare


def _log_imgvec_only() -> None:
    """imgvec's own lines on stderr, one per event; libraries' chatter (FAISS's loader, Alembic,
    python-multipart's parser) stays below warnings, where it is not shown."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    ours = logging.getLogger("imgvec")
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
    # uvicorn's own warnings ("Invalid HTTP request received": a port scanner, a TLS client)
    # are not requests imgvec could answer; its errors still show.
    for chatty in ("faiss", "alembic", "python_multipart", "multipart", "uvicorn"):
        logging.getLogger(chatty).setLevel(logging.ERROR)


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket. Made with ``IPPROTO_TCP`` named: asyncio turns Nagle's algorithm
    off (TCP_NODELAY) only on sockets whose ``proto`` says TCP, and :func:`socket.create_server`
    leaves it 0; with Nagle on, each answer on a kept-alive connection waited about 40 ms for the
    client's delayed ACK (measured: 44 ms against 1.3 ms)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
        listening.listen(socket.SOMAXCONN)
    except OSError:
        listening.close()
        raise
    return listening


def _add(server: Server, folders: list[str]) -> bool:
    """One watched batch: the incremental add of the folders that changed; False (try again
    with the next batch) while another process writes to the library."""
    try:
        with server.writing(wait=True) as lib:
            report = lib.add(folders)
    except LibraryLocked:
        log.info("the library is busy (another imgvec writes); trying again shortly")
        return False
    log.info("watch: %s in %s", report.summary(), ", ".join(folders))
    return True
