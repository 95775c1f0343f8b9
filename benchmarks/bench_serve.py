"""Benchmark of ``imgvec serve`` (issue 14): concurrent clients against the real server while
other imgvec processes add images and remove a folder of the same library.

    .venv/bin/python -m benchmarks.bench_serve --out BENCHMARKS.md

1. Photos: ``--base`` synthetic photos (smooth seeded colour fields, 320x240 JPEG) of which the
   last ``--gone`` are in their own folder, and ``--add`` more; a library of the base photos with
   ``--model`` (efficientnet_lite0 by default: offline weights).
2. Quiet: ``--queries`` searches by library id (k=10), in process (``Library.query_id``) and
   over HTTP from one client, each after a warm-up; p50/p99.
3. Load: the real ``imgvec serve`` in its own process; ``--clients`` threads, each with its own
   HTTP connection, search for ``--seconds`` (or until the writers are done, if later): by the id
   of a random kept base photo, and every ``--upload-every``-th request by uploading one of the
   photos being added. Meanwhile ``imgvec add`` of the ``--add`` photos runs in another process,
   then ``imgvec remove`` of the ``--gone`` folder; the load goes on ``--after`` seconds past it.
   Counted: every answer that is not 200 (an error), and every answer to a request sent after
   the removal ended that still names a removed photo (must be 0); uploads of added photos
   answered with themselves first once the add ended.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from benchmarks.common import percentile

MODULE = "benchmarks.bench_serve"
SEED, K = 0, 10


def make_photos(folder: Path, count: int, first_seed: int) -> list[Path]:
    """``count`` distinct smooth colour fields (a seeded 6x8 grid, resized bicubically)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for number in range(count):
        rng = np.random.default_rng(first_seed + number)
        grid = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        path = folder / f"photo{number:05d}.jpg"
        Image.fromarray(grid).resize((320, 240), Image.Resampling.BICUBIC).save(path, quality=90)
        made.append(path)
    return made


def imgvec(*args: object) -> list[str]:
    return [sys.executable, "-m", "imgvec", *map(str, args)]


@dataclass
class Answer:
    sent: float
    seconds: float
    status: int
    paths: list[str] = field(default_factory=list)
    upload: str | None = None


def quiet_latencies(
    library: Path, url: str, ids: list[int], upload: Path
) -> dict[str, dict[str, float]]:
    import httpx

    from imgvec.api import Library

    def timed(call: Any) -> dict[str, float]:
        for image_id in ids[: common.WARMUP_QUERIES]:
            call(image_id)
        times = []
        for image_id in ids:
            started = time.perf_counter()
            call(image_id)
            times.append(time.perf_counter() - started)
        return {"p50_ms": percentile(times, 50) * 1e3, "p99_ms": percentile(times, 99) * 1e3}

    with Library.open(library, create=False) as lib:
        lib.read_only = True  # as the server's reading side
        in_process = timed(lambda image_id: lib.query_id(image_id, K))
    with httpx.Client(base_url=url, timeout=120) as client:

        def over_http(image_id: int) -> None:
            client.get("/api/search", params={"id": image_id, "k": K}).raise_for_status()

        def send(_image_id: int) -> None:
            client.post("/api/search", params={"k": K}, content=data).raise_for_status()

        data = upload.read_bytes()
        first = time.perf_counter()
        send(0)  # the server loads the model now
        first_upload = {"p50_ms": (time.perf_counter() - first) * 1e3}
        http = timed(over_http)
        uploads = timed(send)
    return {
        "in_process": in_process,
        "http_one_client": http,
        "first_upload": first_upload,
        "uploads": uploads,
    }


