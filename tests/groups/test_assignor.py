"""The assignor covers every subscribed partition exactly once, only with
subscribers, balances to within one for equal subscriptions, keeps what it
can, and gives the same answer for the same input whatever the dict order."""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import given
from hypothesis import strategies as st

from cluster.groups import TopicPartition
from cluster.groups.assignor import assign

TOPICS = ("a", "b", "c", "d")

members_st = st.lists(st.sampled_from([f"m{i:02d}" for i in range(12)]), min_size=1, max_size=12, unique=True)
counts_st = st.fixed_dictionaries({t: st.integers(0, 12) for t in TOPICS})
subscription_st = st.frozensets(st.sampled_from(TOPICS), min_size=1)


def partitions_of(
    subscriptions: Mapping[str, frozenset[str]], counts: Mapping[str, int]
) -> set[TopicPartition]:
    topics = set().union(*subscriptions.values())
    return {TopicPartition(t, p) for t in topics for p in range(counts.get(t, 0))}


def check_cover(
    result: Mapping[str, frozenset[TopicPartition]],
    subscriptions: Mapping[str, frozenset[str]],
    counts: Mapping[str, int],
) -> None:
    assert set(result) == set(subscriptions)
    seen: list[TopicPartition] = [tp for parts in result.values() for tp in parts]
    assert len(seen) == len(set(seen)), "a partition is in two members' sets"
    assert set(seen) == partitions_of(subscriptions, counts)
    for member, parts in result.items():
        assert all(tp.topic in subscriptions[member] for tp in parts), (
            f"{member} got a topic it does not want"
        )


def no_improving_move(
    result: Mapping[str, frozenset[TopicPartition]], subscriptions: Mapping[str, frozenset[str]]
) -> bool:
    for parts in result.values():
        for tp in parts:
            for receiver, theirs in result.items():
                if tp.topic in subscriptions[receiver] and len(parts) - len(theirs) >= 2:
                    return False
    return True


@given(members_st, subscription_st, counts_st)
def test_equal_subscriptions_cover_and_balance_within_one(
    members: list[str], topics: frozenset[str], counts: dict[str, int]
) -> None:
    subscriptions = dict.fromkeys(members, topics)
    result = assign(subscriptions, counts, {})
    check_cover(result, subscriptions, counts)
    sizes = [len(parts) for parts in result.values()]
    assert max(sizes) - min(sizes) <= 1


@given(st.dictionaries(st.sampled_from([f"m{i}" for i in range(8)]), subscription_st, min_size=1), counts_st)
def test_mixed_subscriptions_cover_and_leave_no_improving_move(
    subscriptions: dict[str, frozenset[str]], counts: dict[str, int]
) -> None:
    result = assign(subscriptions, counts, {})
    check_cover(result, subscriptions, counts)
    assert no_improving_move(result, subscriptions)


@given(
    st.dictionaries(st.sampled_from([f"m{i}" for i in range(8)]), subscription_st, min_size=1),
    counts_st,
    st.data(),
)
def test_any_previous_target_is_repaired(
    subscriptions: dict[str, frozenset[str]], counts: dict[str, int], data: st.DataObject
) -> None:
    """A previous target may name partitions that no longer exist, topics a
    member dropped, or one partition twice: the result is still valid."""
    universe = [TopicPartition(t, p) for t in TOPICS for p in range(14)]
    previous = {
        m: frozenset(data.draw(st.lists(st.sampled_from(universe), max_size=10))) for m in subscriptions
    }
    result = assign(subscriptions, counts, previous)
    check_cover(result, subscriptions, counts)
    assert no_improving_move(result, subscriptions)


@given(st.dictionaries(st.sampled_from([f"m{i}" for i in range(8)]), subscription_st, min_size=1), counts_st)
def test_a_result_is_a_fixed_point(subscriptions: dict[str, frozenset[str]], counts: dict[str, int]) -> None:
    """Recomputing with nothing changed moves nothing (no churn on every
    heartbeat-triggered recomputation)."""
    result = assign(subscriptions, counts, {})
    assert assign(subscriptions, counts, result) == result


@given(st.dictionaries(st.sampled_from([f"m{i}" for i in range(8)]), subscription_st, min_size=1), counts_st)
def test_insertion_order_does_not_matter(
    subscriptions: dict[str, frozenset[str]], counts: dict[str, int]
) -> None:
    previous = assign(dict(list(subscriptions.items())[:-1]) or subscriptions, counts, {})
    forward = assign(subscriptions, counts, previous)
    backward = assign(
        dict(reversed(list(subscriptions.items()))),
        dict(reversed(list(counts.items()))),
        dict(reversed(list(previous.items()))),
    )
    assert forward == backward


@given(st.integers(2, 10), st.integers(0, 60))
def test_a_new_member_takes_only_its_share(member_count: int, partitions: int) -> None:
    """Sticky: when a member joins, only the partitions it receives move; every
    other member keeps all but what it gives the newcomer."""
    old = {f"m{i}": frozenset({"a"}) for i in range(member_count - 1)}
    before = assign(old, {"a": partitions}, {})
    after = assign({**old, "new": frozenset({"a"})}, {"a": partitions}, before)
    moved = sum(len(before[m] - after[m]) for m in old)
    assert moved == len(after["new"]) == partitions // member_count
    assert all(after[m] <= before[m] for m in old)


@given(st.integers(2, 10), st.integers(0, 60))
def test_a_member_leaving_moves_only_its_partitions(member_count: int, partitions: int) -> None:
    members = {f"m{i}": frozenset({"a"}) for i in range(member_count)}
    before = assign(members, {"a": partitions}, {})
    del members["m0"]
    after = assign(members, {"a": partitions}, before)
    assert all(before[m] <= after[m] for m in members), "a remaining member lost a partition"
    assert sum(len(after[m] - before[m]) for m in members) == len(before["m0"])


def test_unsubscribed_and_missing_topics_get_nothing() -> None:
    result = assign({"x": frozenset({"a", "gone"}), "y": frozenset({"b"})}, {"a": 2, "b": 0}, {})
    assert result == {"x": frozenset({TopicPartition("a", 0), TopicPartition("a", 1)}), "y": frozenset()}
