"""Benchmark of the embedding models: forward speed, end-to-end ``add`` speed, retrieval quality.

Run from the repository root (about 5 minutes on two quiet cores):

    .venv/bin/python -m benchmarks.bench_models --out BENCHMARKS.md

For each model in the registry, at its default layer (plus a few extra layers, forward only):

1. forward: images/s of the bare model (``Embedder.embed_tensors``) on pre-made random
   3x224x224 tensors, batch 16 (and add's batch size, 32), ``--precision auto``, random
   weights (as fast as real ones), under ``torch.inference_mode()``: warm-up batches, then the
   median batch time;
2. add: ``Library.add`` of the UKBench photos into a fresh temporary library, timed as a whole
   (open, fix the model, load it, add: everything but the interpreter start and imports) and
   with the model already loaded, and the time spent in the model inside it; the slow models
   add only the first ``--subset`` photos;
3. quality: the UKBench N-S score and mAP, where real weights exist offline
   (efficientnet_lite0's installed weights, the MobileNetV2 state dict in ../shared/eval).

Each row runs in a fresh subprocess (``--row``), so that no row inherits the memory allocator's
state from the rows before it; an allocator check (``--malloc-check``) times the forward pass of a
few models again with glibc malloc as it comes (``IMGVEC_KEEP_FREED_MEMORY=0``), against imgvec's
own setting (``embed.keep_freed_memory``).

The machine is shared: each row waits for a quiet moment and is measured again when other
processes took CPU meanwhile (``--quiet``, ``--attempts``); the table says how busy it was.

With ``--out FILE`` the results replace the section between ``<!-- models:start -->`` and
``<!-- models:end -->`` in FILE (the file is created if missing; other sections are untouched).
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from benchmarks import report
from benchmarks.machine import CpuMeter
from imgvec import Library
from imgvec.config import sqlite_url
from imgvec.embed import Embedder, pick_device, prepare
from imgvec.embedders.registry import ModelSpec, Preprocess, available, resolve_weights
from imgvec.files import sha256_bytes
from imgvec.images import read_file
from imgvec.ingest import DEFAULT_BATCH_SIZE

REPO = Path(__file__).resolve().parent.parent
SHARED_EVAL = REPO.parent / "shared" / "eval"
DEFAULT_IMAGES = SHARED_EVAL / "ukbench140" / "images"
DEFAULT_GROUNDTRUTH = SHARED_EVAL / "ukbench140" / "groundtruth.csv"
DEFAULT_MOBILENET_WEIGHTS = SHARED_EVAL / "weights" / "mobilenet_v2-imagenet-dequantized.pth"

COMMAND = ".venv/bin/python -m benchmarks.bench_models"
START_MARKER = "<!-- models:start -->"
END_MARKER = "<!-- models:end -->"
HEADER = """# Benchmarks

Every figure in this file comes from a script in `benchmarks/`, and each section gives the exact
command that produced it (run from the repository root), so it can be re-run and checked.
Absolute times on this shared 2-core machine are noisy (other work may run beside a benchmark);
ratios measured within one run are what to compare.
"""

BATCH = 16
ADD_BATCH = DEFAULT_BATCH_SIZE
"""``imgvec add``'s default ``--batch-size``."""
WARMUP_BATCHES = 2
MAX_TIMED_BATCHES = 30
EXTRA_LAYERS = ("resnet50:fc", "vgg16:pool5")
"""Benchmarked forward-only in the default run (same network, another cut)."""
NO_WEIGHTS = "n/a (weights need a download)"
GLIBC_DEFAULT = {"IMGVEC_KEEP_FREED_MEMORY": "0"}
"""The allocator check's baseline: imgvec leaves glibc malloc as it comes (by default it tells
malloc to reuse freed activation buffers instead of handing them back to the kernel)."""


@dataclass(frozen=True)
class Target:
    model: str
    layer: str
    end_to_end: bool
    """Also run ``add`` (and quality); extra layers of an already-measured network do not."""
    both_batches: bool = True
    """Also time the forward pass at ``add``'s batch size."""


