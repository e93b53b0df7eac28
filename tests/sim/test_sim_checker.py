"""Each safety check can fail: fed a synthetic violation, it reports it."""

from __future__ import annotations

from raft.sim.checker import (
    CONTRACT,
    ELECTION_SAFETY,
    LEADER_COMPLETENESS,
    LOG_MATCHING,
    READ_SAFETY,
    STATE_MACHINE_SAFETY,
    Checker,
)
from raft.sim.statemachine import EMPTY, GENESIS, chain
from raft.types import Entry


def _log(*spec: tuple[int, bytes]) -> list[Entry]:
    """Entries from index 2 on (index 1 is the bootstrap snapshot)."""
    return [Entry(term=term, index=i + 2, data=data) for i, (term, data) in enumerate(spec)]


def _hash(entries: list[Entry]) -> bytes:
    digest = GENESIS
    for e in entries:
        digest = chain(digest, e.term, e.kind, e.data)
    return digest


def _booted(*nodes: int) -> Checker:
    checker = Checker()
    for node in nodes:
        checker.log_reset(node, 1, 1, GENESIS, [])
    return checker


def _kinds(checker: Checker) -> list[str]:
    return [v.kind for v in checker.violations]


def test_a_correct_history_has_no_violation() -> None:
    checker = _booted(1, 2, 3)
    entries = _log((2, b""), (2, b"a"), (2, b"b"))
    checker.became_leader(1, 2)
    for node in (1, 2, 3):
        checker.log_append(node, entries, leader=node == 1)
    for node in (1, 2):
        for n in range(1, 4):
            checker.applied(node, n + 1, 2, _hash(entries[:n]), 2)
    checker.became_leader(2, 3)
    checker.read_requested(3, b"r1")
    checker.read_state(3, 4, b"r1")
    assert checker.violations == []
    assert checker.max_applied == 4


def test_election_safety_two_leaders_in_one_term() -> None:
    checker = _booted(1, 2, 3)
    checker.became_leader(1, 5)
    checker.became_leader(1, 5)  # the same leader seen twice is fine
    assert checker.violations == []
    checker.became_leader(2, 5)
    assert _kinds(checker) == [ELECTION_SAFETY]
    violation = checker.violations[0]
    assert "term 5" in violation.description


def test_log_matching_same_index_and_term_after_different_prefixes() -> None:
    checker = _booted(1, 2)
    checker.step = 42
    checker.log_append(1, _log((2, b"a"), (2, b"b")))
    checker.log_append(2, _log((2, b"x")))  # (2, term 2) with other content
    assert _kinds(checker) == [LOG_MATCHING]
    assert checker.violations[0].step == 42


def test_log_matching_detects_a_differing_earlier_entry() -> None:
    checker = _booted(1, 2)
    checker.log_append(1, _log((2, b"a"), (3, b"b")))
    checker.log_append(2, _log((1, b"a"), (3, b"b")))  # (3, term 3) after another prefix
    assert _kinds(checker) == [LOG_MATCHING]


def test_log_matching_accepts_a_rewritten_uncommitted_tail() -> None:
    checker = _booted(1)
    checker.log_append(1, _log((2, b"a"), (2, b"b")))
    checker.log_append(1, [Entry(term=3, index=3, data=b"c")])  # overwrite from index 3
    assert checker.violations == []
    log = checker.logs[1]
    assert log.last == 3
    assert log.term_at(3) == 3


def test_a_leader_that_overwrites_its_own_log_is_reported() -> None:
    checker = _booted(1)
    checker.log_append(1, _log((2, b"a"), (2, b"b")), leader=True)
    checker.log_append(1, [Entry(term=2, index=3, data=b"z")], leader=True)
    assert LOG_MATCHING in _kinds(checker)


def test_leader_completeness_missing_committed_entry() -> None:
    checker = _booted(1, 2)
    entries = _log((2, b""), (2, b"a"))
    checker.log_append(1, entries)
    checker.applied(1, 2, 2, _hash(entries[:1]), 2)
    checker.applied(1, 3, 2, _hash(entries), 2)
    checker.log_append(2, entries[:1])  # node 2 lacks index 3
    checker.became_leader(2, 3)
    assert _kinds(checker) == [LEADER_COMPLETENESS]
    assert "missing committed index 3" in checker.violations[0].description


