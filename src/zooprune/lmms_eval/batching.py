"""Group lmms-eval requests into batches and put the answers back in request order."""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def settings_key(gen_kwargs: dict[str, Any] | None) -> str:
    """A hashable key of generation settings: requests with equal keys may share a batch."""
    return json.dumps(gen_kwargs or {}, sort_keys=True, default=repr)


@dataclass(frozen=True)
class Batch:
    """Positions (in the original request list) of requests that run together."""

    key: Hashable
    indices: tuple[int, ...]


def make_batches(
    items: Sequence[T],
    batch_size: int,
    key: Callable[[T], Hashable],
    length: Callable[[T], int],
) -> list[Batch]:
    """Split ``items`` into batches of at most ``batch_size`` with equal ``key``.

    Within a group, longer items come first (similar lengths share a batch, so less padding;
    an out-of-memory error shows on the first batch). The order is deterministic: groups in
    order of first appearance, ties by original position.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    groups: dict[Hashable, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(key(item), []).append(i)
    batches = []
    for group_key, members in groups.items():
        ordered = sorted(members, key=lambda i: (-length(items[i]), i))
        for start in range(0, len(ordered), batch_size):
            batches.append(Batch(group_key, tuple(ordered[start : start + batch_size])))
    return batches


def restore_order(batches: Sequence[Batch], outputs: Sequence[Sequence[T]], total: int) -> list[T]:
    """Per-request outputs in the original order from per-batch outputs (same order as ``batches``)."""
    result: list[Any] = [None] * total
    seen = 0
    for batch, out in zip(batches, outputs, strict=True):
        if len(out) != len(batch.indices):
            raise ValueError(f"batch of {len(batch.indices)} requests returned {len(out)} outputs")
        for i, value in zip(batch.indices, out):
            result[i] = value
        seen += len(out)
    if seen != total:
        raise ValueError(f"{seen} outputs for {total} requests")
    return result


def truncate_at_stop(text: str, until: Sequence[str]) -> str:
    """``text`` cut before the first stop string that occurs in it (empty stop strings ignored)."""
    cut = len(text)
    for stop in until:
        if stop:
            pos = text.find(stop)
            if pos != -1:
                cut = min(cut, pos)
    return text[:cut]