@dataclass(frozen=True)
class AddResult:
    images: int
    total_s: float
    """Open a fresh library, fix the model, load it, add the photos."""
    load_s: float
    add_s: float
    """``Library.add`` alone, with the model already loaded."""
    model_s: float
    """Of ``add_s``, the time spent in the model (``embed_tensors``); the rest is reading,
    hashing, decoding (on worker threads, one batch ahead), the database and the index."""
    batch_size: int
    ns_score: float | None
    mean_ap: float | None


@dataclass(frozen=True)
class Row:
    target: Target
    dim: int
    weights: str
    forward_ips: float
    """At batch :data:`BATCH`."""
    forward_add_batch_ips: float | None
    """At ``add``'s batch size (not for the extra layers)."""
    forward_faults: float
    """Minor page faults per image of the timed forward batches, at batch :data:`BATCH`."""
    forward_add_batch_faults: float | None
    add: AddResult | None
    quality_note: str
    other_cores: float | None
    """Cores kept busy by other processes while this row was measured (a noise gauge)."""
    attempts: int = 1

    @property
    def add_total_ips(self) -> float | None:
        return None if self.add is None else self.add.images / self.add.total_s

    @property
    def add_loaded_ips(self) -> float | None:
        return None if self.add is None else self.add.images / self.add.add_s

    @property
    def in_add_forward_ips(self) -> float | None:
        """The model's own rate while ``add`` ran it (real photos, add's batch size)."""
        return None if self.add is None else self.add.images / self.add.model_s

    @property
    def model_share(self) -> float | None:
        return None if self.add is None else self.add.model_s / self.add.add_s

    @property
    def ratio(self) -> float | None:
        loaded = self.add_loaded_ips
        return None if loaded is None else loaded / self.forward_ips

    # The ratio's factors (rows with ``add`` and both forward rates only): ratio =
    # batch_factor * contention_factor * model_share.

    @property
    def batch_factor(self) -> float:
        """Bare forward speed at ``add``'s batch size over that at :data:`BATCH`."""
        assert self.forward_add_batch_ips is not None
        return self.forward_add_batch_ips / self.forward_ips

    @property
    def contention_factor(self) -> float:
        """The model's speed inside ``add`` over its bare speed at the same batch size."""
        assert self.add is not None and self.forward_add_batch_ips is not None
        return self.add.images / self.add.model_s / self.forward_add_batch_ips


# --- measurements --------------------------------------------------------------------------------


def forward_throughput(
    embedder: Embedder, batch: int, warmup: int, min_batches: int, min_seconds: float
) -> tuple[float, float]:
    """Images/s of the bare model on a pre-made random batch: the median batch time after
    warm-up, over at least ``min_batches`` batches and ``min_seconds``; and the minor page
    faults per image over the timed batches."""
    crop = embedder.spec.preprocess.crop
    inputs = torch.randn(batch, 3, crop, crop, generator=torch.Generator().manual_seed(0))
    for _ in range(warmup):
        embedder.embed_tensors(inputs)
    times: list[float] = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started = time.perf_counter()
    while len(times) < min_batches or (
        time.perf_counter() - started < min_seconds and len(times) < MAX_TIMED_BATCHES
    ):
        begin = time.perf_counter()
        embedder.embed_tensors(inputs)
        times.append(time.perf_counter() - begin)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return batch / statistics.median(times), faults / (batch * len(times))


def prepare_photo(path: Path, prep: Preprocess) -> None:
    """What ``add`` does per photo besides the model: read, hash, decode (JPEGs at reduced
    size), preprocess."""
    data = read_file(str(path))
    sha256_bytes(data)
    prepare(data, prep)


def decode_throughput(images: Sequence[Path], prep: Preprocess) -> float:
    """Images/s of :func:`prepare_photo` on one thread."""
    started = time.perf_counter()
    for path in images:
        prepare_photo(path, prep)
    return len(images) / (time.perf_counter() - started)


