"""The library's tables as SQLAlchemy 2 typed models.

Changing anything here needs an Alembic revision in ``migrations/versions`` (a test runs
autogenerate against a migrated database and fails on any difference).
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class EmbeddingModel(Base):
    """An embedding model identity: architecture, weights, layer and preprocessing fix vectors."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("name", "layer", "weights", name="uq_models_identity"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    layer: Mapped[str] = mapped_column(String(100))
    weights: Mapped[str] = mapped_column(String(200))
    """The weights: ``torchvision:<enum>``, ``sha256:<hex>`` of a file, or ``none:seed=0``."""
    weights_path: Mapped[str | None] = mapped_column(Text)
    """Where a local weights file was found, so later commands can load it again."""
    preprocessing: Mapped[str] = mapped_column(String(200))
    dim: Mapped[int] = mapped_column(Integer)
    vector_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """How many vectors the model has in ``embeddings``, kept by every write of that table in
    :mod:`imgvec.storage.store`, so the write path never counts the table (issue 16)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LibraryState(Base):
    """A single row: the active model, and where the indexes live."""

    __tablename__ = "library_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    active_model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"))
    dupes_seq: Mapped[int | None] = mapped_column(BigInteger)
    """The change seq the last whole-library ``imgvec dupes`` run was current at: ``--new``
    checks the images changed since (the change log is kept from here on)."""
    vectors: Mapped[str | None] = mapped_column(Text)
    """Where the indexes live: None for FAISS files in the library folder, else the URL of a
    Milvus server or Milvus Lite store (:mod:`imgvec.index.milvus`)."""
    library_id: Mapped[str | None] = mapped_column(String(32))
    """A random name for this library's Milvus collections (made when first needed)."""


class Image(Base):
    """A file in the library, readable or not (``error`` says why not)."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    content_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)
    folder: Mapped[str | None] = mapped_column(Text, index=True)
    """The directory the file is in (for filters and plots)."""
    modified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """The file's modification time (from ``mtime_ns``), for SQL users."""
    taken_at: Mapped[datetime | None] = mapped_column(DateTime)
    """EXIF DateTimeOriginal: camera local time, no time zone."""
    camera_make: Mapped[str | None] = mapped_column(String(200))
    camera_model: Mapped[str | None] = mapped_column(String(200))
    lens: Mapped[str | None] = mapped_column(String(200))
    orientation: Mapped[int | None] = mapped_column(Integer)
    gps_lat: Mapped[float | None] = mapped_column(Float)
    gps_lon: Mapped[float | None] = mapped_column(Float)
    phash: Mapped[int | None] = mapped_column(BigInteger)
    """64-bit DCT perceptual hash of the upright picture, signed (``imgvec dupes``; NULL: not
    made yet, made when first needed)."""
    metadata_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """When EXIF was last read (NULL: not yet; ``imgvec backfill`` reads it)."""
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Embedding(Base):
    """An image's vector under one model: float32, L2-normalised, little-endian bytes."""

    __tablename__ = "embeddings"
    __table_args__ = (Index("ix_embeddings_model_id", "model_id"),)

    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    model_id: Mapped[int] = mapped_column(
        ForeignKey("models.id", ondelete="CASCADE"), primary_key=True
    )
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Change(Base):
    """The log of changed vectors: every write of an embedding, or its removal, appends a row.

    Index versions record the last ``seq`` they cover; later rows are what an incremental update
    must apply, and an id whose latest change is newer than a segment is dead in that segment.
    """

    __tablename__ = "changes"
    __table_args__ = (
        Index("ix_changes_model_id_seq", "model_id", "seq"),
        {"sqlite_autoincrement": True},  # seq never goes back, even after pruning
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    image_id: Mapped[int] = mapped_column(Integer)


class ModelExport(Base):
    """A model's ONNX export (issue 15): the file queries run with ONNX Runtime, without torch;
    or, with ``error`` set, why the model could not be exported (it runs on torch)."""

    __tablename__ = "model_exports"

    model_id: Mapped[int] = mapped_column(
        ForeignKey("models.id", ondelete="CASCADE"), primary_key=True
    )
    path: Mapped[str | None] = mapped_column(Text)
    """Relative to the library directory: ``models/m<model id>-<sha256[:12]>.onnx``."""
    sha256: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    exporter: Mapped[str] = mapped_column(String(100))
    """What made it: ``torch <version>, opset <n>``."""
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IndexSegment(Base):
    """An immutable FAISS index file: a trained ``base`` or a small exact ``delta``."""

    __tablename__ = "index_segments"
    __table_args__ = (Index("ix_index_segments_model_id", "model_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(Text, unique=True)
    """Relative to the library directory."""
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    n_vectors: Mapped[int] = mapped_column(BigInteger)
    created_seq: Mapped[int] = mapped_column(BigInteger)
    """The change seq the segment's vectors are current at."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IndexVersion(Base):
    """One version of a model's index: a base segment plus deltas, current at ``change_seq``."""

    __tablename__ = "index_versions"
    __table_args__ = (Index("ix_index_versions_model_id", "model_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    parent_id: Mapped[int | None] = mapped_column(Integer)
    """The version this one was derived from (None for a full build)."""
    kind: Mapped[str] = mapped_column(String(20))
    params: Mapped[str] = mapped_column(Text, default="{}")
    """JSON: build parameters (nlist, nprobe, m, ...)."""
    n_vectors: Mapped[int] = mapped_column(BigInteger)
    """Live vectors (segment entries minus tombstones)."""
    change_seq: Mapped[int] = mapped_column(BigInteger)
    train_size: Mapped[int | None] = mapped_column(BigInteger)
    recall: Mapped[float | None] = mapped_column(Float)
    """recall@10 against exact search, measured at build or compaction."""
    operation: Mapped[str] = mapped_column(String(20))
    """What made it: build, update, compact or rollback."""
    status: Mapped[str] = mapped_column(String(10))
    """``active`` (one per model) or ``retired``."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IndexVersionSegment(Base):
    """Which segments a version consists of (segments are shared between versions)."""

    __tablename__ = "index_version_segments"

    version_id: Mapped[int] = mapped_column(
        ForeignKey("index_versions.id", ondelete="CASCADE"), primary_key=True
    )
    segment_id: Mapped[int] = mapped_column(ForeignKey("index_segments.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)


class DupeMove(Base):
    """A duplicate that ``imgvec dupes --move-to`` moved aside, so that ``dupes undo`` can put it
    back. ``state``: ``moving`` (recorded before the file moves: a killed run is settled by the
    next writer from where the file is), ``moved``, or ``undone``."""

    __tablename__ = "dupe_moves"
    __table_args__ = (Index("ix_dupe_moves_image_id", "image_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run: Mapped[int] = mapped_column(Integer)
    """The ``--move-to`` run that moved it (``undo`` puts back the latest run, or all)."""
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    keeper_id: Mapped[int | None] = mapped_column(Integer)
    """The image it duplicates (the group's keeper)."""
    from_path: Mapped[str] = mapped_column(Text)
    to_path: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(10))
    moved_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
