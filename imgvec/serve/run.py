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
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    try:
        listening = socket.create_server((settings.host.strip("[]"), settings.port), family=family)
    except OSError as error:
        server.close()
        raise OSError(
            f"cannot listen on {settings.host}:{settings.port}: {error.strerror}"
        ) from None
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
