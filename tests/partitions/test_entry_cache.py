"""EntryCache and GroupStorage with it: a hit returns what a disk read would."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from partitions.entry_cache import EntryCache
from partitions.node_store import NodeStore
from partitions.raft_storage import GroupStorage, bootstrap_ready
from raft.ready import Ready
from raft.types import Entry, HardState


def entries(lo: int, hi: int, term: int = 1, size: int = 10) -> list[Entry]:
    return [Entry(term=term, index=i, data=bytes([i % 256]) * size) for i in range(lo, hi)]


def test_append_overwrite_truncate_and_compact() -> None:
    cache = EntryCache(max_bytes=1 << 20)
    cache.append(entries(1, 11))
    assert (cache.first, cache.last) == (1, 10)
    cache.append(entries(6, 8, term=2))  # a new leader overwrote 6.. and cut the tail
    assert cache.last == 7 and cache.get(6, 8, None) == entries(6, 8, term=2)
    assert cache.get(5, 9, None) is None  # 8 is no longer held
    cache.drop_through(3)
    assert cache.first == 4 and cache.get(3, 5, None) is None
    cache.append(entries(20, 21))  # a gap: the cache restarts there
    assert (cache.first, cache.last) == (20, 20)


def test_the_oldest_entries_go_first_and_the_newest_always_stays() -> None:
    cache = EntryCache(max_bytes=3 * (100 + 16))
    cache.append(entries(1, 6, size=100))
    assert (cache.first, cache.last) == (3, 5)
    cache.append(entries(6, 7, size=10_000))
    assert (cache.first, cache.last) == (6, 6)


def test_get_limits_bytes_like_storage() -> None:
    cache = EntryCache()
    cache.append(entries(1, 5, size=100))
    assert [e.index for e in cache.get(1, 5, 250) or []] == [1, 2]
    assert [e.index for e in cache.get(1, 5, 1) or []] == [1]  # never empty


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(
        st.tuples(st.integers(1, 30), st.integers(0, 8), st.integers(1, 3)), min_size=1, max_size=12
    ),
    cache_bytes=st.sampled_from([0, 200, 1 << 20]),
)
def test_a_cached_read_equals_a_cold_read(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[int, int, int]], cache_bytes: int
) -> None:
    path: Path = tmp_path_factory.mktemp("cache")
    with NodeStore(path / "store") as store:
        storage = GroupStorage(store, 7, cache_bytes=cache_bytes)

        def persist(ready: Ready) -> None:
            prepared = storage.prepare(ready)
            store.write([prepared.write_set], sync=False)
            storage.apply_prepared(prepared)

        persist(bootstrap_ready([1, 2, 3]))
        term = 1
        for start, count, bump in ops:
            term += bump - 1
            start = min(max(start, storage.first_index()), storage.last_index() + 1)
            if count:
                persist(
                    Ready(
                        entries=tuple(entries(start, start + count, term=term)),
                        hard_state=HardState(term=term),
                    )
                )
        cold = GroupStorage(store, 7)
        lo, hi = storage.first_index(), storage.last_index() + 1
        for limit in (None, 30, 1 << 20):
            assert storage.entries(lo, hi, limit) == cold.entries(lo, hi, limit)
