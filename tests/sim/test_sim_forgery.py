"""The ``forge`` fault: impossible messages injected by an attacker on the
network must be dropped without a trace, and the checker must notice when
they are not, when the core raises on one, or when a genuine message is
dropped as impossible."""

from __future__ import annotations

import random

import pytest

from raft.node import RaftNode
from raft.sim import run_seed
from raft.sim.checker import EXCEPTION, SCREENING
from raft.sim.cluster import Cluster
from raft.sim.forgery import Forger, deliver_forged
from raft.types import Message, MessageType, Role


def _cluster_with_a_leader(seed: int = 5) -> Cluster:
    cluster = Cluster(seed, vary_config=False)
    cluster.start()
    cluster.run(400)
    assert cluster.leader_id() is not None
    return cluster


def test_every_kind_of_forgery_is_dropped_by_a_leader_and_a_follower() -> None:
    cluster = _cluster_with_a_leader()
    leader = cluster.leader_id()
    assert leader is not None
    follower = next(n for n in cluster.live_ids() if n != leader)
    forger = Forger(random.Random(1))
    for nid in (leader, follower):
        raft = cluster.raft(nid)
        assert raft is not None
        peer = next(n for n in cluster.node_ids() if n != nid)
        for kind, build in sorted(forger.kinds.items()):
            for _ in range(20):
                m = build(raft, peer)
                if m is None:
                    assert raft.role != Role.LEADER, kind  # only leader-only kinds opt out
                    continue
                assert deliver_forged(raft, m) is None, (kind, m)


def test_safety_runs_inject_forgeries_of_every_kind_and_stay_clean() -> None:
    kinds: set[str] = set()
    for seed in range(1, 16):
        result = run_seed(seed)
        assert result.ok, result.violations
        kinds.update(k.removeprefix("forged.") for k in result.stats if k.startswith("forged."))
    assert kinds == set(Forger(random.Random(0)).kinds)


def test_a_core_that_acts_on_forgeries_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: without screening, forged messages change state or
    raise, and either is a violation that stops the run."""
    monkeypatch.setattr(RaftNode, "_screen", lambda self, m: None)
    kinds: set[str] = set()
    for seed in range(1, 11):
        result = run_seed(seed)
        assert not result.ok
        kinds.update(v.kind for v in result.violations)
    assert kinds <= {SCREENING, EXCEPTION}
    assert SCREENING in kinds


def test_a_core_that_raises_on_a_forgery_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reported crash, replayed in the simulator: an acknowledgement past
    the leader's log used to raise from ``step``; a raise is a violation."""
    cluster = _cluster_with_a_leader()
    leader = cluster.leader_id()
    assert leader is not None
    monkeypatch.setattr(RaftNode, "_screen", lambda self, m: None)
    forger = Forger(random.Random(1))
    peer = next(n for n in cluster.node_ids() if n != leader)

    def ack_past_log(raft: RaftNode) -> tuple[str, Message]:
        m = forger.kinds["ack-past-log"](raft, peer)
        assert m is not None
        return "ack-past-log", m

    assert cluster.inject(leader, ack_past_log)
    assert [v.kind for v in cluster.checker.violations] == [EXCEPTION]
    assert "Unavailable" in cluster.checker.violations[0].description


def test_a_genuine_message_dropped_as_impossible_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """The other direction: screening that drops what a correct peer sends
    (here: every heartbeat) is a violation in runs without hazards."""
    screen = RaftNode._screen

    def overzealous(self: RaftNode, m: Message) -> str | None:
        if m.type == MessageType.HEARTBEAT:
            return "bad-term"
        return screen(self, m)

    monkeypatch.setattr(RaftNode, "_screen", overzealous)
    result = run_seed(1, profile="none")
    assert [v.kind for v in result.violations] == [SCREENING]
    assert "genuine" in result.violations[0].description