def add_throughput(
    target: Target,
    weights: str,
    images: Sequence[Path],
    whole_folder: Path | None,
    group_of: dict[str, int] | None,
) -> AddResult:
    """``Library.add`` in a fresh temporary library; quality too when ``group_of`` is given."""
    with tempfile.TemporaryDirectory(prefix="imgvec-bench-") as tmp:
        started = time.perf_counter()
        library = Library.open(tmp, sqlite_url(Path(tmp) / "imgvec.db"))
        try:
            library.init(target.model, weights, target.layer)
            before_load = time.perf_counter()
            embedder = library.embedder()  # loads the model and caches it for add
            loaded = time.perf_counter()
            model_times = _time_calls(embedder)
            roots = [whole_folder] if whole_folder is not None else list(images)
            report = library.add(
                roots,
                model=target.model,
                weights=weights,
                layer=target.layer,
                batch_size=ADD_BATCH,
            )
            finished = time.perf_counter()
            if report.added != len(images) or report.failed:
                raise RuntimeError(f"{target.model}: unexpected add result: {report.summary()}")
            quality = None if group_of is None else retrieval_quality(library, images, group_of)
        finally:
            library.close()
    return AddResult(
        images=len(images),
        total_s=finished - started,
        load_s=loaded - before_load,
        add_s=finished - loaded,
        model_s=sum(model_times),
        batch_size=ADD_BATCH,
        ns_score=None if quality is None else quality[0],
        mean_ap=None if quality is None else quality[1],
    )


def _time_calls(embedder: Embedder) -> list[float]:
    """Record how long each ``embed_tensors`` call of this embedder takes (an instance
    attribute wraps the method; the library's cached embedder is the one ``add`` uses)."""
    times: list[float] = []
    method = embedder.embed_tensors

    def timed(batch: torch.Tensor) -> np.ndarray:
        begin = time.perf_counter()
        try:
            return method(batch)
        finally:
            times.append(time.perf_counter() - begin)

    embedder.embed_tensors = timed  # type: ignore[method-assign]
    return times


def retrieval_quality(
    library: Library, images: Sequence[Path], group_of: dict[str, int]
) -> tuple[float, float]:
    """UKBench N-S score (group images in the top 4, query included; 4.0 is perfect) and mAP
    over each query's other group images (the query itself left out of its ranking)."""
    results = library.query([str(path) for path in images], k=len(images))
    group_sizes: dict[int, int] = {}
    for path in images:
        group_sizes[group_of[path.name]] = group_sizes.get(group_of[path.name], 0) + 1
    ns_total = 0
    precisions: list[float] = []
    for result in results:
        if result.error is not None:
            raise RuntimeError(f"query {result.query} failed: {result.error}")
        query = Path(result.query).name
        group = group_of[query]
        ranked = [Path(hit.path).name for hit in result.hits]
        ns_total += sum(group_of[name] == group for name in ranked[:4])
        found, precision_sum = 0, 0.0
        for rank, name in enumerate((n for n in ranked if n != query), start=1):
            if group_of[name] == group:
                found += 1
                precision_sum += found / rank
        precisions.append(precision_sum / (group_sizes[group] - 1))
    return ns_total / len(results), statistics.fmean(precisions)


def warm_up(images: Sequence[Path]) -> None:
    """One small, unrecorded add, so that no measured row pays the one-time imports
    (FAISS, Alembic, SQLAlchemy's first engine)."""
    target = Target("mobilenet_v2", "pool", end_to_end=True)
    add_throughput(target, "none", images[:4], None, None)


# --- what to run ---------------------------------------------------------------------------------


def choose_targets(models: str | None, specs: dict[str, ModelSpec]) -> list[Target]:
    """``--models a,b:layer``; by default every registered model plus :data:`EXTRA_LAYERS`."""
    if models is None:
        targets: list[Target] = []
        for name, spec in specs.items():
            targets.append(Target(name, spec.default_layer, end_to_end=True))
            for extra in EXTRA_LAYERS:
                model, layer = extra.split(":")
                if model == name and layer in spec.layers:
                    targets.append(Target(model, layer, end_to_end=False, both_batches=False))
        return targets
    targets = []
    for item in (part.strip() for part in models.split(",")):
        if not item:
            continue
        name, _, layer = item.partition(":")
        if name not in specs:
            raise SystemExit(f"unknown model {name!r}; available: {', '.join(specs)}")
        chosen, _ = specs[name].layer(layer or None)
        targets.append(Target(name, chosen, end_to_end=True))
    return targets


def offline_weights(model: str, mobilenet_weights: Path) -> tuple[str, str] | None:
    """The ``weights=`` value and a label for models whose real weights need no download."""
    if model == "efficientnet_lite0":
        return "default", "ImageNet (installed package)"
    if model == "mobilenet_v2" and mobilenet_weights.is_file():
        return str(mobilenet_weights), "ImageNet (shared/eval file)"
    return None


