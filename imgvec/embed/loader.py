"""The models of a library, each loaded once, on the runtime that suits the work.

A query runs a model's ONNX export with ONNX Runtime (:mod:`imgvec.embed.onnx`) and never
imports torch, whose import alone takes 2-5 s; batches (``add``, ``model use``) run on the
runtime :func:`bulk_runtime` picks. A model without a usable export runs on torch; the export is
made when the caller may write (:attr:`Models.may_export`), stored as an artifact of the library
(:mod:`imgvec.embed.exports`).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from imgvec.embed import exports
from imgvec.embed.pixels import prepare
from imgvec.embed.registry import available, get_spec
from imgvec.embed.spec import WeightsChoice
from imgvec.errors import ModelError, WeightsUnavailable
from imgvec.reporting import Reporter, Stopwatch
from imgvec.scan import sha256_file
from imgvec.types import ModelInfo, ModelRow

if TYPE_CHECKING:  # the cold query (imgvec.ops.cold_query) runs exports without SQLAlchemy
    from sqlalchemy.orm import Session, sessionmaker

    from imgvec.decode.images import Picture
    from imgvec.embed.onnx import OnnxEmbedder
    from imgvec.embed.runtime import Embedder

Prepare = Callable[[bytes], "tuple[Picture, np.ndarray]"]
"""Image bytes -> (decoded picture, the model's input (3, crop, crop) float32)."""


class Runner(Protocol):
    """A loaded model on one runtime (``torch`` or ``onnxruntime``)."""

    runtime: str

    def embed_inputs(self, inputs: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) float32 -> (B, dim) float32, L2-normalised."""
        ...


def bulk_runtime(faster_on_onnx: bool, device: str, precision: str) -> str:
    """The runtime that embeds batches (``add``, ``model use``) faster: ``onnxruntime`` for a
    model measured faster there on a CPU in fp32 (:attr:`ModelSpec.prefers_onnx_batches`: the
    convolutional networks, 1.23-1.51x torch's images/s for mobilenet_v2, efficientnet_lite0 and
    resnet50, and clip_vit_b_32, 1.23x: BENCHMARKS.md); ``torch`` for the others (vit_b_16:
    0.89x), in bf16 (torch's bfloat16 kernels; the export is fp32) and on CUDA (the onnxruntime
    package runs on the CPU)."""
    if faster_on_onnx and device == "cpu" and precision == "fp32":
        return "onnxruntime"
    return "torch"


def open_export(
    stored: exports.Stored,
    dim: int,
    bulk: bool,
    threads: int | None,
    stopwatch: Stopwatch,
    first: np.ndarray | None = None,
) -> tuple[OnnxEmbedder | None, str | None, np.ndarray | None]:
    """An export (``stored.source``, its size checked) in an ONNX Runtime session, its sha256
    checked meanwhile in a thread (hashlib releases the GIL), and the ``first`` batch of inputs
    (B, 3, H, W) float32 embedded meanwhile too: (the model, None, the first batch's vectors),
    or (None, why it is not used, None). Nothing is returned unchecked. ``bulk``: all of ONNX
    Runtime's graph optimisations (see :class:`~imgvec.embed.onnx.OnnxEmbedder`). Times
    ``import onnxruntime``, ``model load`` (with the wait for the hash) and ``embed``."""
    with stopwatch("import onnxruntime"):
        import onnxruntime  # noqa: F401  (timed here; the session below uses it)

        from imgvec.embed.onnx import OnnxEmbedder
    runner, failure, vectors = None, None, None
    with ThreadPoolExecutor(1) as pool:
        with stopwatch("model load"):
            checked = pool.submit(exports.verified, stored)
            try:
                runner = OnnxEmbedder(stored.source or b"", dim, bulk, threads)
            except Exception as error:  # a damaged file, mostly: the hash says
                failure = " ".join(str(error).split())[:200]
        if runner is not None and first is not None:
            with stopwatch("embed"):
                try:
                    vectors = runner.embed_inputs(first)
                except Exception as error:  # as above
                    failure = " ".join(str(error).split())[:200]
        with stopwatch("model load"):
            problem = checked.result().problem
    if problem is None and failure is not None:
        problem = f"ONNX Runtime cannot load {stored.path} ({failure})"
    return (runner, None, vectors) if problem is None else (None, problem, None)


class Models:
    """Loads models by their stored identity (a :class:`~imgvec.types.ModelRow` with an ``id``).

    ``precision``: ``auto``, ``fp32`` or ``bf16`` (see :func:`imgvec.embed.runtime.auto_precision`);
    it applies to models loaded after it is set. ``root`` and ``sessions``: the library, where
    the exports are kept.
    """

    def __init__(
        self,
        reporter: Reporter,
        stopwatch: Stopwatch,
        root: Path,
        sessions: sessionmaker[Session],
        precision: str = "auto",
    ) -> None:
        self.reporter = reporter
        self.stopwatch = stopwatch
        self.root = root
        self.sessions = sessions
        self.precision = precision
        self.may_export = False
        """Whether exports may be written: the caller holds the library's write lock."""
        self.threads: int | None = None
        """Threads of each ONNX Runtime session (None: its default, one per core); a Ray worker
        sets its share of the node's CPUs."""
        self._loaded: dict[int, Embedder] = {}
        self._runners: dict[tuple[int, bool], Runner] = {}

    def preparer(self, row: ModelRow) -> Prepare:
        """The model's input preparation, without loading the model (numpy and Pillow only; see
        :func:`imgvec.embed.pixels.prepare`)."""
        return functools.partial(prepare, prep=get_spec(row.name).preprocess)

    def embedder(self, row: ModelRow) -> Embedder:
        """The model on torch, loaded on first use. Raises :class:`WeightsUnavailable` when its
        weights file is missing or changed, or its weights cannot be fetched."""
        if row.id not in self._loaded:
            with self.stopwatch("import torch"):  # the first time: seconds
                from imgvec.embed.runtime import Embedder

            if row.weights_path is not None:
                try:
                    found = "sha256:" + sha256_file(row.weights_path)
                except OSError:
                    found = None
                if found != row.weights:
                    raise WeightsUnavailable(
                        f"the weights file {row.weights_path} is missing or has changed; give "
                        f"the original file ({row.weights}) again: imgvec add PATHS "
                        "--weights FILE"
                    )
            self.reporter.notice(f"Loading model {ModelInfo.of(row).label()} (torch)")
            with self.stopwatch("model load"):
                self._loaded[row.id] = Embedder(
                    get_spec(row.name),
                    row.layer,
                    WeightsChoice(row.weights, row.weights_path),
                    precision=self.precision,
                )
        return self._loaded[row.id]

    def runner(self, row: ModelRow, bulk: bool = False) -> Runner:
        """The model on the runtime for the work: for a query (``bulk`` False) its export on
        ONNX Runtime where the library has a usable one, else torch; for batches the runtime
        :func:`bulk_runtime` picks. Where the caller may write and the export is missing, it is
        made first, whichever runtime runs the batches."""
        key = (row.id, bulk)
        if key not in self._runners:
            self._runners[key] = self._choose(row, bulk)
        return self._runners[key]

    def _choose(self, row: ModelRow, bulk: bool) -> Runner:
        if bulk:
            from imgvec.embed.runtime import auto_precision, pick_device

            device = pick_device()
            precision = auto_precision(device) if self.precision == "auto" else self.precision
            chosen = bulk_runtime(get_spec(row.name).prefers_onnx_batches, device.type, precision)
            if chosen == "torch":
                embedder = self.embedder(row)
                self.export_of(row, verify=True)  # for the queries: torch is loaded anyway
                return embedder
        if self.precision == "bf16":  # asked for: torch's bfloat16 (the export runs fp32)
            return self.embedder(row)
        stored = self.export_of(row, verify=False)
        if stored.source is None:
            return self.embedder(row)
        runner, problem, _ = open_export(stored, row.dim, bulk, self.threads, self.stopwatch)
        if problem is None and runner is not None:
            self.reporter.notice(f"Loading model {ModelInfo.of(row).label()} (ONNX Runtime)")
            return runner
        self._not_used(row, problem)
        data = self.export(row) if self.may_export else None
        if data is None:
            return self.embedder(row)
        from imgvec.embed.onnx import OnnxEmbedder

        return OnnxEmbedder(data, row.dim, bulk, self.threads)

    def export_of(self, row: ModelRow, verify: bool) -> exports.Stored:
        """The model's export (its size checked, and with ``verify`` its hash); made now when it
        is missing and exports may be written. No ``data``: the model runs on torch."""
        with self.stopwatch("model load"):
            stored = self.stored_export(row, verify)
        if stored.problem is not None:
            self._not_used(row, stored.problem)
        if stored.source is not None or not self.may_export:
            return stored
        if stored.failed is not None and not self._exporter_changed(stored):
            return stored
        return exports.Stored(self.export(row))  # just made and checked: no sha256 to compare

    def stored_export(self, row: ModelRow, verify: bool = True) -> exports.Stored:
        """The library's export of the model, read and checked (see :func:`exports.load`); on a
        Ray worker, the one the writer sent (:mod:`imgvec.embed.ray_workers`)."""
        with self.sessions() as session:
            return exports.load(self.root, session, row.id, verify=verify)

    def _exporter_changed(self, stored: exports.Stored) -> bool:
        """A recorded failure was made by another exporter (torch was upgraded since): worth
        another try. Only asked where torch is loaded already (batches)."""
        if "torch" not in sys.modules:
            return False
        from imgvec.embed import onnx

        return stored.exporter != onnx.exporter()

    def _not_used(self, row: ModelRow, problem: str) -> None:
        self.reporter.notice(
            f"The ONNX export of {row.name} is not used: {problem}; it runs on torch "
            "until the export is made again"
        )

    def needs_export(self, row: ModelRow) -> bool:
        """The model ran on torch here for want of an export that could be made: a command may
        take the write lock and :meth:`export` it."""
        runner = self._runners.get((row.id, False))
        if runner is None or runner.runtime != "torch":
            return False
        with self.sessions() as session:
            stored = exports.load(self.root, session, row.id)
        return stored.source is None and stored.failed is None

    def export(self, row: ModelRow) -> bytes | None:
        """Export the model to ONNX, check it and record it in the library (the caller holds the
        write lock). None when it cannot be exported, which is recorded, or cannot be written
        here (a full disk, a ``models`` that is not a writable folder), which is not: each with
        a notice; the model runs on torch."""
        from imgvec.embed import onnx

        unwritable = exports.unwritable(self.root)
        if unwritable is not None:
            self.reporter.notice(
                f"Cannot write {row.name}'s ONNX export ({unwritable}); it runs on torch"
            )
            return None
        embedder = self.embedder(row)
        self.reporter.notice(f"Exporting {row.name} to ONNX for queries without torch (once)")
        with self.stopwatch("onnx export"):
            try:
                data: bytes | None = onnx.export(embedder)
            except ImportError as error:  # an install without the exporter: nothing to record
                self.reporter.notice(f"Cannot export to ONNX ({error}); {row.name} runs on torch")
                return None
            except MemoryError:
                raise
            except Exception as error:
                data = None
                reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
            try:
                with self.sessions() as session, session.begin():
                    if data is not None:
                        replaced = exports.save(self.root, session, row.id, data, onnx.exporter())
                    else:
                        replaced = exports.record_failure(session, row.id, reason, onnx.exporter())
            except OSError as error:  # the write failed: nothing was recorded
                self.reporter.notice(
                    f"Cannot write {row.name}'s ONNX export ({error.strerror or error}); it "
                    "runs on torch"
                )
                return None
            if replaced is not None:
                exports.delete(self.root, replaced)
        if data is None:
            self.reporter.notice(
                f"{row.name} cannot be exported to ONNX ({reason}); it runs on torch"
            )
        return data

    def embed(self, row: ModelRow, batch: np.ndarray, bulk: bool = False) -> np.ndarray:
        """Vectors (B, dim) float32, L2-normalised, of prepared inputs (B, 3, H, W) float32; the
        model is loaded first if needed (timed apart, as ``model load``). ``bulk``: a batch of
        ``add`` or ``model use`` (see :meth:`runner`)."""
        runner = self.runner(row, bulk)
        with self.stopwatch("embed"):
            return runner.embed_inputs(batch)

    def embed_texts(self, row: ModelRow, texts: Sequence[str]) -> np.ndarray:
        """Vectors (N, dim) float32, L2-normalised, of texts in the images' space, by the
        model's text tower on torch. Raises :class:`ModelError` naming the models that take
        words when this one does not."""
        spec = get_spec(row.name)
        if spec.encode_text is None:
            takers = sorted(n for n, s in available().items() if s.encode_text is not None)
            raise ModelError(
                f"model {row.name} takes no words; --text needs a model with a text tower: "
                + ", ".join(takers)
            )
        embedder = self.embedder(row)
        with self.stopwatch("embed text"):
            return embedder.embed_text(texts)

    def runtime_of(self, row: ModelRow, bulk: bool = False) -> str | None:
        """The runtime the model ran on here (``torch`` or ``onnxruntime``); None: not loaded."""
        runner = self._runners.get((row.id, bulk))
        return None if runner is None else runner.runtime

    def forget(self, model_id: int) -> None:
        self._loaded.pop(model_id, None)
        for key in [k for k in self._runners if k[0] == model_id]:
            del self._runners[key]
