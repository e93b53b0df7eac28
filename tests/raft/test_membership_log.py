"""``MembershipLog`` and conf-change helpers (raft/membership.py): the
configurations recorded in the log, their encoding and validation."""

from __future__ import annotations

import pytest

from raft.errors import InvalidConfChange
from raft.membership import (
    MembershipLog,
    apply_conf_change,
    decode_conf_change,
    encode_conf_change,
    validate_conf_change,
)
from raft.types import ConfChange, ConfChangeType, ConfState

ADD_VOTER, ADD_LEARNER, REMOVE = (
    ConfChangeType.ADD_VOTER,
    ConfChangeType.ADD_LEARNER,
    ConfChangeType.REMOVE_NODE,
)


def conf(voters: set[int], learners: set[int] | None = None) -> ConfState:
    return ConfState(voters=frozenset(voters), learners=frozenset(learners or ()))


@pytest.mark.parametrize(
    "change",
    [ConfChange(ADD_VOTER, 4), ConfChange(ADD_LEARNER, 2**40, b"ctx"), ConfChange(REMOVE, 1, b"\x00\xff")],
)
def test_encoding_round_trips(change: ConfChange) -> None:
    assert decode_conf_change(encode_conf_change(change)) == change


@pytest.mark.parametrize(
    ("before", "change", "after"),
    [
        (conf({1, 2}), ConfChange(ADD_VOTER, 3), conf({1, 2, 3})),
        (conf({1, 2}, {3}), ConfChange(ADD_VOTER, 3), conf({1, 2, 3})),  # promotion
        (conf({1, 2}), ConfChange(ADD_LEARNER, 3), conf({1, 2}, {3})),
        (conf({1, 2}), ConfChange(ADD_LEARNER, 2), conf({1}, {2})),  # demotion
        (conf({1, 2}, {3}), ConfChange(REMOVE, 3), conf({1, 2})),
        (conf({1, 2}), ConfChange(REMOVE, 2), conf({1})),
    ],
)
def test_apply_conf_change(before: ConfState, change: ConfChange, after: ConfState) -> None:
    assert apply_conf_change(before, change) == after


@pytest.mark.parametrize(
    "change",
    [
        ConfChange(ADD_VOTER, 1),
        ConfChange(ADD_LEARNER, 3),
        ConfChange(REMOVE, 9),
        ConfChange(ADD_VOTER, 0),
        ConfChange(REMOVE, -1),
    ],
)
def test_invalid_changes(change: ConfChange) -> None:
    """Invalid changes raise on validation and leave a replayed config as is."""
    before = conf({1, 2}, {3})
    with pytest.raises(InvalidConfChange):
        validate_conf_change(before, change)
    assert apply_conf_change(before, change) == before


def test_last_voter_cannot_leave() -> None:
    for change in (ConfChange(REMOVE, 1), ConfChange(ADD_LEARNER, 1)):
        with pytest.raises(InvalidConfChange, match="last voter"):
            validate_conf_change(conf({1}, {2}), change)


def history() -> MembershipLog:
    """Base {1,2,3} at 1; add learner 4 at 5; promote 4 at 8."""
    log = MembershipLog(1, conf({1, 2, 3}))
    log.append(5, ConfChange(ADD_LEARNER, 4))
    log.append(8, ConfChange(ADD_VOTER, 4))
    return log


def test_current_is_the_latest_entry_committed_or_not() -> None:
    log = history()
    assert log.current == conf({1, 2, 3, 4})
    assert log.last_change_index == 8


def test_at_answers_as_of_an_applied_index() -> None:
    log = history()
    assert log.at(1) == conf({1, 2, 3})
    assert log.at(4) == conf({1, 2, 3})
    assert log.at(5) == conf({1, 2, 3}, {4})
    assert log.at(7) == conf({1, 2, 3}, {4})
    assert log.at(100) == conf({1, 2, 3, 4})


def test_truncate_from_rolls_back_to_the_previous_configuration() -> None:
    log = history()
    assert not log.truncate_from(9)
    assert log.truncate_from(8)
    assert log.current == conf({1, 2, 3}, {4})
    assert log.truncate_from(2)
    assert log.current == conf({1, 2, 3})
    assert not log.truncate_from(1), "the base configuration is never truncated"
    assert log.current == conf({1, 2, 3})


def test_reset_and_compact() -> None:
    log = history()
    log.compact(7)  # keep what at(6) and later need
    assert log.at(6) == conf({1, 2, 3}, {4})
    assert log.at(100) == conf({1, 2, 3, 4})
    log.reset(20, conf({7}))
    assert (log.current, log.last_change_index) == (conf({7}), 20)
