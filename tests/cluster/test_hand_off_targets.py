"""cluster/leader_balance.py's hand-off: whom each group's leadership goes
to, when a hand-off ends, and a draining node's loop that keeps handing off
what it wins back (fake group members, no network)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from cluster.leader_balance import (
    NO_LIVE_VOTER,
    TIMED_OUT,
    Drain,
    GroupMember,
    hand_off_leadership,
    keep_handing_off,
    pick_target,
)

ME = 1


@dataclass
class FakeMember:
    voters: frozenset[int]
    lagging: frozenset[int] = frozenset()
    obeys: bool = True
    """Whether a transfer takes effect (Raft finished it)."""
    is_leader: bool = True
    asked: list[int] = field(default_factory=list)

    def caught_up(self, peer: int) -> bool:
        return peer not in self.lagging

    def transfer_leadership(self, to: int) -> None:
        self.asked.append(to)
        if self.obeys:
            self.is_leader = False


def alive_but(*dead: int) -> Callable[[int], bool]:
    return lambda node: node not in dead


def test_a_caught_up_live_voter_is_preferred_then_the_least_given() -> None:
    member = FakeMember(frozenset({1, 2, 3, 4}), lagging=frozenset({2}))
    assert pick_target(ME, member, alive_but(), Counter()) == 3
    assert pick_target(ME, member, alive_but(), Counter({3: 2, 4: 1})) == 4
    assert pick_target(ME, member, alive_but(3, 4), Counter()) == 2  # lagging beats nobody
    assert pick_target(ME, member, alive_but(2, 3, 4), Counter()) is None
    assert pick_target(ME, FakeMember(frozenset({ME})), alive_but(), Counter()) is None


async def test_every_led_group_moves_spread_over_the_voters() -> None:
    fakes = {g: FakeMember(frozenset({1, 2, 3})) for g in range(6)}
    fakes[9] = FakeMember(frozenset({1, 2, 3}), is_leader=False)
    members: dict[int, GroupMember] = dict(fakes)
    result = await hand_off_leadership(ME, lambda: members, alive_but(), wait_s=1.0)
    assert result.moved == list(range(6)) and result.left == {}
    assert Counter(t for m in fakes.values() for t in m.asked) == {2: 3, 3: 3}
    assert fakes[9].asked == []


async def test_groups_nobody_can_take_end_the_hand_off_at_once() -> None:
    members: dict[int, GroupMember] = {
        5: FakeMember(frozenset({ME})),
        6: FakeMember(frozenset({1, 2}), obeys=True),
        7: FakeMember(frozenset({1, 3})),
    }
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await hand_off_leadership(ME, lambda: members, alive_but(3), wait_s=5.0)
    assert loop.time() - started < 1.0
    assert result.moved == [6]
    assert result.left == {5: NO_LIVE_VOTER, 7: NO_LIVE_VOTER}


async def test_a_transfer_that_does_not_finish_is_retried_then_reported() -> None:
    stuck = FakeMember(frozenset({1, 2, 3}), obeys=False)
    result = await hand_off_leadership(ME, lambda: {4: stuck}, alive_but(), wait_s=1.3)
    assert result.moved == [] and result.left == {4: TIMED_OUT}
    assert len(stuck.asked) == 2  # once at the start, again after RETRANSFER_S


async def test_a_draining_node_keeps_handing_off_what_it_leads_again() -> None:
    member = FakeMember(frozenset({1, 2, 3}), is_leader=False)
    members: dict[int, GroupMember] = {4: member}
    on_start: list[bool] = []
    drain = Drain(on_start=lambda: on_start.append(True))
    loop = asyncio.create_task(keep_handing_off(ME, lambda: members, alive_but(), drain, retry_s=0.02))
    try:
        member.is_leader = True
        await asyncio.sleep(0.1)
        assert member.asked == [] and not drain.started  # not draining: nothing moves

        assert drain.start() and not drain.start()  # idempotent; on_start runs once
        assert on_start == [True]
        await asyncio.sleep(0.1)
        assert member.asked and not member.is_leader

        # It wins an election later: handed off again at the next round.
        member.is_leader = True
        asked = len(member.asked)
        await asyncio.sleep(0.1)
        assert len(member.asked) == asked + 1 and not member.is_leader

        # While a call's hand-off runs, the loop leaves the groups to it.
        with drain.hand_off():
            member.is_leader = True
            await asyncio.sleep(0.1)
            assert len(member.asked) == asked + 1 and member.is_leader
        await asyncio.sleep(0.1)
        assert not member.is_leader
    finally:
        loop.cancel()
        await asyncio.wait((loop,))
    assert loop.cancelled()
