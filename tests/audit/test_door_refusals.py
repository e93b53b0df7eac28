"""Refusals at the door cannot flood the audit (cluster/audit/door_refusals.py,
cluster/audit/writer.py): they are coalesced per key, method and reason
(one event a second, with a ``count``), the refused call never waits for
the audit, and they may hold only part of the writer's queue, dropped
first (counted and logged at WARNING) so the admin changes still fit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import grpc
import pytest

from cluster.audit.door_refusals import DoorRefusals
from cluster.audit.events import AuditEvent, decode
from cluster.audit.stage import AuditStage
from cluster.controller import Principal
from cluster.frontend.front_door import Caller, FrontDoor
from cluster.frontend.grpc_errors import ServiceError
from raftlog.v1 import admin_pb2, admin_pb2_grpc, headers
from raftlog.v1.reasons import Reason

pytestmark = pytest.mark.timeout(60)

REFUSAL = AuditEvent(
    id="a" * 32,
    time_ms=1_700_000_000_000,
    node=1,
    peer="ipv4:127.0.0.1:5000",
    key_id="k-tenant",
    key_tenant="acme",
    tenant="acme",
    method="CreateTenant",
    outcome="refused",
    code="PERMISSION_DENIED",
    reason="OPERATOR_KEY_REQUIRED",
    message="this call needs an operator key",
)
CHANGE = replace(REFUSAL, key_id="k-op", key_tenant=None, method="CreateTopic", outcome="ok", code="OK")
CHANGE = replace(CHANGE, reason="", message="")


def test_refusals_coalesce_per_key_method_and_reason_one_event_a_second() -> None:
    door = DoorRefusals(window_s=1.0)
    first = door.add(REFUSAL, now=10.0)
    assert first is not None and first.count == 1  # a lone attempt is recorded at once
    for i in range(999):
        assert door.add(replace(REFUSAL, id=f"{i:032x}"), now=10.0 + i / 1000) is None
    other = door.add(replace(REFUSAL, method="DeleteTenant"), now=10.5)
    assert other is not None and other.count == 1  # another method: another triple
    assert door.next_due() == 11.0 and door.due(10.99) == [] and len(door) == 999
    [summary] = door.due(11.0)
    assert summary.count == 999 and summary.id == f"{0:032x}"  # the first counted one's id
    # The flood goes on: the next event comes a whole second after that one.
    assert door.add(REFUSAL, now=11.2) is None and door.add(REFUSAL, now=11.9) is None
    assert door.due(11.9) == [] and [e.count for e in door.due(12.0)] == [2]
    # Quiet for a second: forgotten, and the next refusal is recorded at once again.
    assert door.due(13.5) == [] and door.next_due() is None
    again = door.add(REFUSAL, now=13.6)
    assert again is not None and again.count == 1
    assert door.add(REFUSAL, now=13.7) is None
    assert [e.count for e in door.flush()] == [1] and len(door) == 0


class Appended:
    """The audit partition as the writer sees it: ``delay_s`` per append, or
    never answering while ``blocked``."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.open = asyncio.Event()
        self.open.set()
        self.events: list[AuditEvent] = []

    async def append(self, batch: Sequence[bytes]) -> None:
        await self.open.wait()
        await asyncio.sleep(self.delay_s)
        self.events.extend(decode(data) for data in batch)


async def test_door_refusals_hold_only_their_share_and_make_room_for_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from cluster.audit.writer import AuditWriter

    log = Appended()
    log.open.clear()  # the audit partition takes nothing: the queue fills
    now = [0.0]
    writer = AuditWriter(log.append, wait_s=0.01, max_pending=10, max_door_refusals=3, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, "cluster.audit.writer")
    for i in range(5):  # five keys: five events, only three fit
        writer.record_door_refusal(replace(REFUSAL, key_id=f"k{i}"))
    assert writer.pending == 3 and writer.dropped_refusals == 2
    # Never silent, never a line per drop: the figure, at most every 10 s.
    assert "dropped refusals: 1 in all" in caplog.text
    # Seven changes fill the rest; the next three push the door refusals out.
    changes = [replace(CHANGE, id=f"{i:032x}") for i in range(11)]
    assert await asyncio.gather(*(writer.record(c) for c in changes[:10])) == [False] * 10
    assert writer.pending == 10 and writer.lost == 0 and writer.dropped_refusals == 5
    # With no door refusal left to drop, a change is turned away, logged whole.
    assert await writer.record(changes[10]) is False
    assert writer.lost == 1 and f'"id":"{changes[10].id}"' in caplog.text
    log.open.set()
    now[0] = 10.0
    async with asyncio.TaskGroup() as tasks:
        owner = tasks.create_task(writer.run())
        for _ in range(200):
            if writer.pending == 0:
                break
            await asyncio.sleep(0.01)
        owner.cancel()
    assert [e.id for e in log.events] == [c.id for c in changes[:10]]
    assert "audit: 4 refused call(s) at the door were not recorded (dropped refusals: 5 in all" in caplog.text