def load(
    args: argparse.Namespace,
    url: str,
    library: Path,
    kept: list[int],
    photos: dict[str, list[Path]],
) -> dict[str, Any]:
    import httpx

    answers: list[Answer] = []
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[str] = []
    """Requests with no answer (the exception), and answers other than 200 (status and body)."""

    def client(number: int) -> None:
        rng = random.Random(SEED + number)
        with httpx.Client(base_url=url, timeout=120) as http:
            count = 0
            while not stop.is_set():
                count += 1
                upload = None
                sent = time.perf_counter()
                try:
                    if count % args.upload_every == 0:
                        upload = rng.choice(photos["add"])
                        response = http.post(
                            "/api/search", params={"k": K}, content=upload.read_bytes()
                        )
                    else:
                        response = http.get("/api/search", params={"id": rng.choice(kept), "k": K})
                except httpx.HTTPError as error:
                    with lock:
                        failures.append(f"{type(error).__name__}: {error}")
                    continue
                seconds = time.perf_counter() - sent
                if not response.is_success:
                    with lock:
                        failures.append(f"{response.status_code}: {response.text[:300]}")
                paths = (
                    [h["path"] for h in response.json()["results"]] if response.is_success else []
                )
                with lock:
                    answers.append(
                        Answer(sent, seconds, response.status_code, paths, upload and str(upload))
                    )

    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    add_s, added = common.timed_run(
        imgvec("add", photos["add"][0].parent, "-L", library, "--json"), 3600
    )
    add_ended = time.perf_counter()
    remove_s, _ = common.timed_run(imgvec("remove", photos["gone"][0].parent, "-L", library), 600)
    removed_at = time.perf_counter()
    until = max(started + args.seconds, removed_at + args.after)
    stop.wait(max(0.0, until - time.perf_counter()))
    stop.set()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    gone = {str(p) for p in photos["gone"]}
    after_removal = [a for a in answers if a.sent >= removed_at]
    uploads_after_add = [a for a in answers if a.upload and a.sent >= add_ended and a.status == 200]
    times = [a.seconds for a in answers if a.status == 200]
    return {
        "clients": args.clients,
        "seconds": wall,
        "requests": len(answers) + sum(not f[:1].isdigit() for f in failures),
        "errors": len(failures),
        "statuses": sorted({a.status for a in answers}),
        "failures": failures[:5],
        "p50_ms": percentile(times, 50) * 1e3,
        "p99_ms": percentile(times, 99) * 1e3,
        "per_second": len(answers) / wall,
        "uploads": sum(a.upload is not None for a in answers),
        "add_s": add_s,
        "added": json.loads(added.stdout)["added"],
        "remove_s": remove_s,
        "removed": len(gone),
        "after_removal": len(after_removal),
        "removed_returned": sum(bool(gone.intersection(a.paths)) for a in after_removal),
        "uploads_after_add": len(uploads_after_add),
        "uploads_found_first": sum(a.paths[:1] == [a.upload] for a in uploads_after_add),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="bench-serve-", dir=args.tmp))
    library = root / "library"
    keep = make_photos(root / "photos" / "base", args.base - args.gone, SEED)
    photos = {
        "gone": make_photos(root / "photos" / "gone", args.gone, SEED + args.base),
        "add": make_photos(root / "incoming", args.add, SEED + 10 * args.base),
    }
    common.log(f"adding {args.base} photos with {args.model}")
    base_s, _ = common.timed_run(
        imgvec("add", root / "photos", "-L", library, "--model", args.model), 3600
    )
    from imgvec.api import Library

    with Library.open(library, create=False) as lib:
        ids = {path: int(i) for i, path in lib.sql("SELECT id, path FROM photos").rows}
    kept = [ids[str(p)] for p in keep]
    server = subprocess.Popen(
        imgvec("serve", "-L", library, "--port", "0"), stderr=subprocess.PIPE, text=True
    )
    try:
        assert server.stderr is not None
        line = server.stderr.readline()
        if " on http://" not in line:
            raise SystemExit(f"imgvec serve did not start: {line}{server.stderr.read()[-2000:]}")
        url = line.split(" on ")[1].split()[0]
        common.log(f"quiet latencies, {args.queries} queries")
        rng = random.Random(SEED)
        chosen = [rng.choice(kept) for _ in range(args.queries)]
        quiet = quiet_latencies(library, url, chosen, keep[0])
        common.log(
            f"{args.clients} clients for {args.seconds} s; add {args.add}, remove {args.gone}"
        )
        loaded = load(args, url, library, kept, photos)
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(root, ignore_errors=True)
    return {
        "model": args.model,
        "base": args.base,
        "base_add_s": base_s,
        "quiet": quiet,
        "load": loaded,
    }


