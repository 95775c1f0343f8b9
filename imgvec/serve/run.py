"""Starting the server: the token, the watcher, uvicorn."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

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
    host = f"[{settings.host.strip('[]')}]" if ":" in settings.host else settings.host
    url = f"http://{host}:{port}/"
    say(f"Serving the library at {server.reader.paths.root} on {url} (API: {url}docs)")
    if settings.token is not None:
        where = "generated for this run" if generated else "given"
        say(f"Every request needs the token ({where}); open {url}?token={settings.token}")
    if settings.watch:
        say(f"Watching {', '.join(settings.watch)}: changes are added as they happen")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if watcher is not None:
        watcher.start()
    try:
        config = uvicorn.Config(app, log_level="warning")
        uvicorn.Server(config).run(sockets=[listening])
    finally:
        if watcher is not None:
            watcher.stop()
        server.close()


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
