"""Embedding on a Ray cluster (``--ray ADDRESS``): workers read, hash, decode and embed; the
process that holds the library stays the only writer.

Actors of our own, not Ray Data: the writer decides what each batch holds and which contents are
known already (a moved file or a copy is not decoded: its vector is reused), so ``add`` gives the
same outcomes as a local run, and it must see each result before the worker skips that content
in a later batch. One actor per GPU of the cluster, else per CPU, each loading the model once as
a local run does (:class:`~imgvec.embed.loader.Models`, same weights identity; the library's ONNX
export, if any, is sent by the writer; nothing is ever written by a worker). Each actor has two
batches queued, so it never waits for the writer. A worker that dies is replaced, and its batch sent
again once; if it is lost again, its files fail with a reason that makes the next run try them
again.

Ray is imported only here, and only when ``--ray`` is given.
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from imgvec.decode.fingerprint import stored_phash
from imgvec.decode.images import read_file
from imgvec.embed import exports
from imgvec.embed.batches import (
    Loaded,
    embed_new_contents,
    load_bytes,
    load_file,
    prefetched_batches,
    unreadable,
)
from imgvec.embed.loader import Models
from imgvec.embed.registry import get_spec, register
from imgvec.embed.spec import ModelSpec
from imgvec.errors import ClusterError, ImageError, ImgvecError
from imgvec.reporting import SilentReporter, Stopwatch
from imgvec.types import ClusterInfo, ModelIdentity, ModelRow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

Item = TypeVar("Item")

QUEUED_PER_WORKER = 2
"""Batches sent to each actor at a time: one running, one waiting (the actor never idles while
the writer commits)."""
CONNECT_TIMEOUT_S = 5.0
LOST = "cannot read file: its Ray worker was lost twice"
"""The reason of a file whose batch was lost twice with its worker (each lost worker is replaced
by a new one): it starts like an access error, so the library keeps what it held of the file and
the next run tries it again."""


@dataclass(frozen=True)
class Job:
    """One file for a worker."""

    path: str
    own_hash: str | None = None
    """The content hash the library holds, with a vector, for this path: not decoded again."""
    data: bytes | None = None
    """The file's bytes, read by the writer (``--ship-bytes``); None: the worker reads ``path``."""


@dataclass(frozen=True)
class Done:
    """A worker's result for one file: what :func:`load_file` gives, without its pixels."""

    loaded: Loaded
    phash: int | None = None
    """The picture's perceptual hash (:func:`~imgvec.decode.fingerprint.stored_phash`)."""


class _WorkerModels(Models):
    """A worker's models: the export comes from the writer, and nothing is ever written."""

    def __init__(self, export: exports.Stored, precision: str) -> None:
        no_library: sessionmaker[Session] | Any = None  # stored_export below never asks it
        super().__init__(SilentReporter(), Stopwatch(), Path(), no_library, precision)
        self.export_sent = export

    def stored_export(self, row: ModelRow, verify: bool = True) -> exports.Stored:
        return exports.verified(self.export_sent) if verify else self.export_sent


class Worker:
    """A Ray actor: one model, loaded on the first batch that needs it."""

    def __init__(
        self,
        row: ModelIdentity,
        spec: ModelSpec,
        precision: str,
        export: exports.Stored,
        known: frozenset[str],
    ) -> None:
        import ray

        register(spec)  # the writer's spec: a model registered by code there is known here
        self.row = row
        self.models = _WorkerModels(export, precision)
        # Ray gives torch OMP_NUM_THREADS = the actor's CPUs; ONNX Runtime takes as many.
        cpus = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 0))
        self.models.threads = cpus or None
        self.prepare = self.models.preparer(row)
        self.known = set(known)

    def embed(
        self, jobs: list[Job], newly_known: list[str], fingerprints: bool
    ) -> tuple[list[Done], dict[str, np.ndarray], str | None]:
        """The batch's results in order, the vectors (float32, (dim,)) of the contents not known
        by hash, and the runtime that embedded them (None: nothing was)."""
        self.known.update(newly_known)

        def load(job: Job) -> Done:
            def skip_decode(content_hash: str) -> bool:
                return content_hash == job.own_hash or content_hash in self.known

            if job.data is None:
                loaded = load_file(job.path, self.prepare, skip_decode)
            else:
                loaded = load_bytes(job.data, self.prepare, skip_decode)
            picture = loaded.picture
            phash = stored_phash(picture.image) if fingerprints and picture else None
            return Done(loaded, phash)

        done = next(prefetched_batches(jobs, load, len(jobs)), [])
        loaded = [d.loaded for d in done]
        vectors = embed_new_contents(
            lambda batch: self.models.embed(self.row, batch, bulk=True), loaded, self.known
        )
        for item in loaded:  # only what the library stores travels back
            item.inputs = None
            if item.picture is not None:
                item.picture = item.picture.without_pixels()
        return done, vectors, self.models.runtime_of(self.row, bulk=True)