# --- a flood through a real front door ---------------------------------------------

CALLERS = {
    "op": Caller(Principal("k-op", None), "acme"),
    "tenant": Caller(Principal("k-tenant", "acme"), "acme"),
}
ADMIN = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name


async def identify(context: grpc.aio.ServicerContext) -> Caller:
    for key, value in context.invocation_metadata() or ():
        if key == headers.AUTHORIZATION:
            return CALLERS[value.removeprefix(headers.BEARER_PREFIX)]
    raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, Reason.MISSING_API_KEY, "no key")


def bearer(who: str) -> tuple[tuple[str, str], ...]:
    return ((headers.AUTHORIZATION, f"{headers.BEARER_PREFIX}{who}"),)


async def test_a_flood_of_refused_calls_answers_fast_and_leaves_a_handful_of_events() -> None:
    """1,000 CreateTenant calls from a tenant key in a tight loop, while the
    audit partition takes half a second per append, and an operator's
    CreateTopic in the middle: the refusals answer without waiting, a few
    events stand for all 1,000, and the change is recorded."""
    from cluster.audit.writer import AuditWriter

    log = Appended(delay_s=0.5)
    writer = AuditWriter(log.append, wait_s=3.0)
    stage = AuditStage(1, writer, None)
    door = FrontDoor(identify, lambda _n: "", stages=[stage], refused=stage.refused_at_door)
    server = grpc.aio.server(interceptors=[door])

    async def create_topic(request: Any, context: grpc.aio.ServicerContext) -> Any:
        return admin_pb2.CreateTopicResponse()

    async def create_tenant(request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise AssertionError("the door refuses a tenant key before the handler")

    handlers = {
        "CreateTopic": grpc.unary_unary_rpc_method_handler(
            create_topic, admin_pb2.CreateTopicRequest.FromString, lambda m: m.SerializeToString()
        ),
        "CreateTenant": grpc.unary_unary_rpc_method_handler(
            create_tenant, admin_pb2.CreateTenantRequest.FromString, lambda m: m.SerializeToString()
        ),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(ADMIN, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = admin_pb2_grpc.AdminServiceStub(channel)

    async def create_orders() -> Any:
        return await stub.CreateTopic(admin_pb2.CreateTopicRequest(name="orders"), metadata=bearer("op"))

    try:
        async with asyncio.TaskGroup() as tasks:
            owner = tasks.create_task(writer.run())
            change: asyncio.Task[Any] | None = None
            started = time.monotonic()
            for i in range(1000):
                if i == 500:
                    change = tasks.create_task(create_orders())
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.CreateTenant(
                        admin_pb2.CreateTenantRequest(name="evil"), metadata=bearer("tenant"), timeout=5
                    )
                assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
                # A refusal waiting for the half-second append would take
                # 500 s; answering at the door's pace takes a few.
                assert time.monotonic() - started < 15.0, f"{i} refusals took too long"
            flood_s = time.monotonic() - started
            assert change is not None
            await change
            for _ in range(400):  # the last window ends a second after it opened
                if (
                    writer.pending == 0
                    and sum(e.count for e in log.events if e.method == "CreateTenant") == 1000
                ):
                    break
                await asyncio.sleep(0.01)
            owner.cancel()
    finally:
        await channel.close()
        await server.stop(None)
    refusals = [e for e in log.events if e.method == "CreateTenant"]
    assert sum(e.count for e in refusals) == 1000
    assert len(refusals) <= flood_s + 2, [e.count for e in refusals]  # one a second, plus the first
    assert {(e.key_id, e.outcome, e.reason) for e in refusals} == {
        ("k-tenant", "refused", "OPERATOR_KEY_REQUIRED")
    }
    [created] = [e for e in log.events if e.method == "CreateTopic"]
    assert (created.outcome, created.key_id, created.count) == ("ok", "k-op", 1)
