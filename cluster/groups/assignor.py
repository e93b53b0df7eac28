"""The partition assignor: who should own what, given who subscribes to what.

``assign`` computes a group's *target* assignment. It is a pure function of
its inputs, so every coordinator computes the same target from the same
membership, subscriptions, metadata and previous target.

Invariants of the result:

- every partition of every subscribed topic (``0 <= p < count``) is in exactly
  one member's set, and only in the set of a member subscribed to its topic;
- sticky: a partition stays with its previous owner unless that owner no
  longer subscribes to it or it must move to restore balance;
- balanced: when all members subscribe to the same topics, member counts
  differ by at most one. With different subscriptions it is the best that
  single moves can reach: no partition can move to another eligible member
  and leave the pair closer than two apart;
- deterministic: iteration is always over sorted keys, never over hash order.

Why this shape: a rebalance costs a revocation handshake per moved partition
(the old owner commits and lets go before the new one starts), so moving as
little as possible is worth a little imbalance-fixing code.
"""

from __future__ import annotations

from collections.abc import Mapping

from cluster.groups import TopicPartition

__all__ = ["assign"]


def assign(
    subscriptions: Mapping[str, frozenset[str]],
    partition_counts: Mapping[str, int],
    previous: Mapping[str, frozenset[TopicPartition]],
) -> dict[str, frozenset[TopicPartition]]:
    """The target assignment: member id → partitions.

    ``subscriptions``: member id → subscribed topic names. ``partition_counts``:
    topic → number of partitions (a topic missing or at 0 has none).
    ``previous``: the last target, kept where still valid (stickiness)."""
    members = sorted(subscriptions)
    eligible: dict[str, list[str]] = {}
    for member in members:
        for topic in subscriptions[member]:
            if partition_counts.get(topic, 0) > 0:
                eligible.setdefault(topic, []).append(member)

    owned: dict[str, set[TopicPartition]] = {member: set() for member in members}
    taken: set[TopicPartition] = set()
    for member in members:
        for tp in sorted(previous.get(member, ())):
            valid = tp.topic in subscriptions[member] and 0 <= tp.partition < partition_counts.get(
                tp.topic, 0
            )
            if valid and tp not in taken:  # defensive: a previous target never holds one twice
                owned[member].add(tp)
                taken.add(tp)

    for topic in sorted(eligible):
        candidates = eligible[topic]
        for partition in range(partition_counts[topic]):
            tp = TopicPartition(topic, partition)
            if tp not in taken:
                least = min(candidates, key=lambda m: (len(owned[m]), m))
                owned[least].add(tp)
                taken.add(tp)

    _balance(owned, eligible)
    return {member: frozenset(owned[member]) for member in members}


def _balance(owned: dict[str, set[TopicPartition]], eligible: Mapping[str, list[str]]) -> None:
    """Move partitions from the most to the least loaded eligible members
    until no single move narrows a gap of two or more. Each move lowers the
    sum of squared counts, so this ends."""
    while True:
        moved = False
        for donor in sorted(owned, key=lambda m: (-len(owned[m]), m)):
            donor_count = len(owned[donor])
            # The donor's topics, checked in a fixed order; the least loaded
            # eligible receiver is the same for every partition of a topic.
            for topic in sorted({tp.topic for tp in owned[donor]}, reverse=True):
                receiver = min(eligible[topic], key=lambda m: (len(owned[m]), m))
                if donor_count - len(owned[receiver]) >= 2:
                    tp = max(tp for tp in owned[donor] if tp.topic == topic)
                    owned[donor].remove(tp)
                    owned[receiver].add(tp)
                    moved = True
                    break
            if moved:
                break
        if not moved:
            return