def tables(
    result: dict[str, Any], command: str, started: float, meter: common.CpuMeter
) -> dict[str, str]:
    quiet, loaded = result["quiet"], result["load"]

    def cells(times: dict[str, float]) -> str:
        return f"{times['p50_ms']:.1f} | {times['p99_ms']:.1f}"

    queries = f"{result['queries']:,}"
    rows = [
        f"in process, `Library.query_id` | quiet | 1 | {queries} | "
        f"{cells(quiet['in_process'])} | -",
        f"HTTP, `GET /api/search?id=` | quiet | 1 | {queries} | "
        f"{cells(quiet['http_one_client'])} | -",
        f"HTTP, `POST /api/search` (upload), the first: loads the model | quiet | 1 | 1 | "
        f"{quiet['first_upload']['p50_ms']:.0f} | - | -",
        f"HTTP, `POST /api/search` (upload, 320x240 JPEG) | quiet | 1 | {queries} | "
        f"{cells(quiet['uploads'])} | -",
        f"HTTP, by id; 1 in {result['upload_every']} by upload | `add` of {loaded['added']:,}, "
        f"then `remove` of {loaded['removed']:,} | {loaded['clients']} "
        f"| {loaded['requests']:,} | {cells(loaded)} | {loaded['per_second']:.1f}",
    ]
    checks = [
        f"- Library: {result['base']:,} synthetic 320x240 photos, `{result['model']}`, k = {K}. "
        f"Load: {loaded['seconds']:.0f} s, {loaded['uploads']:,} of the requests uploads; the "
        f"add of {loaded['added']:,} photos took {loaded['add_s']:.1f} s beside the clients, the "
        f"removal {loaded['remove_s']:.1f} s.",
        f"- Errors (an answer other than 200, or none): **{loaded['errors']}** of "
        f"{loaded['requests']:,}.",
        "- Answers to requests sent after the removal ended that named a removed photo: "
        f"**{loaded['removed_returned']}** of {loaded['after_removal']:,}.",
        "- Uploads of added photos, sent after the add ended, answered with themselves first: "
        f"{loaded['uploads_found_first']} of {loaded['uploads_after_add']}.",
    ]
    table = common.table(
        "search | meanwhile | clients | requests | p50 ms | p99 ms | answers / s",
        rows,
        "llrrrrr",
    )
    return {
        "run": common.run_line(command, started, meter),
        "load": table + "\n\n" + "\n".join(checks),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--base", type=int, default=2000, help="photos in the library at start")
    parser.add_argument("--gone", type=int, default=200, help="of them, removed during the load")
    parser.add_argument("--add", type=int, default=1000, help="photos added during the load")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--after", type=float, default=10.0, help="seconds of load at least after the removal"
    )
    parser.add_argument("--upload-every", type=int, default=10)
    parser.add_argument("--queries", type=int, default=300, help="quiet queries per way")
    parser.add_argument("--tmp", type=Path, help="folder for temporary data (default: system)")
    common.report_args(parser)
    args = parser.parse_args(argv)
    started, meter = time.perf_counter(), common.CpuMeter()
    result = run(args)
    result.update(upload_every=args.upload_every, queries=args.queries)
    common.publish(
        "bench_serve",
        tables(result, common.command_line(MODULE, argv), started, meter),
        result,
        args,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
