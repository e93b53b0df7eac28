"""Leadership moves a node makes on its own: preferred leaders, and handing
every leadership away before the node stops.

Preferred leaders: every partition has a preferred replica (the first of its
assignment's replicas) so leaders, and the CPU they cost, spread
evenly over the nodes. Elections do not respect it: the first node up wins
them, and a failover moves leaders away for good. Like Kafka's automatic
preferred-leader election, a leader that is not the preferred replica hands
leadership over once the preferred replica is alive and holds its whole log.

Hand-off (``hand_off_leadership``; ``NodeAdmin.HandOffLeadership``, which
``raftlog node hand-off`` calls as a Kubernetes pod's preStop): a node about
to stop moves the leadership of every group it leads, the metadata
controller's included, to another live voter of the group, so its groups
do not wait an election timeout for a new leader after it is gone. A
caught-up voter is preferred; otherwise any live voter, since Raft's
transfer brings the target up to date before it campaigns. Targets are
spread: each goes to the candidate given the fewest groups so far in this
hand-off. A transfer still not done after ``RETRANSFER_S`` (Raft abandons
one after an election timeout) is started again, possibly towards another
voter; the hand-off ends when nothing is led here or its time is up.

Draining (``Drain``): a hand-off also puts the node in a draining state for
the rest of its life, or the other nodes' preferred-leader balancing would
hand leaderships straight back to it (it is alive and caught up) while the
preStop waits and between its end and SIGTERM. A draining node

- refuses leadership by transfer (partitions/replica_host.py drops inbound
  ``TIMEOUT_NOW``; a peer's transfer times out there and its leader stays),
  yet still campaigns on a real election timeout, so a dead leader is
  still replaced;
- runs no preferred-leader balancing of its own (cluster/node.py);
- keeps handing off whatever it still leads (an election it won):
  ``keep_handing_off``, one task the node owns, every ``DRAIN_RETRY_S``
  until the node stops; a round is skipped while a ``HandOffLeadership``
  call is handing off, so two hand-offs never pick targets for the same
  group at once.

Invariant: only a leader acts, only towards a live voter, through Raft's
leader transfer, so the worst case is one extra election; nothing here
affects safety.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from cluster.controller import Assignment
from partitions.replica import Replica

RETRANSFER_S = 1.0
"""A transfer not done by then is started again (Raft's transfer times out
after an election timeout: 0.3-1 s with the usual settings)."""
HAND_OFF_POLL_S = 0.05
DRAIN_RETRY_S = 1.0
"""How often a draining node hands off what it leads again (as
``RETRANSFER_S``: a transfer still under way is not restarted sooner)."""
NO_LIVE_VOTER = "NO_LIVE_VOTER"
TIMED_OUT = "TIMED_OUT"


class GroupMember(Protocol):
    """What a hand-off needs of a group's replica (a partition's or the
    metadata controller's)."""

    @property
    def is_leader(self) -> bool: ...

    @property
    def voters(self) -> frozenset[int]: ...

    def caught_up(self, peer: int) -> bool: ...

    def transfer_leadership(self, to: int) -> None: ...


def _ready_to_lead(replica: GroupMember, peer: int, peer_alive: Callable[[int], bool]) -> bool:
    """``peer`` can take over at once: it is alive and holds the whole log."""
    return peer_alive(peer) and replica.caught_up(peer)


def hand_back_leadership(
    node_id: int,
    refs: Iterable[Assignment],
    replica_of: Callable[[int], Replica | None],
    peer_alive: Callable[[int], bool],
) -> list[int]:
    """Start a transfer for every partition this node leads but should not;
    returns the groups handed over."""
    moved = []
    for ref in refs:
        preferred = ref.preferred_leader
        if preferred == node_id:
            continue
        replica = replica_of(ref.group)
        if replica is None or not replica.is_leader:
            continue
        if _ready_to_lead(replica, preferred, peer_alive):
            replica.transfer_leadership(preferred)
            moved.append(ref.group)
    return moved


