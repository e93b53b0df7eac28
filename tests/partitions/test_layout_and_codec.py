"""The byte layout: key order is (group, index) order, values round-trip, and
the term runs answer like a plain list of terms.

Rules checked here:
- for any two (group, index) pairs, key byte order equals tuple order, and a
  group's keys (in every column family) lie inside ``[group_prefix,
  group_end)``;
- every value encoding round-trips, and a damaged value raises
  ``StoreCorrupted`` rather than a struct error;
- ``TermIndex`` (runs of equal terms) gives the same term for every index as
  the list it was built from, through truncations, appends and compactions,
  and ``TermIndex.scan`` rebuilds it from point reads.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from partitions import codec, keys
from partitions.storage_errors import StoreCorrupted
from partitions.term_index import TermIndex
from raft.types import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMetadata

ids = st.integers(0, keys.MAX_ID)


@given(a=st.tuples(ids, ids), b=st.tuples(ids, ids))
def test_key_order_is_group_then_index(a: tuple[int, int], b: tuple[int, int]) -> None:
    ka, kb = keys.log_key(*a), keys.log_key(*b)
    assert (ka < kb) == (a < b)
    assert keys.parse_log_key(ka) == a


@given(group=ids, index=ids)
def test_every_key_of_a_group_is_inside_its_range(group: int, index: int) -> None:
    lo, hi = keys.group_prefix(group), keys.group_end(group)
    for key in (keys.log_key(group, index), keys.hard_state_key(group), keys.snapshot_key(group)):
        assert lo <= key < hi
    assert lo <= keys.truncated_key(group) < hi
    if group < keys.MAX_ID:
        assert keys.log_key(group + 1, 0) >= hi


def test_ids_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError):
        keys.log_key(keys.MAX_ID + 1, 0)
    with pytest.raises(ValueError):
        keys.log_key(0, -1)


@given(
    term=ids,
    index=ids,
    kind=st.sampled_from(list(EntryKind)),
    data=st.binary(max_size=300),
)
def test_entry_round_trip(term: int, index: int, kind: EntryKind, data: bytes) -> None:
    entry = Entry(term=term, index=index, kind=kind, data=data)
    value = codec.encode_entry(entry)
    assert codec.decode_entry(index, value) == entry
    assert codec.entry_term(index, value) == term


@given(term=ids, vote=ids, commit=ids)
def test_hard_state_round_trip(term: int, vote: int, commit: int) -> None:
    hs = HardState(term, vote, commit)
    assert codec.decode_hard_state(codec.encode_hard_state(hs)) == hs


@given(
    index=ids,
    term=ids,
    voters=st.frozensets(st.integers(1, 2**63)),
    learners=st.frozensets(st.integers(1, 2**63)),
    data=st.binary(max_size=200),
)
def test_snapshot_round_trip(
    index: int, term: int, voters: frozenset[int], learners: frozenset[int], data: bytes
) -> None:
    snapshot = Snapshot(SnapshotMetadata(index, term, ConfState(voters, learners)), data)
    assert codec.decode_snapshot(codec.encode_snapshot(snapshot)) == snapshot
    assert codec.decode_truncated(codec.encode_truncated(index, term)) == (index, term)


@pytest.mark.parametrize(
    ("decode", "value"),
    [
        (codec.decode_hard_state, b"\x01" + bytes(10)),
        (codec.decode_hard_state, b"\x02" + bytes(24)),
        (codec.decode_truncated, b"\x09" + bytes(16)),
        (codec.decode_snapshot, b"\x01" + bytes(8)),
        (codec.decode_snapshot, b"\x01" + bytes(16) + (5).to_bytes(4, "big") + bytes(4)),
        (lambda v: codec.decode_entry(1, v), b"\x00" * 5),
        (lambda v: codec.decode_entry(1, v), bytes(8) + b"\x07"),
    ],
)
def test_damaged_values_are_corruption(decode: object, value: bytes) -> None:
    assert callable(decode)
    with pytest.raises(StoreCorrupted):
        decode(value)


# --- term runs --------------------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 6), st.integers(0, 2)),
        st.tuples(st.just("truncate"), st.integers(0, 10), st.just(0)),
        st.tuples(st.just("drop"), st.integers(0, 10), st.just(0)),
    ),
    max_size=40,
)


@given(ops=ops)
def test_term_index_matches_a_list(ops: list[tuple[str, int, int]]) -> None:
    first = 1
    terms: list[int] = []  # terms[k] is the term of index first + k
    index = TermIndex.empty(1)
    for op, n, bump in ops:
        last = first + len(terms) - 1
        if op == "append":
            top = terms[-1] if terms else 1
            new = [top + bump] * n
            terms += new
            index = index.append(last + 1, new)
        elif op == "truncate":
            keep = max(first - 1, last - n)
            del terms[keep - first + 1 :]
            index = index.truncate_after(keep)
        else:
            through = min(last, first - 1 + n)
            del terms[: through - first + 1]
            first = through + 1
            index = index.drop_through(through)
        index.check()
        assert (index.first, index.last) == (first, first + len(terms) - 1)
        assert [index.term(i) for i in range(first, first + len(terms))] == terms
        if terms:
            stored = {first + k: term for k, term in enumerate(terms)}
            assert TermIndex.scan(first, index.last, stored.__getitem__) == index


def test_term_index_refuses_decreasing_terms() -> None:
    index = TermIndex.empty(1).append(1, [3, 3])
    with pytest.raises(ValueError, match="below"):
        index.append(3, [2])
    with pytest.raises(ValueError, match="expected 3"):
        index.append(5, [3])
