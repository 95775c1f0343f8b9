"""The ``imgvec`` command line: :mod:`imgvec.cli.app` (commands), :mod:`imgvec.cli.render`."""

from imgvec.cli.app import app, main

__all__ = ["app", "main"]
