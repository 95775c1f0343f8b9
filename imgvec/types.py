"""The data imgvec hands out: reports of operations, query hits, model and index information.

Plain dataclasses with no behaviour beyond describing themselves; ``to_json()`` gives the shape
that ``--json`` prints (and the HTTP API will serve), defined once here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any, Protocol, Self


class Data:
    """``to_json()``: the dataclass as a dict (nested dataclasses too), as ``--json`` prints it."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


class ModelRow(Protocol):
    """What a stored model identity has (the database row, or anything alike)."""

    id: int
    name: str
    layer: str
    weights: str
    weights_path: str | None
    preprocessing: str
    dim: int


@dataclass(frozen=True)
class FileError(Data):
    path: str
    reason: str


@dataclass
class ClusterInfo(Data):
    """The Ray cluster a run embedded on (``--ray``)."""

    address: str
    workers: int
    """Worker actors, each with the model loaded once: one per GPU, else one per CPU."""
    ship_bytes: bool = False
    """The writer read the files and sent their bytes (no shared storage)."""
    sent: int = 0
    """Files sent to the workers (a batch sent again counts again); unchanged files are not."""


@dataclass
class AddReport(Data):
    added: int = 0
    updated: int = 0
    moved: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: int = 0
    ignored: int = 0
    """Files in the folders that are not images (or are hidden); ``--verbose`` lists them."""
    kept: int = 0
    """Library images that could not be checked (unreadable or emptied folder): left as they
    were, not removed."""
    errors: list[FileError] = field(default_factory=list)
    known_failures: int = 0
    """Unchanged files that earlier runs could not read (counted in ``unchanged``)."""
    interrupted: bool = False
    runtime: str | None = None
    """What ran the model: ``onnxruntime`` or ``torch``; None when nothing was embedded."""
    ray: ClusterInfo | None = None
    """Where the files were read, decoded and embedded with ``--ray``; None: in this process."""

    def summary(self) -> str:
        text = (
            f"added {self.added}, updated {self.updated}, moved {self.moved}, "
            f"unchanged {self.unchanged}, removed {self.removed}, failed {self.failed}, "
            f"ignored {self.ignored}"
        )
        if self.kept:
            text += f", kept {self.kept} not seen"
        if self.known_failures:
            text += f" ({self.known_failures} unchanged files still unreadable: imgvec status)"
        return text


@dataclass
class SwitchReport(Data):
    model: str
    embedded: int = 0
    reused: int = 0
    already: int = 0
    failed: int = 0
    errors: list[FileError] = field(default_factory=list)
    switched: bool = False
    interrupted: bool = False
    runtime: str | None = None
    """What ran the model: ``onnxruntime`` or ``torch``; None when nothing was embedded."""
    ray: ClusterInfo | None = None
    """Where the images were read, decoded and embedded with ``--ray``; None: in this process."""


@dataclass(frozen=True)
class ModelInfo(Data):
    name: str
    layer: str
    weights: str
    weights_path: str | None
    preprocessing: str
    dim: int

    @classmethod
    def of(cls, row: ModelRow) -> Self:
        """The fields of ``cls`` read from a stored model (the ORM row, or anything alike)."""
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})

    def short_weights(self) -> str:
        return self.weights[:19] + "…" if self.weights.startswith("sha256:") else self.weights

    def label(self) -> str:
        return f"{self.name}/{self.layer} ({self.short_weights()}, {self.dim}-d)"


@dataclass(frozen=True)
class ModelIdentity(ModelInfo):
    """A stored model's identity as plain data, with its row id (a :class:`ModelRow`): what a
    Ray worker is sent, and what the cold query reads without the ORM."""

    id: int


@dataclass(frozen=True)
class QueryHit(Data):
    id: int
    path: str
    score: float


@dataclass
class QueryResult(Data):
    query: str
    hits: list[QueryHit] = field(default_factory=list)
    error: str | None = None
    filter: dict[str, Any] | None = None
    """With ``where``: the condition, how many images matched, and the strategy used."""
    vector_source: str = "embedded"
    """``stored`` when the query image is in the library and its stored vector was used;
    ``text`` for a query by words alone. An image combined with words keeps its own source."""

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "vector": self.vector_source,
            "error": self.error,
            "filter": self.filter,
            "results": [hit.to_json() for hit in self.hits],
        }


@dataclass(frozen=True)
class BackfillReport(Data):
    updated: int
    errors: list[FileError]


@dataclass(frozen=True)
class RemoveReport(Data):
    removed: int
    errors: list[FileError]

    def to_json(self) -> dict[str, Any]:
        return {"removed": self.removed, "errors": [e.to_json() for e in self.errors]}


@dataclass(frozen=True)
class ModelStatus(Data):
    model: ModelInfo
    embeddings: int
    active: bool
    images: int = 0
    complete: bool = False
    """Every readable image has a vector for this model."""
    indexed: bool = False
    export: dict[str, Any] | None = None
    """Its ONNX export: ``path``, ``size_bytes``, ``exporter``, and ``error`` when the model
    could not be exported; None: not made yet."""
    query_runtime: str = "torch"
    """What runs it for a query of a new photo: ``onnxruntime`` (its export is there at its
    recorded size; the content is checked when it is loaded) or ``torch``."""


@dataclass(frozen=True)
class Status(Data):
    library: str
    database: str
    images: int
    failed: int
    models: list[ModelStatus]
    index: IndexVersionInfo | None
    failures: list[FileError]
    vectors: str | None = None
    """The Milvus store that holds the indexes, or None: FAISS files in the library folder."""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["index"] = None if self.index is None else self.index.summary_json()
        return data