@dataclass
class Cluster:
    """A connection to a Ray cluster (:func:`connect`); :meth:`close` it."""

    info: ClusterInfo
    """What a report says of the cluster; ``sent`` counts as batches go."""
    gpus: bool

    def close(self) -> None:
        import ray

        ray.shutdown()

    def embedded_batches(
        self,
        models: Models,
        row: ModelRow,
        items: Sequence[Item],
        job_of: Callable[[Item], Job],
        batch_size: int,
        known: Iterable[str],
        fingerprints: bool = False,
    ) -> Iterator[tuple[list[Item], list[Done], dict[str, np.ndarray], str | None]]:
        """Batches of ``items`` read, hashed, decoded and embedded by the workers, in the order
        they finish: ``(batch, results in order, vectors by content hash (float32, (dim,)),
        runtime)``, as :func:`~imgvec.embed.batches.embedded_batches` gives them. The contents of
        ``known`` and of every batch already yielded (committed by the caller when it asks for
        the next) are not embedded again. Raises :class:`ClusterError` when a worker fails for
        another reason than one file's."""
        import ray

        if not items:
            return
        if get_spec(row.name).prefers_onnx_batches and not self.gpus:
            # CPU workers run the export: made first where it is missing (as a local add
            # makes it before its first batch), so the library has it for queries too.
            export = models.export_of(row, verify=False)
        else:
            export = models.stored_export(row, verify=False)
        export = exports.whole(export)  # workers may not read the library's files
        remote = ray.remote(max_restarts=0, max_task_retries=0)(Worker)  # replaced here
        shape = {"num_gpus": 1, "num_cpus": 0} if self.gpus else {"num_cpus": 1}
        shared = ray.put(export), ray.put(frozenset(known))  # sent once, not once per actor
        spec = get_spec(row.name)
        identity = ModelIdentity.of(row)

        def start() -> Any:
            return remote.options(**shape).remote(identity, spec, models.precision, *shared)

        actors = [start() for _ in range(self.info.workers)]
        todo = deque((list(items[i : i + batch_size]), 0) for i in range(0, len(items), batch_size))
        flying: dict[Any, _Flight] = {}
        fresh: list[str] = []  # contents committed in this run, in order
        told = [0] * len(actors)  # how much of ``fresh`` each actor was told

        def send(batch: list[Item], tries: int, avoid: int | None = None) -> None:
            """To the actor with the fewest batches queued (another than ``avoid``: the one
            whose worker just died, if there is another)."""
            choices = [a for a in range(len(actors)) if a != avoid] or [0]
            number = min(choices, key=lambda a: _queued(flying, a))
            flight = _Flight(number, actors[number], batch, tries)
            for position, item in enumerate(batch):
                job = job_of(item)
                if self.info.ship_bytes:
                    try:
                        job = Job(job.path, job.own_hash, read_file(job.path))
                    except ImageError as error:  # failed here: nothing to send
                        flight.read_here[position] = Done(unreadable(error))
                        continue
                flight.jobs.append(job)
            self.info.sent += len(flight.jobs)
            newly = fresh[told[number] :]
            told[number] = len(fresh)
            call = actors[number].embed.remote(flight.jobs, newly, fingerprints)
            flying[call] = flight

        def fill() -> None:
            while todo and len(flying) < QUEUED_PER_WORKER * len(actors):
                send(*todo.popleft())

        try:
            fill()
            while flying:
                [call], _ = ray.wait(list(flying), num_returns=1)
                flight = flying.pop(call)
                try:
                    done, vectors, runtime = ray.get(call)
                except ray.exceptions.RayActorError:
                    if actors[flight.actor] is flight.handle:  # the first of its batches back
                        actors[flight.actor], told[flight.actor] = start(), 0
                    if flight.tries == 0:
                        send(flight.batch, 1, avoid=flight.actor)
                        continue
                    lost = [Done(Loaded(error=LOST, access_error=True)) for _ in flight.jobs]
                    done, vectors, runtime = lost, {}, None
                except ray.exceptions.RayTaskError as error:
                    raise _worker_failed(error) from None
                except ray.exceptions.RayError as error:  # the object store, the cluster itself
                    what = " ".join(f"{type(error).__name__}: {error}".split())[:300]
                    raise ClusterError(f"the Ray cluster at {self.info.address}: {what}") from None
                yield flight.batch, flight.merge(done), vectors, runtime
                fresh.extend(vectors)
                fill()
        finally:
            for actor in actors:
                ray.kill(actor)


