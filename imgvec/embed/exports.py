"""Each model's ONNX export, an artifact of the library (issue 15): the file queries run with
ONNX Runtime instead of importing torch.

Kept like an index segment (:mod:`imgvec.index.artifacts`): written atomically into the
library's ``models/`` folder under a name made of the model's id and the exported bytes'
sha256, then recorded in ``model_exports`` with the sha256 and size of its files. A model with
large weights is kept as two files, ONNX's external-data layout: the graph (``.onnx``) and its
weights (``.weights``, beside it, named alike), which ONNX Runtime maps instead of parsing and
copying them: vit_b_16's session opens in 0.12 s against 0.9-1.9 s from one 343 MB file
(BENCHMARKS.md, "A cold query"). Exports made before are one file, and stay valid. A file that
is missing or does not match its record is never run: the model runs on torch, and the export
is made again by the next command that may write. A model that cannot be exported (a
registered model the exporter cannot trace) is recorded with the reason, so it is tried once,
not on every command.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from imgvec.atomic import TEMP_PREFIX, atomic_write

if TYPE_CHECKING:  # the cold query (imgvec.ops.cold_query) reads exports without SQLAlchemy
    from sqlalchemy.orm import Session

    from imgvec.storage.schema import ModelExport

EXPORT_DIR = "models"
OUR_FILE = re.compile(r"m\d+-[0-9a-f]{12}\.(onnx|weights)")
"""Names imgvec gives export files."""
WEIGHTS_SUFFIX = ".weights"
EXTERNAL_MIN_BYTES = 1024
"""Initializers of at least this size go to the weights file (``onnx``'s own default)."""


@dataclass(frozen=True)
class Stored:
    """What a library holds of a model's export."""

    source: bytes | str | None = None
    """What ONNX Runtime loads: the export's graph file (its weights file beside it), its sizes
    checked; or a whole model's bytes (just made, or shipped to a Ray worker). None: there is
    no usable export."""
    problem: str | None = None
    """Why a recorded export is not usable (its file is missing or damaged)."""
    failed: str | None = None
    """Why the model could not be exported (recorded; not tried again)."""
    path: str | None = None
    sha256: str | None = None
    """The recorded sha256 of the export's files, graph then weights: :func:`verified`
    compares them (None: just made)."""
    exporter: str | None = None
    """What made the export, or failed to (``torch <version>, opset <n>``)."""


class Record(Protocol):
    """What a ``model_exports`` row has (the ORM row, or the cold query's)."""

    path: str | None
    size_bytes: int | None
    sha256: str | None
    error: str | None
    exporter: str


def load(root: Path, session: Session, model_id: int, verify: bool = True) -> Stored:
    """The model's export as recorded, checked (see :func:`read`)."""
    from imgvec.storage import store

    return read(root, store.model_export(session, model_id), verify)


def read(root: Path, row: Record | None, verify: bool = True) -> Stored:
    """The export a record names, checked: its files' sizes (a stat each), and with ``verify``
    their sha256 (else the caller calls :func:`verified` before it trusts the vectors: 0.2-0.4 s
    for vit_b_16's 343 MB, which can run beside the runtime's loading)."""
    if row is None:
        return Stored()
    if row.path is None:
        return Stored(failed=row.error or "unknown reason", exporter=row.exporter)
    try:
        size = size_on_disk(root / row.path)
    except OSError as error:
        return Stored(problem=f"its file {row.path} cannot be read ({error.strerror or error})")
    if size != row.size_bytes:
        return Stored(problem=f"its file {row.path} is damaged (its size does not match)")
    stored = Stored(str(root / row.path), path=row.path, sha256=row.sha256)
    return verified(stored) if verify else stored


def files(graph: Path) -> list[Path]:
    """An export's files: the graph, and its weights file where it has one."""
    weights = graph.with_suffix(WEIGHTS_SUFFIX)
    return [graph, weights] if weights.exists() else [graph]


def size_on_disk(graph: Path) -> int:
    """THE size an export's record holds: its files' sizes summed (a stat each). Raises
    OSError when the graph cannot be read."""
    return sum(path.stat().st_size for path in files(graph))


def verified(stored: Stored) -> Stored:
    """``stored``, or why its bytes are not the recorded ones (sha256 of its files, graph then
    weights, read in chunks; hashlib releases the GIL)."""
    if stored.source is None or stored.sha256 is None:
        return stored
    digest = hashlib.sha256()
    if isinstance(stored.source, bytes):
        digest.update(stored.source)
    else:
        try:
            for path in files(Path(stored.source)):
                with path.open("rb") as handle:
                    while chunk := handle.read(1 << 22):
                        digest.update(chunk)
        except OSError as error:
            return Stored(problem=f"its file {stored.path} cannot be read ({error.strerror})")
    if digest.hexdigest() == stored.sha256:
        return stored
    return Stored(problem=f"its file {stored.path} is damaged (its sha256 does not match)")


def whole(stored: Stored) -> Stored:
    """``stored`` as one model's bytes (its weights inside), checked against its sha256 first:
    what a Ray worker that cannot read the library's files is sent."""
    checked = verified(stored)
    if checked.source is None or isinstance(checked.source, bytes):
        return checked
    import onnx

    data = onnx.load(checked.source).SerializeToString()  # reads the weights file too
    return Stored(data, path=checked.path, exporter=checked.exporter)


def split(data: bytes, weights_name: str) -> tuple[bytes, bytes]:
    """An exported model's bytes as (graph, weights): the initializers of at least
    :data:`EXTERNAL_MIN_BYTES` moved to one weights file named ``weights_name`` beside the
    graph, in order (ONNX's external-data layout, which ONNX Runtime resolves relative to the
    graph file). A model without such initializers is its own graph, unchanged (no weights)."""
    import onnx

    model = onnx.load_model_from_string(data)
    weights = bytearray()
    for tensor in model.graph.initializer:
        if not tensor.HasField("raw_data") or len(tensor.raw_data) < EXTERNAL_MIN_BYTES:
            continue
        offset, length = len(weights), len(tensor.raw_data)
        weights += tensor.raw_data
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", weights_name), ("offset", offset), ("length", length)):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
    if not weights:
        return data, b""
    return model.SerializeToString(), bytes(weights)


def describe(row: ModelExport) -> dict[str, Any]:
    """What ``status`` and ``model list`` show of an export record."""
    return {
        "path": row.path,
        "size_bytes": row.size_bytes,
        "sha256": row.sha256,
        "exporter": row.exporter,
        "error": row.error,
    }


def present(root: Path, row: ModelExport) -> bool:
    """The recorded files are there at their recorded size (a stat each: no hashing)."""
    if row.path is None:
        return False
    try:
        return size_on_disk(root / row.path) == row.size_bytes
    except OSError:
        return False


def save(root: Path, session: Session, model_id: int, data: bytes, exporter: str) -> str | None:
    """Write the export (``data``: the model's bytes; atomically, its weights file first: see
    :func:`split`) and record it in ``session``. Returns the graph file (relative to ``root``)
    of the export it replaced, if another: the caller commits, then :func:`delete` s it. The
    caller holds the library's write lock."""
    from imgvec.storage import store

    path = root / EXPORT_DIR / f"m{model_id}-{hashlib.sha256(data).hexdigest()[:12]}.onnx"
    weights_path = path.with_suffix(WEIGHTS_SUFFIX)
    graph, weights = split(data, weights_path.name)
    if weights:
        atomic_write(weights_path, lambda temp: temp.write_bytes(weights))
    else:
        weights_path.unlink(missing_ok=True)
    atomic_write(path, lambda temp: temp.write_bytes(graph))
    old = store.set_model_export(
        session,
        model_id,
        path=relative(path),
        sha256=_sha256(graph, weights),
        size_bytes=len(graph) + len(weights),
        exporter=exporter,
    )
    return None if old == relative(path) else old


def _sha256(*parts: bytes) -> str:
    """The sha256 of the parts one after the other (without joining 343 MB of weights)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def delete(root: Path, path: str) -> None:
    """Delete a replaced export's files (``path``: its graph, relative to ``root``)."""
    for file in files(root / path):
        file.unlink(missing_ok=True)


def record_failure(session: Session, model_id: int, reason: str, exporter: str) -> str | None:
    """Record that the model cannot be exported. Returns an earlier export's file, if any (the
    caller commits, then deletes it)."""
    from imgvec.storage import store

    return store.set_model_export(session, model_id, exporter=exporter, error=reason)


def unwritable(root: Path) -> str | None:
    """Why an export cannot be written into the library's export folder now (it is not a
    folder, or not writable), before seconds go into making one; None: it can."""
    directory = root / EXPORT_DIR
    try:
        directory.mkdir(exist_ok=True)
        probe = directory / f"{TEMP_PREFIX}probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        return f"{EXPORT_DIR}/: {error.strerror or error}"
    return None


def relative(path: Path) -> str:
    """How ``model_exports.path`` names a file of the export folder."""
    return f"{EXPORT_DIR}/{path.name}"


def remove_orphans(root: Path, known: set[str]) -> int:
    """Delete imgvec's files in the export folder that no record names (left by a killed
    writer, or replaced); how many. The caller holds the write lock."""
    directory = root / EXPORT_DIR
    if not directory.is_dir():
        return 0
    removed = 0
    for path in directory.iterdir():
        ours = path.name.startswith(TEMP_PREFIX) or OUR_FILE.fullmatch(path.name) is not None
        graph = path.with_suffix(".onnx") if path.suffix == WEIGHTS_SUFFIX else path
        if ours and path.is_file() and relative(graph) not in known:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