@dataclass(frozen=True)
class IndexVersionInfo(Data):
    """One version of a model's index: what it is, how it was made, its segment files."""

    id: int
    kind: str
    params: dict[str, Any]
    n_vectors: int
    change_seq: int
    train_size: int | None
    recall: float | None
    operation: str
    status: str
    created_at: datetime
    segments: list[dict[str, Any]]
    """role, path, n_vectors, size_bytes (bytes), sha256, created_seq of each segment file."""
    behind: bool = False
    """Changes to the vectors since it was made, not yet applied (the next write applies them)."""

    @property
    def size_bytes(self) -> int:
        return sum(int(segment["size_bytes"]) for segment in self.segments)

    def to_json(self, *, behind: bool = False) -> dict[str, Any]:
        """``imgvec index list --json`` (and, with ``behind``, ``imgvec index status --json``)."""
        data = asdict(self)
        data.pop("behind")
        return data | {"behind": self.behind} if behind else data

    def brief_json(self) -> dict[str, Any]:
        """What ``imgvec index build/rebuild/compact/rollback --json`` print."""
        return {
            "version": self.id,
            "kind": self.kind,
            "params": self.params,
            "n_vectors": self.n_vectors,
            "change_seq": self.change_seq,
            "train_size": self.train_size,
            "recall": self.recall,
            "operation": self.operation,
        }

    def summary_json(self) -> dict[str, Any]:
        """The ``index`` of ``imgvec status --json``."""
        return {
            "version": self.id,
            "kind": self.kind,
            "params": self.params,
            "n_vectors": self.n_vectors,
            "segments": len(self.segments),
            "size_bytes": self.size_bytes,
            "recall": self.recall,
            "created_at": self.created_at,
            "stale": self.behind,
        }


@dataclass
class VerifyReport(Data):
    version: int | None
    checked_segments: int = 0
    live_vectors: int = 0
    pending_changes: int = 0
    problems: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    """imgvec's own files that no row names, left by an interrupted write: harmless; the next
    writing command deletes them."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


@dataclass(frozen=True)
class GcReport(Data):
    versions_deleted: int
    files_deleted: int
    bytes_freed: int
    changes_pruned: int


@dataclass(frozen=True)
class ExportInfo(Data):
    path: str
    format: str
    model: str
    """The model's label (see ``ModelInfo.label``)."""
    vectors: int
    dim: int
    size_bytes: int


@dataclass(frozen=True)
class ImportInfo(Data):
    path: str
    format: str
    model: str
    rows: int
    """Rows in the file."""
    imported: int
    """Library images given a vector."""
    by_hash: int
    """Exported rows matched to library images by content hash."""
    by_path: int
    """Exported rows without a usable hash matched by path."""
    unmatched: int
    """Exported images that are not in this library."""
    changed: int = 0
    """Exported rows whose path is in the library with other content (not imported)."""
    already_present: int = 0
    """Matched images that already had a vector for the model (left as they were)."""
    created_model: bool = False


@dataclass(frozen=True)
class DupeMember(Data):
    """One image of a duplicate group."""

    id: int
    path: str
    width: int | None
    height: int | None
    size_bytes: int
    taken_at: str | None
    """ISO 8601, as EXIF gives it (no time zone), or None."""
    similarity: float
    """Cosine similarity of its vector to the keeper's (1.0 for the keeper)."""
    signal: str
    """What makes it a duplicate of the keeper: ``keeper`` (it is the keeper), ``exact`` (same
    content hash), ``phash`` (perceptual hashes within the cut) or ``crop`` (aligns as a crop)."""
    keep: bool


@dataclass(frozen=True)
class DupeGroup(Data):
    """Images that are all duplicates of each other; ``members[0]`` is the one kept."""

    members: list[DupeMember]

    @property
    def keeper(self) -> DupeMember:
        return self.members[0]


@dataclass
class DupesReport(Data):
    groups: list[DupeGroup] = field(default_factory=list)
    model: str = ""
    threshold: float = 0.0
    """The cosine cut candidates had to reach."""
    threshold_source: str = ""
    """``calibrated`` (measured for the model, BENCHMARKS.md), ``--threshold``, or
    ``uncalibrated`` (a model without a measured cut: a conservative default)."""
    keep: str = "best"
    checked: int = 0
    """Images whose neighbours were looked at (all, or with ``--new`` those added since)."""
    candidate_pairs: int = 0
    """Pairs at or above the cosine cut, each checked on pixels."""
    pixel_checks: int = 0
    """Pairs that needed the crop alignment (not settled by content hash or phash)."""
    saturated: int = 0
    """Images with more neighbours above the cut than were looked at (groups may be cut)."""
    errors: list[FileError] = field(default_factory=list)
    """Files that could not be read to check them (skipped)."""

    @property
    def duplicates(self) -> int:
        """Images that would be moved aside (every member but the keepers)."""
        return sum(len(g.members) - 1 for g in self.groups)


@dataclass(frozen=True)
class PairSignals(Data):
    """Why two files are, or are not, near-duplicates (``imgvec dupes --explain``)."""

    a: str
    b: str
    same_content: bool
    cosine: float
    threshold: float
    phash_distance: int | None
    phash_max: int
    crop_coarse: float | None
    crop_ncc: float | None
    crop_block_min: float | None
    crop_parallax: float | None
    crop_ncc_min: float
    crop_block_min_min: float
    crop_parallax_max: float
    duplicate: bool
    decided_by: str
    """``exact``, ``phash``, ``crop``, ``cosine`` (below the cut) or ``pixels`` (neither pixel
    signal agreed)."""


@dataclass(frozen=True)
class MovedFile(Data):
    image_id: int
    from_path: str
    to_path: str


@dataclass
class MoveReport(Data):
    """What ``dupes --move-to`` or ``dupes undo`` did."""

    run: int = 0
    moved: list[MovedFile] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)
    """Files left where they were, with why."""
