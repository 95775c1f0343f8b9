"""The pure rules of ``imgvec dupes``: which image of a group is kept, and how groups form.

No I/O: functions over :class:`imgvec.storage.store.DupeFacts` and a duplicate relation, unit
tested on their own (tests/test_dupes.py).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from imgvec.errors import ImgvecError
from imgvec.storage.store import DupeFacts

KEEP_POLICIES = ("best", "oldest", "newest", "path:PATTERN")
"""``--keep`` values: ``best`` (default) keeps the largest pixel count, then the larger file,
then the one with more EXIF fields, then the oldest (taken time, then the file's modification
time: a copy of a photo is newer than it); ``oldest``/``newest`` go by taken time (file
modification time where there is none), then best; ``path:PATTERN`` keeps a member whose
path matches the glob PATTERN (``*`` spans folders), then best."""


def _when(facts: DupeFacts) -> float:
    """Seconds since the epoch the photo was taken (its file's mtime when EXIF has no time)."""
    if facts.taken_at is not None:
        taken = facts.taken_at.replace(tzinfo=None)
        return (taken - datetime(1970, 1, 1)).total_seconds()
    return facts.mtime_ns / 1e9


def _best(facts: DupeFacts) -> tuple[Any, ...]:
    pixels = (facts.width or 0) * (facts.height or 0)
    return (
        -pixels,
        -facts.size,
        -facts.exif_fields,
        _when(facts),
        facts.mtime_ns,  # a copy has the original's EXIF time: the older file is the original
        facts.path,
        facts.id,
    )


def keep_order(policy: str) -> Callable[[DupeFacts], tuple[Any, ...]]:
    """A sort key: the member to keep sorts first. Raises ImgvecError for an unknown policy."""
    if policy == "best":
        return _best
    if policy == "oldest":
        return lambda f: (_when(f), *_best(f))
    if policy == "newest":
        return lambda f: (-_when(f), *_best(f))
    if policy.startswith("path:") and len(policy) > len("path:"):
        return lambda f: (not matches(policy, f.path), *_best(f))
    raise ImgvecError(f"unknown --keep {policy!r}; choose one of: {', '.join(KEEP_POLICIES)}")


def matches(policy: str, path: str) -> bool:
    """Whether ``path`` matches a ``path:PATTERN`` keep policy (a glob; ``*`` spans folders)."""
    return fnmatch.fnmatchcase(path, policy.removeprefix("path:"))


def cliques(ordered: Sequence[int], neighbours: dict[int, set[int]]) -> list[list[int]]:
    """Groups in which every member is a duplicate of every other (no chaining).

    ``ordered``: image ids in keep order (best first); ``neighbours[a]``: the ids ``a`` is a
    duplicate of (symmetric). Greedy, in keep order: the best image not yet grouped starts a
    group as its keeper, and each of its duplicates, best first, joins when it is a duplicate of
    every member so far. So A~B and B~C never put A and C together unless A~C, and the keeper is
    the best of its group. Groups of one are left out. Each group lists its keeper first.
    """
    rank = {image: position for position, image in enumerate(ordered)}
    grouped: set[int] = set()
    groups: list[list[int]] = []
    for keeper in ordered:
        if keeper in grouped or not neighbours.get(keeper):
            continue
        group = [keeper]
        for candidate in sorted(neighbours[keeper] - grouped, key=rank.__getitem__):
            if all(candidate in neighbours.get(member, ()) for member in group[1:]):
                group.append(candidate)
        if len(group) > 1:
            grouped.update(group)
            groups.append(group)
    return groups


def relation(pairs: Iterable[tuple[int, int]]) -> dict[int, set[int]]:
    """The symmetric relation of ``pairs``: id -> the ids it is paired with."""
    neighbours: dict[int, set[int]] = {}
    for a, b in pairs:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    return neighbours
