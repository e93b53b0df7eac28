"""Linearizable reads by ReadIndex (Raft thesis §6.4).

A read asked at a leader records the commit index at that moment; it may be
served once a quorum has answered a heartbeat sent *after* the read was
asked (proving this node was still the leader then) and the state machine
has applied up to the recorded index.

Invariants: requests are answered in the order they were asked; an
acknowledgement of a later request also confirms every earlier one.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ReadRequest:
    index: int
    context: bytes
    requester: int
    acks: set[int] = field(default_factory=set)


class ReadOnly:
    __slots__ = ("_pending", "_queue")

    def __init__(self) -> None:
        self._pending: dict[bytes, ReadRequest] = {}
        self._queue: list[bytes] = []

    def add_request(self, index: int, context: bytes, requester: int, self_id: int) -> bool:
        """Returns False for a context already pending (a duplicate)."""
        if context in self._pending:
            return False
        self._pending[context] = ReadRequest(index, context, requester, {self_id})
        self._queue.append(context)
        return True

    def recv_ack(self, sender: int, context: bytes) -> set[int] | None:
        request = self._pending.get(context)
        if request is None:
            return None
        request.acks.add(sender)
        return request.acks

    def advance(self, context: bytes) -> list[ReadRequest]:
        """Release the request for ``context`` and every one asked before it."""
        if context not in self._pending:
            return []
        position = self._queue.index(context)
        released = [self._pending.pop(ctx) for ctx in self._queue[: position + 1]]
        del self._queue[: position + 1]
        return released

    def last_pending_context(self) -> bytes | None:
        return self._queue[-1] if self._queue else None

    def __len__(self) -> int:
        return len(self._queue)
