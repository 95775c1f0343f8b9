"""The ``imgvec`` command's entry point (also ``python -m imgvec``).

Importing the command line takes a second (SQLAlchemy, Rich, Typer, Pillow); a Ctrl-C meanwhile
must end like one later on: a single line and exit code 130, not a traceback. So this module
imports nothing of imgvec's until it can catch that.
"""

from __future__ import annotations

import sys
import time

EXIT_INTERRUPTED = 130


def main() -> None:
    started = time.perf_counter()
    try:
        from imgvec.cli.app import main as run
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        raise SystemExit(EXIT_INTERRUPTED) from None
    from imgvec import reporting

    reporting.command_started = time.perf_counter()
    reporting.import_seconds = reporting.command_started - started
    run()


if __name__ == "__main__":
    main()
