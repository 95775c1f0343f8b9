"""``imgvec export`` / ``imgvec import``: a model's vectors in a file, restored without the model.

An export holds, for every image with a vector for the model: its id (in the exporting library),
path, content hash and vector (float32), plus the model identity (name, layer, weights,
preprocessing, dim). Formats:

- ``npz`` (NumPy): arrays ``ids``, ``vectors``, ``paths``, ``hashes`` and ``model`` (a JSON
  string of the identity);
- ``parquet`` (pyarrow): columns ``id``, ``path``, ``content_hash``, ``vector``
  (``fixed_size_list<float32>[dim]``), the identity as JSON under the schema metadata key
  ``imgvec``;
- ``hdf5`` (h5py): datasets ``ids``, ``vectors``, ``paths``, ``hashes``, the identity as file
  attributes (and as JSON in the attribute ``imgvec``).

Import matches each exported row to a library image by content hash, or, where a hash is
missing, by path; a path whose content differs is not imported (its vector would be wrong).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgvec.atomic import atomic_write
from imgvec.errors import ImgvecError
from imgvec.ops.parts import Parts
from imgvec.storage import store
from imgvec.storage.schema import EmbeddingModel
from imgvec.types import ExportInfo, ImportInfo, ModelInfo

FORMATS = ("npz", "parquet", "hdf5")
EXTENSIONS = {
    ".npz": "npz",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
}
FORMAT_VERSION = 1
IDENTITY_KEYS = ("name", "layer", "weights", "preprocessing", "dim")
METADATA_KEY = "imgvec"
BATCH = 1_000


@dataclass
class _Exported:
    identity: dict[str, Any]
    ids: np.ndarray
    paths: list[str]
    hashes: list[str]
    vectors: np.ndarray


def detect_format(path: Path, fmt: str | None = None) -> str:
    """The format named, or the one the file extension says."""
    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise ImgvecError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        return fmt
    found = EXTENSIONS.get(Path(path).suffix.lower())
    if found is None:
        raise ImgvecError(
            f"cannot tell the format of {path} from its extension; use .npz, .parquet, .h5 or "
            ".hdf5, or name the format (npz, parquet, hdf5)"
        )
    return found


# --- export --------------------------------------------------------------------------------------


def export_vectors(
    parts: Parts, row: EmbeddingModel, out: Path, fmt: str | None = None
) -> ExportInfo:
    """Write the vectors of the model ``row`` to ``out``, atomically."""
    out = Path(out)
    fmt = detect_format(out, fmt)
    writer = _require(fmt)  # fail before reading anything if the format's package is missing
    with parts.sessions() as session:
        ids, vectors = store.all_vectors(session, row.id, row.dim)
        info = store.image_identities(session, ids.tolist())
    paths = [info[int(i)][0] for i in ids]
    hashes = [info[int(i)][1] or "" for i in ids]
    identity = _identity(row)
    data = _Exported(identity, ids, paths, hashes, np.ascontiguousarray(vectors, np.float32))
    atomic_write(out, lambda temp: writer(temp, data))
    return ExportInfo(
        str(out), fmt, ModelInfo.of(row).label(), len(ids), row.dim, out.stat().st_size
    )


def _identity(row: EmbeddingModel) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "name": row.name,
        "layer": row.layer,
        "weights": row.weights,
        "weights_path": row.weights_path,
        "preprocessing": row.preprocessing,
        "dim": row.dim,
    }


def _require(fmt: str) -> Any:
    """The writer of a format, checking that its optional package is installed."""
    package = {"parquet": "pyarrow", "hdf5": "h5py"}.get(fmt)
    if package is not None:
        try:
            __import__(package)
        except ImportError:
            raise ImgvecError(
                f"the {fmt} format needs the {package} package: pip install {package}"
            ) from None
    return {"npz": _write_npz, "parquet": _write_parquet, "hdf5": _write_hdf5}[fmt]


def _write_npz(path: Path, data: _Exported) -> None:
    with open(path, "wb") as handle:  # a handle: np.savez would append .npz to a name
        np.savez(
            handle,
            ids=data.ids.astype(np.int64),
            vectors=data.vectors,
            paths=np.array(data.paths, dtype=str),
            hashes=np.array(data.hashes, dtype=str),
            model=np.array(json.dumps(data.identity)),
        )


def _write_parquet(path: Path, data: _Exported) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = int(data.identity["dim"])
    flat = pa.array(data.vectors.reshape(-1), type=pa.float32())
    table = pa.table(
        {
            "id": pa.array(data.ids, type=pa.int64()),
            "path": pa.array(data.paths, type=pa.string()),
            "content_hash": pa.array(data.hashes, type=pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
        }
    )
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(data.identity)})
    pq.write_table(table, path)


def _write_hdf5(path: Path, data: _Exported) -> None:
    import h5py

    strings = h5py.string_dtype()
    with h5py.File(path, "w") as handle:
        handle.create_dataset("ids", data=data.ids.astype(np.int64))
        handle.create_dataset("vectors", data=data.vectors.reshape(-1, int(data.identity["dim"])))
        handle.create_dataset("paths", data=np.array(data.paths, dtype=object), dtype=strings)
        handle.create_dataset("hashes", data=np.array(data.hashes, dtype=object), dtype=strings)
        handle.attrs[METADATA_KEY] = json.dumps(data.identity)
        for key, value in data.identity.items():
            if value is not None:
                handle.attrs[key] = value


# --- import --------------------------------------------------------------------------------------


def read_export(path: Path) -> tuple[str, _Exported]:
    """(format, contents) of an export file, checked for consistency."""
    path = Path(path)
    if not path.is_file():
        raise ImgvecError(f"no such file: {path}")
    fmt = detect_format(path)
    _require(fmt)
    try:
        data = {"npz": _read_npz, "parquet": _read_parquet, "hdf5": _read_hdf5}[fmt](path)
    except (OSError, ValueError, KeyError) as error:
        raise ImgvecError(f"{path} is not an imgvec {fmt} export: {error}") from None
    missing = [key for key in IDENTITY_KEYS if key not in data.identity]
    if missing:
        raise ImgvecError(f"{path} does not say which model made its vectors (no {missing[0]})")
    dim = int(data.identity["dim"])
    if data.vectors.ndim != 2 or data.vectors.shape[1] != dim:
        raise ImgvecError(
            f"{path} declares {dim}-d vectors of model {data.identity['name']} but holds vectors "
            f"of shape {data.vectors.shape}"
        )
    n = len(data.vectors)
    if not len(data.ids) == len(data.paths) == len(data.hashes) == n:
        raise ImgvecError(f"{path} is damaged: its ids, paths, hashes and vectors differ in number")
    return fmt, data


def _read_npz(path: Path) -> _Exported:
    with np.load(path, allow_pickle=False) as npz:
        return _Exported(
            json.loads(str(npz["model"])),
            npz["ids"].astype(np.int64),
            [str(p) for p in npz["paths"]],
            [str(h) for h in npz["hashes"]],
            np.asarray(npz["vectors"], dtype=np.float32),
        )


def _read_parquet(path: Path) -> _Exported:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(METADATA_KEY.encode())
    if raw is None:
        raise ValueError(f"no {METADATA_KEY!r} schema metadata")
    column = table.column("vector").combine_chunks()
    if not pa.types.is_fixed_size_list(column.type):
        raise ValueError("the vector column is not a fixed-size list")
    size = column.type.list_size
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return _Exported(
        json.loads(raw),
        table.column("id").to_numpy().astype(np.int64),
        [str(p) for p in table.column("path").to_pylist()],
        [str(h or "") for h in table.column("content_hash").to_pylist()],
        values.reshape(-1, size) if size else values.reshape(len(table), 0),
    )


def _read_hdf5(path: Path) -> _Exported:
    import h5py

    with h5py.File(path, "r") as handle:
        raw = handle.attrs.get(METADATA_KEY)
        if raw is None:
            raise ValueError(f"no {METADATA_KEY!r} attribute")
        return _Exported(
            json.loads(raw),
            np.asarray(handle["ids"][()], dtype=np.int64),
            list(handle["paths"].asstr()[()]),
            list(handle["hashes"].asstr()[()]),
            np.asarray(handle["vectors"][()], dtype=np.float32),
        )


def import_vectors(parts: Parts, path: Path) -> ImportInfo:
    """Store an export's vectors for the images of this library they belong to (no model runs),
    then bring that model's index up to date. The caller holds the write lock."""
    fmt, data = read_export(path)
    with parts.sessions() as session, session.begin():
        row, created = _model_row(session, data.identity)
    with parts.sessions() as session:
        by_hash: dict[str, list[int]] = {}
        by_path: dict[str, tuple[int, str | None]] = {}
        for image_id, image_path, content_hash in store.readable_images(session):
            by_path[image_path] = (image_id, content_hash)
            if content_hash:
                by_hash.setdefault(content_hash, []).append(image_id)
        have = set(store.vector_ids(session, row.id))
    counts = {"by_hash": 0, "by_path": 0, "unmatched": 0, "changed": 0, "already": 0}
    todo: dict[int, int] = {}  # library image id -> row in the file
    for position, (image_path, content_hash) in enumerate(
        zip(data.paths, data.hashes, strict=True)
    ):
        if content_hash and content_hash in by_hash:
            targets = by_hash[content_hash]
            counts["by_hash"] += 1
        elif image_path in by_path:
            image_id, library_hash = by_path[image_path]
            if content_hash and library_hash:
                counts["changed"] += 1
                continue
            targets = [image_id]
            counts["by_path"] += 1
        else:
            counts["unmatched"] += 1
            continue
        for image_id in targets:
            if image_id in have:
                counts["already"] += 1
            else:
                todo.setdefault(image_id, position)
    items = sorted(todo.items())
    for start in range(0, len(items), BATCH):
        with parts.sessions() as session, session.begin():
            for image_id, position in items[start : start + BATCH]:
                store.put_vector(
                    session, image_id, row.id, store.vector_to_bytes(data.vectors[position])
                )
    with parts.sessions() as session:
        stored = store.count_vectors(session, row.id)
    if stored:
        parts.indexes.of(row).update()
    return ImportInfo(
        path=str(path),
        format=fmt,
        model=ModelInfo.of(row).label(),
        rows=len(data.ids),
        imported=len(items),
        by_hash=counts["by_hash"],
        by_path=counts["by_path"],
        unmatched=counts["unmatched"],
        changed=counts["changed"],
        already_present=counts["already"],
        created_model=created,
    )


def _model_row(session: Any, identity: dict[str, Any]) -> tuple[EmbeddingModel, bool]:
    """The library's row for the exported model identity, created if absent (and made active
    only when the library has no active model)."""
    name, layer, weights = str(identity["name"]), str(identity["layer"]), str(identity["weights"])
    dim = int(identity["dim"])
    weights_path = identity.get("weights_path")
    row, created = store.model_row(
        session,
        name,
        layer,
        weights,
        preprocessing=str(identity["preprocessing"]),
        dim=dim,
        weights_path=weights_path if weights_path and os.path.isfile(weights_path) else None,
    )
    if row.dim != dim or row.preprocessing != identity["preprocessing"]:
        raise ImgvecError(
            f"the library's model {name}/{layer} ({weights}) is {row.dim}-d with preprocessing "
            f"{row.preprocessing!r}; the file says {dim}-d with {identity['preprocessing']!r}"
        )
    if store.active_model(session) is None:
        store.set_active_model(session, row)
    return row, created