def test_leader_completeness_different_committed_entry() -> None:
    checker = _booted(1, 2)
    entries = _log((2, b""), (2, b"a"))
    checker.log_append(1, entries)
    checker.applied(1, 3, 2, _hash(entries), 2)
    checker.log_append(2, _log((2, b""), (3, b"other")))
    checker.became_leader(2, 4)
    assert _kinds(checker) == [LEADER_COMPLETENESS]


def test_leader_completeness_only_binds_later_terms() -> None:
    # An entry applied by a node in term 5 was committed in a term <= 5; a
    # leader of term 5 itself (delayed votes) need not hold it.
    checker = _booted(1, 2)
    entries = _log((5, b"a"))
    checker.log_append(1, entries)
    checker.applied(1, 2, 5, _hash(entries), 5)
    checker.became_leader(2, 5)
    assert checker.violations == []
    checker.became_leader(2, 6)
    assert _kinds(checker) == [LEADER_COMPLETENESS]


def test_leader_completeness_through_a_snapshot() -> None:
    checker = _booted(1, 2)
    entries = _log((2, b"a"), (2, b"b"), (2, b"c"))
    checker.log_append(1, entries)
    for n in range(1, 4):
        checker.applied(1, n + 1, 2, _hash(entries[:n]), 2)
    # Node 2 holds a snapshot at 4 with the same state: complete.
    checker.log_snapshot(2, 4, 2, _hash(entries))
    checker.became_leader(2, 3)
    assert checker.violations == []
    # Node 3's snapshot at 4 holds another history.
    checker.log_snapshot(3, 4, 2, b"\x01" * 16)
    checker.became_leader(3, 4)
    assert LEADER_COMPLETENESS in _kinds(checker)


def test_state_machine_safety_two_nodes_apply_different_entries() -> None:
    checker = _booted(1, 2)
    checker.applied(1, 2, 2, chain(GENESIS, 2, 0, b"a"), 2)
    checker.applied(2, 2, 2, chain(GENESIS, 2, 0, b"b"), 2)
    assert _kinds(checker) == [STATE_MACHINE_SAFETY]


def test_state_machine_safety_node_applies_what_its_log_does_not_hold() -> None:
    checker = _booted(1)
    checker.log_append(1, _log((2, b"a")))
    checker.applied(1, 2, 2, chain(GENESIS, 2, 0, b"not-a"), 2)
    assert _kinds(checker) == [STATE_MACHINE_SAFETY]


def test_durability_committed_entry_lost_in_a_crash() -> None:
    checker = _booted(1, 2, 3)
    entries = _log((2, b""), (2, b"a"))
    checker.log_append(1, entries)
    checker.log_append(2, entries)
    checker.applied(1, 3, 2, _hash(entries), 2)
    # Node 2 crashes and its disk had only index 2; node 3 never had index 3.
    checker.log_reset(2, 1, 1, GENESIS, entries[:1])
    checker.log_append(3, entries[:1])
    checker.became_leader(2, 3)
    assert _kinds(checker) == [LEADER_COMPLETENESS]
    # The record survives: a second leader without it is reported too.
    checker.became_leader(3, 4)
    assert _kinds(checker) == [LEADER_COMPLETENESS, LEADER_COMPLETENESS]


def test_read_safety_stale_read_index() -> None:
    checker = _booted(1)
    checker.commit_index(10)
    checker.read_requested(1, b"r1")
    checker.commit_index(12)
    checker.read_state(1, 10, b"r1")  # >= what was committed when asked: fine
    assert checker.violations == []
    checker.read_requested(1, b"r2")
    checker.read_state(1, 11, b"r2")
    assert _kinds(checker) == [READ_SAFETY]


def test_read_answer_nobody_asked_for() -> None:
    checker = _booted(1, 2)
    checker.read_requested(1, b"r1")
    checker.read_state(2, 5, b"r1")
    assert _kinds(checker) == [CONTRACT]


def test_log_mirror_skips_entries_covered_by_the_snapshot() -> None:
    checker = Checker()
    checker.log_snapshot(1, 5, 2, b"\x02" * 16)
    checker.log_append(1, [Entry(term=2, index=i) for i in range(4, 8)])
    assert checker.violations == []
    assert checker.logs[1].base == 5
    assert checker.logs[1].last == 7


def test_gap_in_a_written_log_is_a_contract_violation() -> None:
    checker = _booted(1)
    checker.log_append(1, [Entry(term=2, index=5)])
    assert _kinds(checker) == [CONTRACT]


def test_empty_log_hash_is_the_chain_origin() -> None:
    assert chain(EMPTY, 1, 0, b"") == GENESIS