def pick_target(
    node_id: int, replica: GroupMember, peer_alive: Callable[[int], bool], given: Counter[int]
) -> int | None:
    """The voter to hand ``replica``'s leadership to: live, caught up if any
    is, then the one given the fewest groups so far, then the lowest id;
    None when no other voter is alive."""
    live = [v for v in replica.voters if v != node_id and peer_alive(v)]
    if not live:
        return None
    return min(live, key=lambda v: (not _ready_to_lead(replica, v, peer_alive), given[v], v))


@dataclass
class HandOffResult:
    moved: list[int] = field(default_factory=list)
    """Groups led here during the hand-off and no longer led."""
    left: dict[int, str] = field(default_factory=dict)
    """Groups still led here, with why (``NO_LIVE_VOTER``, ``TIMED_OUT``)."""


async def hand_off_leadership(
    node_id: int,
    members: Callable[[], Mapping[int, GroupMember]],
    peer_alive: Callable[[int], bool],
    wait_s: float,
) -> HandOffResult:
    """Transfer away the leadership of every group in ``members()`` this
    node leads, then poll until none is led or ``wait_s`` passed (see the
    module docstring). ``members`` is asked again each round: groups open
    and close meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, wait_s)
    given: Counter[int] = Counter()
    started: dict[int, float] = {}  # group -> when its transfer was last started
    ever_led: set[int] = set()
    unmovable: set[int] = set()
    while True:
        now = loop.time()
        led = {group: m for group, m in members().items() if m.is_leader}
        ever_led |= set(led)
        unmovable.clear()
        for group, member in led.items():
            if now - started.get(group, -RETRANSFER_S) < RETRANSFER_S:
                continue  # its transfer is under way
            target = pick_target(node_id, member, peer_alive, given)
            if target is None:
                unmovable.add(group)
                continue
            member.transfer_leadership(target)
            given[target] += 1
            started[group] = now
        if not led or set(led) <= unmovable or now >= deadline:
            return HandOffResult(
                moved=sorted(ever_led - set(led)),
                left={g: NO_LIVE_VOTER if g in unmovable else TIMED_OUT for g in sorted(led)},
            )
        # Polled: a replica signals no event when it loses leadership, and
        # reading is_leader costs nothing.
        await asyncio.sleep(HAND_OFF_POLL_S)


class Drain:
    """A node's draining state (see the module docstring): off until the
    first ``start``, then on until the node stops."""

    def __init__(self, on_start: Callable[[], None] = lambda: None) -> None:
        self._on_start = on_start
        self._started = asyncio.Event()
        self._hand_offs = 0

    @property
    def started(self) -> bool:
        return self._started.is_set()

    def start(self) -> bool:
        """Start draining (``on_start`` runs then, once); True the first time."""
        if self._started.is_set():
            return False
        self._on_start()
        self._started.set()
        return True

    async def wait_started(self) -> None:
        await self._started.wait()

    @property
    def handing_off(self) -> bool:
        """Whether a ``HandOffLeadership`` call is handing off now."""
        return self._hand_offs > 0

    @contextmanager
    def hand_off(self) -> Iterator[None]:
        """Around a call's hand-off: ``keep_handing_off`` waits meanwhile."""
        self._hand_offs += 1
        try:
            yield
        finally:
            self._hand_offs -= 1


async def keep_handing_off(
    node_id: int,
    members: Callable[[], Mapping[int, GroupMember]],
    peer_alive: Callable[[int], bool],
    drain: Drain,
    retry_s: float = DRAIN_RETRY_S,
) -> None:
    """Once ``drain`` started, every ``retry_s`` start a transfer for each
    group still led here (none while a call's hand-off runs), until
    cancelled: the node's own task, cancelled when it stops."""
    await drain.wait_started()
    while True:
        await asyncio.sleep(retry_s)
        if not drain.handing_off:
            # wait_s=0: start the transfers and return; the next round
            # starts again whatever is still led (a transfer not done in
            # DRAIN_RETRY_S, Raft's own transfer timeout, has failed).
            await hand_off_leadership(node_id, members, peer_alive, wait_s=0.0)
