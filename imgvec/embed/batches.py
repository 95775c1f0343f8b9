"""Keeping the model busy: the next batch is read and decoded on worker threads while the current
one runs through the model (Pillow and hashing release the GIL). :func:`embedded_batches` is THE
batch loop, and :func:`load_file` THE read-hash-decode step, of ``add``, ``model use`` and
``query``."""

from __future__ import annotations

import os
from collections.abc import Callable, Container, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from imgvec.decode.images import Picture, read_file
from imgvec.errors import ImageError
from imgvec.scan import sha256_bytes

Item = TypeVar("Item")
Prepared = TypeVar("Prepared")

MAX_WORKERS = 4


def worker_count() -> int:
    """Decode threads: one per core, at most :data:`MAX_WORKERS`."""
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def prefetched_batches(
    items: Sequence[Item], prepare: Callable[[Item], Prepared], batch_size: int
) -> Iterator[list[Prepared]]:
    """Yield ``prepare``d batches in order; the following batch is prepared meanwhile."""
    if not items:
        return
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    with ThreadPoolExecutor(worker_count(), thread_name_prefix="imgvec-decode") as pool:

        def submit(batch: Sequence[Item]) -> list[Future[Prepared]]:
            return [pool.submit(prepare, item) for item in batch]

        try:
            upcoming = submit(batches[0])
            for number in range(len(batches)):
                ready = [future.result() for future in upcoming]
                if number + 1 < len(batches):
                    upcoming = submit(batches[number + 1])
                yield ready
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


@dataclass
class Loaded:
    """One file read, hashed and (unless skipped) decoded into a picture and model input."""

    content_hash: str | None = None
    picture: Picture | None = None
    inputs: np.ndarray | None = None
    """The model's input, (3, H, W) float32."""
    error: str | None = None
    """Why the file cannot be used: one line, fit to print after its path."""
    access_error: bool = False
    """The file could not be read (permissions, I/O): nothing is known of its content, so what
    the library holds of it stays, and the next run tries again."""


def load_file(
    path: str,
    prepare: Callable[[bytes], tuple[Picture, np.ndarray]],
    skip_decode: Callable[[str], bool] = lambda _hash: False,
) -> Loaded:
    """Read, hash and prepare one file; every exception becomes the file's ``error``
    (KeyboardInterrupt and SystemExit still stop the run). ``skip_decode(content_hash)`` says
    when the content's vector is known already."""
    try:
        data = read_file(path)
    except ImageError as error:
        return unreadable(error)
    return load_bytes(data, prepare, skip_decode)


def unreadable(error: ImageError) -> Loaded:
    """A file :func:`~imgvec.decode.images.read_file` refused: access errors are OSErrors;
    "empty", "too large" are the content's."""
    return Loaded(error=str(error), access_error=isinstance(error.__cause__, OSError))


def load_bytes(
    data: bytes,
    prepare: Callable[[bytes], tuple[Picture, np.ndarray]],
    skip_decode: Callable[[str], bool] = lambda _hash: False,
) -> Loaded:
    """Hash and prepare a file's bytes (the second half of :func:`load_file`; a Ray worker
    given the bytes by the writer starts here)."""
    loaded = Loaded()
    try:
        loaded.content_hash = sha256_bytes(data)
        if not skip_decode(loaded.content_hash):
            loaded.picture, loaded.inputs = prepare(data)
    except ImageError as error:
        loaded.error = str(error)
    except Exception as error:  # a decoder's bug must cost one file, not the batch
        loaded.error = f"cannot decode: {type(error).__name__}: {error}".splitlines()[0]
    return loaded


def embedded_batches(
    items: Sequence[Item],
    load: Callable[[Item], Prepared],
    loaded_of: Callable[[Prepared], Loaded],
    embed: Callable[[np.ndarray], np.ndarray],
    batch_size: int,
    known: Container[str] = frozenset(),
) -> Iterator[tuple[list[Prepared], dict[str, np.ndarray]]]:
    """THE batch loop: ``load`` each item on worker threads, a batch ahead of the model, and yield
    ``(batch, vectors)``: the vectors (float32, (dim,)) of the batch's contents, by content hash,
    for those not in ``known`` (see :func:`embed_new_contents`). When the caller asks for the
    next batch, the pictures and model inputs of the last one are dropped, so that at most two
    batches of pixels are alive: the one being embedded and the one being decoded."""
    for batch in prefetched_batches(items, load, batch_size):
        loaded = [loaded_of(item) for item in batch]
        yield batch, embed_new_contents(embed, loaded, known)
        for done in loaded:  # the caller is done with them: do not hold three batches of pixels
            done.picture = done.inputs = None


def embed_new_contents(
    embed: Callable[[np.ndarray], np.ndarray],
    loaded: Sequence[Loaded],
    known: Container[str] = frozenset(),
) -> dict[str, np.ndarray]:
    """Vectors of the contents (by hash) not in ``known``, each embedded once: copies in a
    batch share one forward pass. ``embed`` (a batch (B, 3, H, W) -> (B, dim) float32) is only
    called, and so the model only loaded, when there is something to embed."""
    fresh: dict[str, np.ndarray] = {}
    for item in loaded:
        content_hash = item.content_hash
        if item.inputs is not None and content_hash is not None and content_hash not in known:
            fresh.setdefault(content_hash, item.inputs)
    if not fresh:
        return {}
    embedded = embed(np.stack(list(fresh.values())))
    return dict(zip(fresh, embedded, strict=True))