def read_groundtruth(path: Path) -> dict[str, int] | None:
    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        return {row["filename"]: int(row["group_id"]) for row in csv.DictReader(handle)}


# --- the report ----------------------------------------------------------------------------------


def _num(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table(rows: Sequence[Row], subset: int, total_images: int) -> str:
    lines = [
        f"| model | layer | dim | weights (add) | forward img/s, batch {BATCH} "
        f"| forward img/s, batch {ADD_BATCH} | page faults / img, batch {BATCH} / {ADD_BATCH} "
        "| add photos | add img/s, all "
        "| add img/s, model loaded | add / forward | model in add: img/s | model share of add "
        "| model load s | N-S | mAP | other procs, cores |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: "
        "| ---: | --- | --- | ---: |",
    ]
    for row in rows:
        add = row.add
        if add is None:
            photos = "not run (same network as above)"
        elif add.images < total_images:
            photos = f"first {add.images} (slow model)"
        else:
            photos = str(add.images)
        if add is not None and add.ns_score is not None:
            ns, mean_ap = f"{add.ns_score:.3f}", _num(add.mean_ap, 3)
        else:
            ns, mean_ap = row.quality_note, "n/a"
        cells = [
            f"`{row.target.model}`",
            f"`{row.target.layer}`",
            str(row.dim),
            row.weights,
            _num(row.forward_ips, 1),
            _num(row.forward_add_batch_ips, 1),
            _faults(row),
            photos,
            _num(row.add_total_ips, 1),
            _num(row.add_loaded_ips, 1),
            _num(row.ratio, 2),
            _num(row.in_add_forward_ips, 1),
            "—" if row.model_share is None else f"{row.model_share:.0%}",
            _num(None if add is None else add.load_s, 2),
            ns,
            mean_ap,
            _num(row.other_cores, 2) + (f" (try {row.attempts})" if row.attempts > 1 else ""),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _count(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1000:.0f}k" if value >= 1000 else f"{value:.0f}"


def _faults(row: Row) -> str:
    if row.forward_add_batch_faults is None:
        return _count(row.forward_faults)
    return f"{_count(row.forward_faults)} / {_count(row.forward_add_batch_faults)}"


def malloc_table(pairs: Sequence[tuple[Row, Row]]) -> str:
    lines = [
        f"| model | glibc malloc | forward img/s, batch {BATCH} | forward img/s, batch {ADD_BATCH} "
        f"| page faults / img, batch {BATCH} / {ADD_BATCH} | other procs, cores |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for default, tuned in pairs:
        for label, row in (("as it comes", default), ("imgvec's `mallopt`", tuned)):
            cells = [
                f"`{row.target.model}`",
                label,
                _num(row.forward_ips, 1),
                _num(row.forward_add_batch_ips, 1),
                _faults(row),
                _num(row.other_cores, 2) + (f" (try {row.attempts})" if row.attempts > 1 else ""),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _span(values: Sequence[float], digits: int, suffix: str = "") -> str:
    low, high = min(values), max(values)
    if f"{low:.{digits}f}" == f"{high:.{digits}f}":
        return f"{low:.{digits}f}{suffix}"
    return f"{low:.{digits}f} to {high:.{digits}f}{suffix}"


def interpretation(
    rows: Sequence[Row],
    malloc_rows: Sequence[tuple[Row, Row]],
    threads: int,
    cpus: int,
    quiet: float,
) -> str:
    """A few sentences computed from the rows: what the add / forward ratio is made of."""
    measured = [r for r in rows if r.add is not None and r.forward_add_batch_ips is not None]
    notes: list[str] = []
    if measured:
        ratios = [r.ratio for r in measured if r.ratio is not None]
        shares = [100 * r.model_share for r in measured if r.model_share is not None]
        batch = [r.batch_factor for r in measured]
        per_model = ", ".join(f"`{r.target.model}` {r.batch_factor:.2f}" for r in measured)
        contention = [r.contention_factor for r in measured]
        if max(contention) < 0.95:
            inside = (
                f"slowed to {_span(contention, 2)} of that bare batch-{ADD_BATCH} speed by the "
                f"decode threads, which prepare the next batch on the same {cpus} cores as "
                f"torch's {threads} threads"
            )
        elif min(contention) > 1.05:
            inside = (
                f"at {_span(contention, 2)} of that bare batch-{ADD_BATCH} speed, faster than "
                "bare, which only noise explains (other processes slowing the bare timing)"
            )
        else:
            inside = (
                f"at {_span(contention, 2)} of that bare batch-{ADD_BATCH} speed, so the decode "
                f"threads (one batch ahead, on the same {cpus} cores as torch's {threads} "
                "threads) barely slow it"
            )
        notes.append(
            f"`add` (model loaded) reaches {_span(ratios, 2)} of the batch-{BATCH} forward "
            f"rate, the product of three factors measured here: `add` embeds {ADD_BATCH} photos "
            f"at a time, and at batch {ADD_BATCH} the bare model keeps {_span(batch, 2)} of its "
            f"batch-{BATCH} speed ({per_model}); inside `add` the model runs {inside}; and the "
            f"model takes {_span(shares, 0, '%')} of `add`'s time, the rest being reading, "
            "decoding not hidden behind the model, the database and the index."
        )
        outside = _span([100 - share for share in shares], 0, "%")
        checked = [
            (d.target.model, d.forward_ips, d32, t.forward_ips, t32, _faults(d))
            for d, t in malloc_rows
            if (d32 := d.forward_add_batch_ips) is not None
            and (t32 := t.forward_add_batch_ips) is not None
        ]
        if checked:
            faults = ", ".join(f"`{model}` {counts}" for model, *_, counts in checked)
            gains = ", ".join(
                f"`{model}` {d16:.0f} / {d32:.0f} img/s to {t16:.0f} / {t32:.0f}"
                for model, d16, d32, t16, t32, _ in checked
            )
            helped = all(
                t16 > 1.1 * d16 and t32 > 1.1 * d32 for _, d16, d32, t16, t32, _ in checked
            )
            lead = "Page faults explain that batch-size loss and more" if helped else "Page faults"
            notes.append(
                f"{lead}: with the default glibc malloc every batch faults its activation memory "
                f"in afresh (minor faults per image at batch {BATCH} / {ADD_BATCH}: {faults}), "
                "and with malloc told to keep freed memory (the allocator check, also in fresh "
                "processes) the forward pass "
                f"goes from {gains} (batch {BATCH} / {ADD_BATCH})"
                + (
                    f", so the allocator, not decoding (everything outside the model takes "
                    f"{outside} of `add`'s time), is what holds `add` back on this machine."
                    if helped
                    else f"; everything outside the model takes {outside} of `add`'s time."
                )
            )
        else:
            notes.append(f"Everything outside the model takes {outside} of `add`'s time.")
    noisy = [r for r in rows if r.other_cores is not None and r.other_cores > quiet]
    if noisy:
        notes.append(
            f"{len(noisy)} of the {len(rows)} rows were measured while other processes used "
            f"more than {quiet:g} cores (last column): their speeds say little."
        )
    scored = [
        (r.target.model, r.add.ns_score, r.add.mean_ap)
        for r in rows
        if r.add is not None and r.add.ns_score is not None and r.add.mean_ap is not None
    ]
    loads = [r.add.load_s for r in rows if r.add is not None]
    if scored:
        parts = ", ".join(f"`{model}` {ns:.2f} (mAP {ap:.3f})" for model, ns, ap in scored)
        notes.append(
            f"With real weights: N-S {parts}; UKBench-140 is easy (a colour histogram scores 3.61, "
            "see shared/eval/README.md), so it checks the pipeline more than it ranks models"
            + (f"; loading a model takes {_span(loads, 1, ' s')}." if loads else ".")
        )
    return " ".join(notes)


def section(
    command: str,
    rows: Sequence[Row],
    *,
    subset: int,
    total_images: int,
    images_dir: Path,
    decode_ips: float,
    runtime_s: float,
    other_cores: float | None,
    quiet: float,
    attempts: int,
    malloc_rows: Sequence[tuple[Row, Row]],
) -> str:
    cpus = os.cpu_count() or 1
    threads = torch.get_num_threads()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    others = (
        ""
        if other_cores is None
        else f" Other processes kept {other_cores:.2f} of the {cpus} cores busy on average "
        "during the run (`/proc/stat` minus this process)."
    )
    return "\n".join(
        [
            START_MARKER,
            "## Embedding models: speed and retrieval quality (issue 7)",
            "",
            "```sh",
            command,
            "```",
            "",
            f"- Run {when}, {runtime_s / 60:.1f} minutes in all. Machine: {cpus} CPUs "
            f"(`os.cpu_count()`), torch {torch.__version__} with {threads} threads "
            f"(`torch.get_num_threads()`), device `{pick_device()}`, Python "
            f"{sys.version.split()[0]}.{others}",
            f"- Photos: the {total_images} UKBench photos in `{_shown(images_dir)}` "
            "(640x480 JPEG, 35 objects x 4 views). Reading, hashing, decoding and preprocessing "
            f"one photo, what `add` does besides the model: {decode_ips:.0f} photos/s on one "
            "thread.",
            f"- **forward**: `Embedder.embed_tensors` on a pre-made random batch of {BATCH} "
            "3x224x224 tensors at `--precision auto` under `torch.inference_mode()`, random "
            "weights (as fast as "
            f"real ones); {WARMUP_BATCHES} warm-up batches, then the median batch time. The same "
            f"at batch {ADD_BATCH} (1 warm-up batch), except for the extra layers. *page "
            "faults*: minor page faults (`getrusage`) per image over the timed batches.",
            "- **Fresh processes**: each row runs in its own process (forward first, then an "
            "unrecorded 4-photo warm-up `add`, then the measured `add`), because glibc malloc's "
            "state, and with it the forward speed, otherwise depends on the models run before.",
            "- **add**: `Library.open(tmp).add(photos, model=…, weights=…)` in a fresh temporary "
            f"library, batch size {ADD_BATCH} (`imgvec add`'s default). *all*: from opening the "
            "library to the end of `add` (schema, fixing the model, loading it, reading, hashing, "
            "decoding, embedding, committing, building the index); *model loaded*: `add` alone, "
            "after `lib.embedder()` loaded the model (that is *model load s*). *add / forward* "
            "uses the model-loaded rate. *model in add*: the photos over the time `add` spent in "
            "`embed_tensors`, and that time's share of `add`.",
            "- **N-S**: for each photo as the query, how many of its object's 4 photos are in the "
            "top 4 (`lib.query(paths, k=4)`, query included; 4.0 is perfect). **mAP**: average "
            "precision of the other 3 in the ranking of all the rest. Only where real weights "
            "are available offline; the other models would need a download, so they run with "
            "random weights, which measure speed only.",
            "- **Noise**: the machine is shared, and torch's threads slow down several-fold when "
            "another process takes a core. Each row waits (a little) for a second in which "
            f"other processes use at most {quiet:g} cores, and is measured again (at most "
            f"{attempts} measurements, the quietest kept) if they used more during it; *other "
            "procs* is what they used during the kept measurement.",
            "",
            table(rows, subset, total_images),
            "",
            *(
                [
                    "**Allocator check**: the forward pass of a few models again, each in a fresh "
                    "process, with glibc malloc as it comes (`IMGVEC_KEEP_FREED_MEMORY=0`) and "
                    "as imgvec sets it (`embed.keep_freed_memory`: `mallopt` with no mmap for "
                    "large blocks and a 1 GiB trim threshold, so freed activation memory is "
                    "reused instead of going back to the kernel and faulting in again).",
                    "",
                    malloc_table(malloc_rows),
                    "",
                ]
                if malloc_rows
                else []
            ),
            interpretation(rows, malloc_rows, threads, cpus, quiet),
            END_MARKER,
        ]
    )


def _shown(path: Path) -> str:
    try:
        return os.path.relpath(path, REPO)
    except ValueError:
        return str(path)


def write_section(out: Path, text: str) -> None:
    report.write_section(out, text, START_MARKER, END_MARKER, HEADER)


# --- main ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_models", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--models",
        help="comma-separated models, each optionally MODEL:LAYER "
        "(default: every registered model at its default layer, plus "
        + ", ".join(EXTRA_LAYERS)
        + " forward-only)",
    )
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of photos")
    parser.add_argument(
        "--groundtruth", type=Path, default=DEFAULT_GROUNDTRUTH, help="filename,group_id CSV"
    )
    parser.add_argument(
        "--mobilenet-weights",
        type=Path,
        default=DEFAULT_MOBILENET_WEIGHTS,
        help="state dict of mobilenet_v2 (real weights for its quality figures)",
    )
    parser.add_argument("--out", type=Path, help="write the section into this markdown file")
    parser.add_argument(
        "--slow",
        default="vit_b_16,vgg16",
        help="models whose add uses only the first --subset photos (default: %(default)s)",
    )
    parser.add_argument("--subset", type=int, default=48, help="photos for the slow models' add")
    parser.add_argument(
        "--batches", type=int, default=5, help="at least this many timed forward batches"
    )
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=3.0,
        help=f"keep timing forward batches (up to {MAX_TIMED_BATCHES}) until this much time "
        "has passed",
    )
    parser.add_argument(
        "--quiet",
        type=float,
        default=0.2,
        help="other processes' CPU use (in cores) below which the machine counts as quiet: "
        "each row waits for a quiet second, and is measured again if it was not quiet "
        "throughout (default: %(default)s)",
    )
    parser.add_argument(
        "--attempts",
        type=int,
        default=2,
        help="measurements per row at most (the quietest is kept; default: %(default)s)",
    )
    parser.add_argument(
        "--start-wait",
        type=float,
        default=120.0,
        help="seconds to wait for quiet before starting (default: %(default)s)",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=20.0,
        help="seconds to wait for quiet before each row (default: %(default)s)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=300.0,
        help="seconds after the start beyond which rows are neither repeated nor wait for quiet, "
        "so that a busy machine does not stretch the run (default: %(default)s)",
    )
    parser.add_argument(
        "--malloc-check",
        default="mobilenet_v2,resnet50",
        help="models whose forward pass is timed again with glibc malloc as it comes "
        "(IMGVEC_KEEP_FREED_MEMORY=0), against imgvec's setting; '' to skip "
        "(default: %(default)s)",
    )
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: one row, as JSON
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    run_cpu = CpuMeter()
    command = shlex.join([*COMMAND.split(), *(sys.argv[1:] if argv is None else argv)])
    images = sorted(
        p for p in args.images.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"}
    )
    if not images:
        raise SystemExit(f"no photos in {args.images}")
    groundtruth = read_groundtruth(args.groundtruth)
    if groundtruth is not None and not {p.name for p in images} <= groundtruth.keys():
        raise SystemExit(f"{args.groundtruth} does not cover every photo in {args.images}")
    specs = available()
    targets = choose_targets(args.models, specs)
    slow = {name.strip() for name in args.slow.split(",") if name.strip()}

    if args.row is not None:  # a child process: measure one row, print it as JSON
        target = Target(**json.loads(args.row))
        row = measure(target, specs[target.model], images, groundtruth, slow, args)
        print(json.dumps(asdict(row)))
        return 0

    _log(f"{len(images)} photos; waiting for a quiet machine")
    wait_for_quiet(args.quiet, args.start_wait)
    decode_ips = decode_throughput(images, specs[targets[0].model].preprocess)
    deadline = started + args.budget
    rows = [measure_quietly(target, args, deadline) for target in targets]
    malloc_rows: list[tuple[Row, Row]] = []
    for name in (part.strip() for part in args.malloc_check.split(",")):
        if name:
            target = Target(name, specs[name].default_layer, end_to_end=False)
            default = measure_quietly(target, args, deadline, GLIBC_DEFAULT)
            tuned = measure_quietly(target, args, deadline)
            malloc_rows.append((default, tuned))

    runtime = time.perf_counter() - started
    text = section(
        command,
        rows,
        subset=args.subset,
        total_images=len(images),
        images_dir=args.images,
        decode_ips=decode_ips,
        runtime_s=runtime,
        other_cores=run_cpu.other_cores(),
        quiet=args.quiet,
        attempts=args.attempts,
        malloc_rows=malloc_rows,
    )
    print(text)
    if args.out is not None:
        write_section(args.out, text)
        _log(f"wrote {args.out}")
    _log(f"done in {runtime:.0f} s")
    return 0


def measure(
    target: Target,
    spec: ModelSpec,
    images: Sequence[Path],
    groundtruth: dict[str, int] | None,
    slow: set[str],
    args: argparse.Namespace,
) -> Row:
    """One row: forward throughput, then (for default layers) add, load time and quality."""
    meter = CpuMeter()
    _log(f"{target.model}/{target.layer}: forward")
    embedder = Embedder(spec, target.layer, resolve_weights(spec, "none"))
    forward_ips, forward_faults = forward_throughput(
        embedder, BATCH, WARMUP_BATCHES, args.batches, args.min_seconds
    )
    forward_add_batch_ips = forward_add_batch_faults = None
    if target.both_batches and ADD_BATCH != BATCH:
        forward_add_batch_ips, forward_add_batch_faults = forward_throughput(
            embedder, ADD_BATCH, 1, 3, args.min_seconds
        )
    del embedder
    gc.collect()
    add = None
    weights_label = "random"
    quality_note = NO_WEIGHTS
    if target.end_to_end:
        real = offline_weights(target.model, args.mobilenet_weights)
        weights, weights_label = real if real is not None else ("none", "random")
        chosen = images[: args.subset] if target.model in slow else images
        whole = args.images if len(chosen) == len(images) else None
        scored = real is not None and groundtruth is not None and whole is not None
        if real is not None and not scored:
            quality_note = "n/a (not all photos added)" if groundtruth else "n/a (no CSV)"
        warm_up(images)
        _log(f"{target.model}/{target.layer}: add {len(chosen)} photos, {weights_label}")
        add = add_throughput(target, weights, chosen, whole, groundtruth if scored else None)
        gc.collect()
    return Row(
        target,
        spec.layers[target.layer].dim,
        weights_label,
        forward_ips,
        forward_add_batch_ips,
        forward_faults,
        forward_add_batch_faults,
        add,
        quality_note,
        meter.other_cores(),
    )


def measure_quietly(
    target: Target, args: argparse.Namespace, deadline: float, env: dict[str, str] | None = None
) -> Row:
    """Measure a row in a fresh process, after waiting for a quiet machine; again (up to
    ``--attempts`` times, keeping the quietest) when other processes took CPU meanwhile."""
    best: Row | None = None
    for attempt in range(1, args.attempts + 1):
        left = deadline - time.perf_counter()
        quiet = wait_for_quiet(args.quiet, min(args.max_wait, max(0.0, left)))
        if quiet is not None and quiet > args.quiet:
            _log(f"still {quiet:.2f} cores busy elsewhere; measuring anyway")
        row = replace(run_row(target, args, env), attempts=attempt)
        if best is None or (row.other_cores or 0.0) < (best.other_cores or 0.0):
            best = row
        others = row.other_cores
        if others is None or others <= args.quiet or time.perf_counter() >= deadline:
            break
        if attempt < args.attempts:
            _log(f"other processes used {others:.2f} cores meanwhile; measuring again")
    assert best is not None
    return best


def run_row(target: Target, args: argparse.Namespace, env: dict[str, str] | None) -> Row:
    """One row in a fresh ``python -m benchmarks.bench_models --row ...`` process, so that no
    row inherits the memory allocator's state from the rows before it."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.bench_models",
        *("--images", str(args.images), "--groundtruth", str(args.groundtruth)),
        *("--mobilenet-weights", str(args.mobilenet_weights)),
        *("--slow", args.slow, "--subset", str(args.subset)),
        *("--batches", str(args.batches), "--min-seconds", str(args.min_seconds)),
        *("--row", json.dumps(asdict(target))),
    ]
    meter = CpuMeter()
    done = subprocess.run(
        command,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    data = json.loads(done.stdout.strip().splitlines()[-1])
    row = Row(
        **{
            **data,
            "target": Target(**data["target"]),
            "add": None if data["add"] is None else AddResult(**data["add"]),
        }
    )
    return replace(row, other_cores=meter.other_cores())


def wait_for_quiet(threshold: float, max_wait: float) -> float | None:
    """Wait (up to ``max_wait`` s) for a second in which other processes use at most
    ``threshold`` cores; returns what the last second measured (None without /proc/stat)."""
    deadline = time.perf_counter() + max_wait
    while True:
        meter = CpuMeter()
        time.sleep(1.0)
        others = meter.other_cores()
        if others is None or others <= threshold or time.perf_counter() >= deadline:
            return others


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
