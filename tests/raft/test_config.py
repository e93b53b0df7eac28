"""``RaftConfig.validate``: settings that cannot work are refused up front,
with a message naming the setting (raft/config.py)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from raft.config import InvalidConfig, RaftConfig
from raft.errors import RaftError
from raft.node import RaftNode
from raft.storage import MemoryStorage


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"id": 0}, "id must be a positive integer"),
        ({"id": -3}, "id must be a positive integer"),
        ({"heartbeat_tick": 0}, "heartbeat_tick must be at least 1"),
        ({"election_tick": 1, "heartbeat_tick": 1}, r"election_tick \(1\) must exceed heartbeat_tick \(1\)"),
        ({"election_tick": 3, "heartbeat_tick": 5}, r"election_tick \(3\) must exceed heartbeat_tick \(5\)"),
        ({"max_inflight_msgs": 0}, "max_inflight_msgs must be at least 1"),
        ({"max_size_per_msg": 0}, "max_size_per_msg must be positive"),
        (
            {"read_only_lease_based": True, "check_quorum": False},
            "read_only_lease_based requires check_quorum",
        ),
    ],
)
def test_validate_rejects_bad_settings(settings: dict[str, Any], message: str) -> None:
    """Each bad setting raises InvalidConfig (a RaftError) saying which one."""
    config = RaftConfig(**{"id": 1, **settings})
    with pytest.raises(InvalidConfig, match=message):
        config.validate()
    assert issubclass(InvalidConfig, RaftError)


def test_node_refuses_an_invalid_config() -> None:
    """A RaftNode validates its config before doing anything else."""
    with pytest.raises(InvalidConfig):
        RaftNode(RaftConfig(id=1, heartbeat_tick=10), MemoryStorage.bootstrap([1]), random.Random(1))


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"election_tick": 2, "heartbeat_tick": 1},
        {"max_inflight_msgs": 1, "max_size_per_msg": 1},
        {"read_only_lease_based": True},
        {"check_quorum": False, "pre_vote": False},
    ],
)
def test_validate_accepts_sound_settings(settings: dict[str, Any]) -> None:
    """The defaults and boundary values that work pass validation."""
    RaftConfig(**{"id": 1, **settings}).validate()
