"""The audit record format (cluster/audit/events.py) and the writer
(cluster/audit/writer.py): canonical bytes, no secret-named field, every
AdminService method classified; durable before ``record`` returns, a slow
or failing append answers anyway and is retried in the background."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

import pytest

from cluster.audit.events import (
    READ_ONLY_METHODS,
    SECRET_FIELD_WORDS,
    AuditEvent,
    BadAuditEvent,
    decode,
    encode,
    is_audited,
    target_of,
)
from cluster.audit.writer import AuditUnavailable, AuditWriter, audit_batch
from raftlog.v1 import admin_pb2
from raftlog.v1.record_batch import decode_records

pytestmark = pytest.mark.timeout(30)

EVENT = AuditEvent(
    id="0" * 32,
    time_ms=1_700_000_000_000,
    node=2,
    peer="ipv4:127.0.0.1:5000",
    key_id="k1",
    key_tenant=None,
    tenant="acme",
    method="CreateTopic",
    target={"name": "orders", "partitions": 3},
)
ADMIN = admin_pb2.DESCRIPTOR.services_by_name["AdminService"]


def test_events_round_trip_and_only_canonical_bytes_decode() -> None:
    refused = replace(EVENT, outcome="refused", code="NOT_FOUND", reason="UNKNOWN_TOPIC", message="é")
    for event in (EVENT, refused):
        assert decode(encode(event)) == event
    data = encode(EVENT)
    assert data.startswith(b'{"code":"OK","count":1,"format":2,')
    for bad in (
        data.replace(b",", b", ", 1),  # not canonical
        data.replace(b'"format":2', b'"format":3'),  # newer
        data.replace(b'"count":1', b'"count":0'),  # stands for no call
        data.replace(b'"format":2', b'"format":1'),  # format 1 had no count
        data.replace(b'"node":2', b'"node":"2"'),  # mistyped
        data.replace(b'"tenant":"acme",', b""),  # missing field
        b"[1]",
        b"\xff",
    ):
        with pytest.raises(BadAuditEvent):
            decode(bad)


def test_a_format_1_event_without_a_count_still_reads_as_one_call() -> None:
    stored = encode(EVENT).replace(b'"count":1,', b"").replace(b'"format":2', b'"format":1')
    assert decode(stored) == EVENT and EVENT.count == 1
    many = replace(EVENT, count=999)
    assert decode(encode(many)) == many
    with pytest.raises(BadAuditEvent):
        decode(encode(many).replace(b'"format":2', b'"format":1'))  # a count format 1 cannot have


def test_every_admin_method_is_audited_unless_listed_read_only() -> None:
    names = {m.name for m in ADMIN.methods}
    assert READ_ONLY_METHODS - names <= {"DescribeTenant"}  # listed before its method lands
    changing = {n for n in names if is_audited(f"/{ADMIN.full_name}/{n}")}
    assert {
        "CreateTenant",
        "DeleteTenant",
        "CreateApiKey",
        "RevokeApiKey",
        "CreateTopic",
        "DeleteTopic",
        "AlterTopicConfig",
        "CompactTopic",
        "DecommissionNode",
    } <= changing
    assert changing | (READ_ONLY_METHODS & names) == names
    assert not is_audited("/raftlog.v1.LogService/Produce")


def test_no_admin_request_field_with_a_secret_name_reaches_an_event() -> None:
    """A request field that could carry a secret is dropped, at any depth:
    this fails when one is added under a name the list does not catch."""
    sensitive = ("key", "secret", "password", "token", "credential", "private", "clear")
    for method in ADMIN.methods:
        pending = [method.input_type]
        while pending:
            message = pending.pop()
            for field in message.fields:
                name = field.name.lower()
                if any(word in name for word in sensitive) and name not in {"key_id", "page_token"}:
                    assert any(word in name for word in SECRET_FIELD_WORDS), (method.name, field.name)
                if field.message_type is not None:
                    pending.append(field.message_type)
    request = admin_pb2.ListTopicsRequest(page_token="abc", page_size=3)
    assert target_of(request) == {"page_size": 3}


def test_an_audit_batch_holds_each_event_keyed_by_id_at_its_time() -> None:
    second = replace(EVENT, id="1" * 32, time_ms=EVENT.time_ms + 5)
    records = list(decode_records(audit_batch([encode(EVENT), encode(second)])))
    assert [(r.key, r.timestamp_ms, r.value) for r in records] == [
        (b"0" * 32, EVENT.time_ms, encode(EVENT)),
        (b"1" * 32, second.time_ms, encode(second)),
    ]
    with pytest.raises(ValueError):
        audit_batch([b'{"not":"an event"}'])


class FlakyLog:
    def __init__(self, failures: int, delay_s: float = 0.0) -> None:
        self.failures = failures
        self.delay_s = delay_s
        self.batches: list[list[bytes]] = []

    async def append(self, events: Sequence[bytes]) -> None:
        await asyncio.sleep(self.delay_s)
        if self.failures:
            self.failures -= 1
            raise AuditUnavailable("no leader")
        self.batches.append(list(events))


async def test_record_returns_once_the_event_is_appended_and_bursts_share_a_batch() -> None:
    log = FlakyLog(0, delay_s=0.05)
    writer = AuditWriter(log.append)
    async with asyncio.TaskGroup() as tasks:
        owner = tasks.create_task(writer.run())
        events = [replace(EVENT, id=f"{i:032x}") for i in range(5)]
        assert await asyncio.gather(*(writer.record(e) for e in events)) == [True] * 5
        assert sum(len(b) for b in log.batches) == 5 and len(log.batches) <= 2
        owner.cancel()


async def test_a_failing_append_is_retried_and_a_slow_one_answers_anyway(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = FlakyLog(2)
    writer = AuditWriter(log.append, wait_s=5.0)
    async with asyncio.TaskGroup() as tasks:
        owner = tasks.create_task(writer.run())
        assert await writer.record(EVENT) is True  # after two failed attempts
        assert log.batches == [[encode(EVENT)]]
        assert "audit append of 1 event(s) failed" in caplog.text
        slow = FlakyLog(0, delay_s=0.5)
        writer._append = slow.append  # the leader is slow now
        writer._wait_s = 0.1
        assert await writer.record(EVENT) is False  # answered, logged, still queued
        assert "not durable after" in caplog.text
        for _ in range(100):
            if slow.batches:
                break
            await asyncio.sleep(0.02)
        assert slow.batches == [[encode(EVENT)]] and writer.pending == 0
        owner.cancel()


async def test_an_event_that_cannot_be_appended_in_time_is_dropped_into_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    writer = AuditWriter(
        FlakyLog(10**6).append, wait_s=0.05, retry_for_s=10.0, max_pending=1, clock=lambda: now[0]
    )
    async with asyncio.TaskGroup() as tasks:
        owner = tasks.create_task(writer.run())
        assert await writer.record(EVENT) is False
        assert await writer.record(replace(EVENT, id="f" * 32)) is False  # the queue is full
        assert "audit queue full" in caplog.text and "f" * 32 in caplog.text
        now[0] = 11.0
        for _ in range(100):
            if writer.pending == 0:
                break
            await asyncio.sleep(0.05)
        assert writer.pending == 0 and writer.lost == 2
        assert "dropped" in caplog.text and encode(EVENT).decode() in caplog.text
        owner.cancel()


async def test_at_shutdown_what_is_left_is_appended_within_the_bound() -> None:
    """The node's order (cluster/node.py): the server stops while the owner
    runs, so a call ending in the grace period still queues its event; then
    the owner is cancelled (here in the middle of an append) and ``drain``
    appends what is left, the door refusals still being counted included."""
    log = FlakyLog(0, delay_s=0.3)
    writer = AuditWriter(log.append, wait_s=0.05)
    owner = asyncio.create_task(writer.run())
    first = replace(EVENT, id="1" * 32)
    assert await writer.record(first) is False  # the append is slow: answered, still queued
    owner.cancel()  # mid-append
    await asyncio.gather(owner, return_exceptions=True)
    late = replace(EVENT, id="2" * 32)
    assert await writer.record(late) is False  # a call that ended in the grace period
    refused = replace(EVENT, id="3" * 32, outcome="refused", reason="OPERATOR_KEY_REQUIRED")
    writer.record_door_refusal(refused)
    writer.record_door_refusal(refused)  # counted into the window: not an event yet
    await writer.drain(within_s=5.0)
    appended = [decode(data) for batch in log.batches for data in batch]
    assert [(e.id, e.count) for e in appended] == [
        (first.id, 1),
        (late.id, 1),
        (refused.id, 1),
        (refused.id, 1),
    ]
    assert writer.pending == 0 and writer.lost == 0


async def test_at_shutdown_an_event_that_cannot_be_appended_is_logged_whole(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer = AuditWriter(FlakyLog(10**6, delay_s=0.05).append, wait_s=0.01)
    events = [replace(EVENT, id=f"{i:032x}") for i in range(3)]
    assert await asyncio.gather(*(writer.record(e) for e in events)) == [False] * 3
    loop = asyncio.get_running_loop()
    started = loop.time()
    await writer.drain(within_s=0.5)
    assert loop.time() - started < 1.5  # the bound holds
    assert writer.pending == 0 and writer.lost == 3
    for event in events:
        assert f"not appended before the node stopped: {encode(event).decode()}" in caplog.text