@dataclass
class _Flight:
    """A batch sent to an actor."""

    actor: int
    handle: Any
    batch: list[Any]
    tries: int
    jobs: list[Job] = field(default_factory=list)
    read_here: dict[int, Done] = field(default_factory=dict)
    """Results made by the writer (``--ship-bytes``: files it could not read), by position."""

    def merge(self, done: list[Done]) -> list[Done]:
        sent = iter(done)
        return [self.read_here.get(i) or next(sent) for i in range(len(self.batch))]


def _queued(flying: dict[Any, _Flight], actor: int) -> int:
    return sum(1 for flight in flying.values() if flight.actor == actor)


def _worker_failed(error: Any) -> ClusterError:
    cause = getattr(error, "cause", None)
    if isinstance(cause, ImgvecError):
        return ClusterError(f"on a Ray worker: {cause}")
    what = f"{type(cause).__name__}: {cause}" if cause is not None else str(error)
    return ClusterError(f"a Ray worker failed: {' '.join(what.split())[:300]}")


def connect(address: str, ship_bytes: bool = False) -> Cluster:
    """Join the Ray cluster at ``address`` (``host:port`` of its head, ``ray://host:port``, or
    ``auto``: ``ray.init``'s own discovery). Raises :class:`ClusterError`, one line naming the
    address, when Ray is not installed, the address does not answer within
    :data:`CONNECT_TIMEOUT_S`, or the cluster has no CPU or GPU to work on."""
    try:
        import ray
    except ImportError:
        raise ClusterError("--ray needs Ray: pip install 'imgvec[ray]'") from None
    _probe(address)
    try:
        ray.init(
            address=address,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
        resources = ray.cluster_resources()
        # Ray prints what the cluster says of dead workers on stdout, which is the JSON's
        # (``--json``); the writer reports their files itself. Ray's debugger silences it so too.
        ray._private.worker._worker_logs_enabled = False
    except Exception as error:
        ray.shutdown()
        reason = " ".join(str(error).split())[:300]
        raise ClusterError(f"cannot join the Ray cluster at {address}: {reason}") from None
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if not gpus and not cpus:
        ray.shutdown()
        raise ClusterError(f"the Ray cluster at {address} has no CPU or GPU to work on")
    return Cluster(ClusterInfo(address, gpus or cpus, ship_bytes), bool(gpus))


def _probe(address: str) -> None:
    """Fail fast on a head that does not answer: ``ray.init`` itself waits minutes."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit():
        raise ClusterError(f"bad Ray address {address!r}: give HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), CONNECT_TIMEOUT_S).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {reason}") from None
