"""Helpers shared by the storage tests: persist a prepared write directly, and
compare a ``GroupStorage`` with the reference ``MemoryStorage`` through every
method of the ``Storage`` protocol (results and raised errors alike)."""

from __future__ import annotations

import random
from collections.abc import Callable

from partitions.node_store import NodeStore
from partitions.raft_storage import GroupStorage, PreparedWrite
from raft.errors import Compacted, Unavailable
from raft.storage import MemoryStorage

Outcome = tuple[str, object]


def persist(
    store: NodeStore, storage: GroupStorage, prepared: PreparedWrite, *, sync: bool | None = None
) -> None:
    """What the driver does, without the writer thread: write, then apply."""
    store.write([prepared.write_set], sync=prepared.sync if sync is None else sync)
    storage.apply_prepared(prepared)


def outcome(fn: Callable[..., object], *args: object) -> Outcome:
    try:
        return ("ok", fn(*args))
    except (Compacted, Unavailable) as exc:
        return ("raises", type(exc))


def assert_same(rocks: GroupStorage, model: MemoryStorage, rng: random.Random | None = None) -> None:
    """Every read of ``rocks`` answers like ``model``. Exhaustive over terms and
    conf entries; entry ranges are every boundary case plus a random sample
    (``rng``) or all of them (no ``rng``)."""
    assert rocks.initial_state() == model.initial_state()
    assert rocks.first_index() == model.first_index()
    assert rocks.last_index() == model.last_index()
    assert rocks.snapshot() == model.snapshot()
    first, last = model.first_index(), model.last_index()
    for index in range(max(0, first - 3), last + 3):
        assert outcome(rocks.term, index) == outcome(model.term, index), f"term({index})"
    for lo in range(max(0, first - 2), last + 3):
        assert rocks.conf_entries(lo) == model.conf_entries(lo), f"conf_entries({lo})"
    los = range(max(0, first - 2), last + 3)
    ranges = [(lo, hi) for lo in los for hi in (lo, lo + 1, last + 1, last + 2)]
    if rng is not None and len(ranges) > 40:
        ranges = rng.sample(ranges, 40)
    sizes: list[int | None] = [None, 0, 1, 100, 2000]
    for lo, hi in ranges:
        for max_bytes in sizes if rng is None else [rng.choice(sizes)]:
            got = outcome(rocks.entries, lo, hi, max_bytes)
            want = outcome(model.entries, lo, hi, max_bytes)
            assert got == want, f"entries({lo}, {hi}, {max_bytes})"
