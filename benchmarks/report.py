"""Writing a benchmark's section into BENCHMARKS.md, leaving the other sections as they are."""

from __future__ import annotations

import os
from pathlib import Path


def write_section(out: Path, text: str, start: str, end: str, header: str) -> None:
    """Replace the section between ``start`` and ``end`` in ``out`` (append it if absent; the
    file, if missing, begins with ``header``). ``text`` includes both markers."""
    current = out.read_text() if out.exists() else header
    first, last = current.find(start), current.find(end)
    if first != -1 and last > first:
        updated = current[:first] + text + current[last + len(end) :]
    else:
        updated = current.rstrip("\n") + "\n\n" + text + "\n"
    temporary = out.with_name(f".{out.name}.tmp")
    temporary.write_text(updated)
    os.replace(temporary, out)
