"""The quota stage in-process: each quota kind refuses (or delays) with
``RESOURCE_EXHAUSTED QUOTA_EXCEEDED`` and the right retry-after, and a refused
call changes nothing. A ``LogService`` with an in-memory replica runs behind a
real ``FrontDoor`` on a loopback ``grpc.aio`` server, the node's view of
quotas and leaders is a fake, and the clock is the test's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import pytest

from client.auth import call_metadata
from cluster.controller import Assignment, Principal
from cluster.controller.model import KeyScope
from cluster.frontend.front_door import Caller, FrontDoor
from cluster.frontend.grpc_errors import ServiceError, error_info
from cluster.quotas.fair_scheduler import FairScheduler
from cluster.quotas.quota_service import MAX_RETRY_AFTER_S, STORAGE_RETRY_MS, QuotaService
from cluster.quotas.quota_stage import (
    COMMIT_OFFSETS,
    JOIN_GROUP,
    MAX_HELD,
    MeteredLogService,
    QuotaStage,
)
from cluster.quotas.shares import FLOOR_TOTAL
from cluster.quotas.usage import Demand, GroupSize, NodeReport, TenantUsage
from partitions.replica import ProduceResult, ReadResult
from raftlog.v1 import groups_pb2, log_pb2, log_pb2_grpc
from raftlog.v1.reasons import Reason
from raftlog.v1.record_batch import Record, encode_batch

pytestmark = pytest.mark.timeout(60)

GROUP = 7
TENANT = "acme"
CALLER = Caller(Principal("k-acme", TENANT), TENANT)
SYSTEM_OPERATOR = Caller(Principal("k-op", None), "__system")
AUTH = call_metadata("acme-key", None)
SYSTEM_AUTH = call_metadata("op-key", "__system")


@dataclass(frozen=True)
class Limits:
    """A stand-in for cluster.controller.quotas.QuotaLimits (the fields the stage reads)."""

    produce_bytes_s: int | None = None
    fetch_bytes_s: int | None = None
    requests_s: int | None = None
    storage_bytes: int | None = None
    groups: int | None = None
    streams: int | None = None


@dataclass
class FakeView:
    limits: Limits = field(default_factory=Limits)
    version: int = 1
    leading: set[int] = field(default_factory=lambda: {GROUP})
    stored: int = 0
    leader_term: int = 1
    tenant_group_list: list[int] = field(default_factory=lambda: [GROUP])
    nodes: int = 1

    def quota(self, tenant: str) -> Limits:
        return self.limits

    def tenants(self) -> list[str]:
        return [TENANT]

    def tenant_groups(self, tenant: str) -> list[int]:
        return list(self.tenant_group_list) if tenant == TENANT else []

    def group_of(self, tenant: str, topic: str, partition: int) -> int | None:
        return GROUP if topic == "t" and partition == 0 else None

    def leads(self, group: int) -> bool:
        return group in self.leading

    def stored_bytes(self, group: int) -> int:
        return self.stored

    def term(self, group: int) -> int:
        return self.leader_term

    def node_count(self) -> int:
        return self.nodes

    def set(self, **limits: int | None) -> None:
        self.limits = replace(self.limits, **limits)
        self.version += 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeReplica:
    """The partition, led here: produce appends, read returns everything."""

    def __init__(self) -> None:
        self.batches: list[bytes] = []

    @property
    def is_leader(self) -> bool:
        return True

    async def produce(self, batch: bytes) -> ProduceResult:
        self.batches.append(batch)
        offset = len(self.batches) - 1
        return ProduceResult(offset, offset, 0)

    def read(self, offset: int, max_bytes: int) -> ReadResult:
        return ReadResult(list(self.batches[offset:]), len(self.batches), 0)

    async def wait_for_data(self, offset: int, timeout: float) -> bool:
        await asyncio.sleep(timeout)
        return False


@dataclass
class Served:
    stub: log_pb2_grpc.LogServiceStub
    view: FakeView
    clock: Clock
    replica: FakeReplica
    service: QuotaService
    sleeps: list[float]
    stage: QuotaStage
    on_sleep: Callable[[float], Awaitable[None]] | None = None
    """What a stage or stream sleep does besides being recorded (nothing:
    it returns at once and the test's clock stays)."""


async def identify(context: grpc.aio.ServicerContext) -> Caller:
    metadata = dict(context.invocation_metadata() or ())
    if metadata.get("authorization") == "Bearer op-key":
        return SYSTEM_OPERATOR
    if metadata.get("authorization") == "Bearer acme-key":
        return CALLER
    raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, Reason.INVALID_API_KEY, "unknown key")


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    view, clock, replica, sleeps = FakeView(), Clock(), FakeReplica(), []
    service = QuotaService(1, view, clock=clock)

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if found.on_sleep is not None:
            await found.on_sleep(seconds)

    stage = QuotaStage(service, view, FairScheduler(4), sleep=sleep)

    def locate(tenant: str, topic: str, partition: int) -> Assignment | None:
        if topic != "t" or partition != 0:
            return None
        return Assignment(GROUP, tenant, "t", 1, 0, (1,), (), 1)

    server = grpc.aio.server(interceptors=[FrontDoor(identify, lambda _n: "", stages=[stage])])
    logs = MeteredLogService(
        service, view, locate, lambda g: replica if g == GROUP else None, lambda _g: 1, str, sleep=sleep
    )
    log_pb2_grpc.add_LogServiceServicer_to_server(logs, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        found = Served(log_pb2_grpc.LogServiceStub(channel), view, clock, replica, service, sleeps, stage)
        yield found
    await server.stop(None)


def batch(size: int) -> bytes:
    return encode_batch([Record(value=b"x" * size)])


async def produce(s: Served, size: int, auth: Any = AUTH) -> log_pb2.ProduceResponse:
    return await s.stub.Produce(
        log_pb2.ProduceRequest(topic="t", partition=0, batch=batch(size)), metadata=auth
    )


async def refused(call: Any) -> tuple[Reason, int, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = error_info(caught.value)
    assert info is not None
    return Reason(info.reason), info.retry_after_ms, info.message


async def test_produce_over_its_rate_is_delayed_then_refused_and_the_refused_batch_is_not_written(
    served: Served,
) -> None:
    served.view.set(produce_bytes_s=10_000)  # burst: half a second, 5,000 bytes
    overhead = len(batch(0))
    await produce(served, 4_000 - overhead)  # within the burst: 1,000 left
    await produce(served, 4_000 - overhead)  # no debt yet: admitted at once, 3,000 owed
    assert served.sleeps == []
    served.clock.now += 0.28  # 200 owed: 0.02 s, delayed
    await produce(served, 2_000 - overhead)  # 2,200 owed
    assert served.sleeps == [pytest.approx(0.02, abs=0.001)]
    written = list(served.replica.batches)
    reason, retry_after_ms, message = await refused(produce(served, 100))
    assert reason == Reason.QUOTA_EXCEEDED and "produce bytes/s" in message
    assert 215 <= retry_after_ms <= 225  # the debt owed, the refused call not charged
    # Held for its retry-after first (this clock did not move meanwhile, so
    # the second admission refused it too).
    assert served.sleeps[1:] == [pytest.approx(retry_after_ms / 1000, abs=0.002)]
    assert served.replica.batches == written  # nothing written
    served.clock.now += retry_after_ms / 1000
    await produce(served, 100)  # waiting the retry-after is enough
    assert len(served.replica.batches) == len(written) + 1
    assert len(served.sleeps) == 2  # admitted at once: neither delayed nor held


async def test_a_refused_call_is_held_for_its_retry_after_then_served_if_it_fits(served: Served) -> None:
    served.view.set(produce_bytes_s=10_000)  # burst: 5,000 bytes
    overhead = len(batch(0))
    await produce(served, 8_000 - overhead)  # 3,000 owed: 0.3 s
    served.clock.now += 0.05  # 2,500 owed: 0.25 s, over MAX_DELAY_S

    async def time_passes(seconds: float) -> None:
        served.clock.now += seconds

    served.on_sleep = time_passes
    await produce(served, 100)  # held 0.25 s, then admitted: no refusal reaches the client
    assert served.sleeps == [pytest.approx(0.25, abs=0.002)]
    assert len(served.replica.batches) == 2


async def test_beyond_the_most_held_calls_a_refusal_is_answered_at_once(served: Served) -> None:
    served.view.set(requests_s=4)  # burst 2 requests
    request = log_pb2.InitProducerRequest()
    for _ in range(3):  # 2 from the burst, the third into debt
        await served.stub.InitProducer(request, metadata=AUTH)
    release = asyncio.Event()

    async def held_until_released(_seconds: float) -> None:
        await release.wait()

    served.on_sleep = held_until_released
    calls = [asyncio.ensure_future(served.stub.InitProducer(request, metadata=AUTH)) for _ in range(MAX_HELD)]
    while served.stage.held(TENANT) < MAX_HELD:
        await asyncio.sleep(0.01)
    reason, retry_after_ms, _ = await refused(served.stub.InitProducer(request, metadata=AUTH))  # not held
    assert reason == Reason.QUOTA_EXCEEDED and retry_after_ms > 0
    assert served.stage.held(TENANT) == MAX_HELD and not any(call.done() for call in calls)
    release.set()  # the clock did not move: each is admitted again after its hold, and refused
    for call in calls:
        assert (await refused(call))[0] == Reason.QUOTA_EXCEEDED
    assert served.stage.held(TENANT) == 0


async def test_requests_over_their_rate_are_refused_with_a_retry_after(served: Served) -> None:
    served.view.set(requests_s=4)  # burst 2 requests
    request = log_pb2.InitProducerRequest()
    for _ in range(3):  # 2 from the burst, the third into debt
        await served.stub.InitProducer(request, metadata=AUTH)
    reason, retry_after_ms, _ = await refused(
        served.stub.InitProducer(log_pb2.InitProducerRequest(), metadata=AUTH)
    )
    assert reason == Reason.QUOTA_EXCEEDED and 200 <= retry_after_ms <= 250


async def test_a_fetch_answer_is_charged_after_and_its_debt_refuses_the_next_fetch(served: Served) -> None:
    await produce(served, 50_000)
    served.view.set(fetch_bytes_s=10_000)
    request = log_pb2.FetchRequest(topic="t", partition=0, offset=0)
    answer = await served.stub.Fetch(request, metadata=AUTH)  # no debt before it: answered
    assert answer.batches
    reason, retry_after_ms, message = await refused(served.stub.Fetch(request, metadata=AUTH))
    assert reason == Reason.QUOTA_EXCEEDED and "fetch bytes/s" in message
    # ~45 KB owed at 10 KB/s is ~4.5 s, but a retry-after is at most
    # MAX_RETRY_AFTER_S: the share paying it off may grow meanwhile.
    assert retry_after_ms == MAX_RETRY_AFTER_S * 1000
    served.clock.now += 1.0
    await refused(served.stub.Fetch(request, metadata=AUTH))  # asked again early: refused again, cheaply


async def test_streams_over_the_count_are_refused_without_retry_after_and_released_on_close(
    served: Served,
) -> None:
    served.view.set(streams=1)
    request = log_pb2.StreamFetchRequest(topic="t", partition=0, offset=0)
    first = served.stub.StreamFetch(request, metadata=AUTH)
    await first.read()  # open
    reason, retry_after_ms, message = await refused(served.stub.StreamFetch(request, metadata=AUTH).read())
    assert reason == Reason.QUOTA_EXCEEDED and retry_after_ms == 0 and "open streams" in message
    first.cancel()
    for _ in range(100):  # the handler's end runs on the server's loop
        if (await served.service.local_usage(TENANT)).streams == 0:
            break
        await asyncio.sleep(0.01)
    again = served.stub.StreamFetch(request, metadata=AUTH)
    await again.read()
    again.cancel()


async def test_a_stream_is_paced_at_the_fetch_rate(served: Served) -> None:
    """Each message's bytes are charged, and the stream waits out the debt
    (through the injected sleep) before it reads the next one."""
    await produce(served, 20_000)
    served.view.set(fetch_bytes_s=10_000)  # burst: half a second, 5,000 bytes
    stream = served.stub.StreamFetch(
        log_pb2.StreamFetchRequest(topic="t", partition=0, offset=0), metadata=AUTH
    )
    message = await stream.read()
    sent = sum(len(b) for b in message.batches)
    assert sent > 20_000
    for _ in range(100):  # the wait follows the write on the server's loop
        if served.sleeps:
            break
        await asyncio.sleep(0.01)
    # 5,000 from the burst, the rest owed at 10,000 bytes/s (the clock is still).
    assert served.sleeps == [pytest.approx((sent - 5_000) / 10_000, abs=0.001)]
    assert (await served.service.local_usage(TENANT)).fetch_bytes_s > 0
    stream.cancel()


async def test_storage_over_the_quota_refuses_produce_and_writes_nothing(served: Served) -> None:
    served.view.stored = 600
    served.view.set(storage_bytes=1_000)
    await produce(served, 10)  # 600 stored here, none elsewhere yet
    other_partition = {GROUP + 1: GroupSize(400, 1, 0)}
    served.view.tenant_group_list.append(GROUP + 1)  # led by node 2
    served.service.board.record(2, NodeReport(sizes={TENANT: other_partition}), served.clock.now)
    served.view.version += 1  # (the board is read when the shares are computed)
    written = list(served.replica.batches)
    reason, retry_after_ms, message = await refused(produce(served, 10))
    assert reason == Reason.QUOTA_EXCEEDED and retry_after_ms == STORAGE_RETRY_MS and "storage" in message
    assert served.replica.batches == written
    # Reads still work with the storage full.
    await served.stub.Fetch(log_pb2.FetchRequest(topic="t", partition=0, offset=0), metadata=AUTH)


async def test_a_partition_whose_leader_moved_is_counted_once_with_its_newest_size(served: Served) -> None:
    """Node 2 led the partition (term 1) and still reports it; this node
    leads it now (term 2). Summing the two would refuse at 600 + 500."""
    served.view.stored, served.view.leader_term = 600, 2
    served.view.set(storage_bytes=1_000)
    moved_away = {GROUP: GroupSize(500, 1, int(served.clock.now * 1000))}
    served.service.board.record(2, NodeReport(sizes={TENANT: moved_away}), served.clock.now)
    await produce(served, 10)  # 600 stored: admitted
    assert (await served.service.usage(TENANT)).stored_bytes == 600
    # The other way round: node 2's look is the newer (a later term), this node's is old.
    served.view.leader_term = 1
    newer = {GROUP: GroupSize(1_000, 3, 0)}
    served.service.board.record(2, NodeReport(sizes={TENANT: newer}), served.clock.now)
    served.view.version += 1
    reason, _, message = await refused(produce(served, 10))
    assert reason == Reason.QUOTA_EXCEEDED and "storage" in message
    assert (await served.service.usage(TENANT)).stored_bytes == 1_000


async def test_described_streams_are_the_most_on_one_node(served: Served) -> None:
    served.view.set(streams=5)
    served.service.stream_opened(TENANT)
    served.service.board.record(2, NodeReport(usage={TENANT: TenantUsage(streams=3)}), served.clock.now)
    served.service.board.record(3, NodeReport(usage={TENANT: TenantUsage(streams=2)}), served.clock.now)
    assert (await served.service.usage(TENANT)).streams == 3  # the quota is per node: not 6


async def test_a_zero_rate_refuses_without_retry_after(served: Served) -> None:
    served.view.set(produce_bytes_s=0)
    reason, retry_after_ms, _ = await refused(produce(served, 10))
    assert reason == Reason.QUOTA_EXCEEDED and retry_after_ms == 0
    assert served.replica.batches == []


async def test_bytes_are_charged_only_where_the_partition_is_led_and_system_operators_not_at_all(
    served: Served,
) -> None:
    await produce(served, 20_000)
    served.view.set(produce_bytes_s=1_000, fetch_bytes_s=1_000)
    fetch = log_pb2.FetchRequest(topic="t", partition=0, offset=0)
    for _ in range(3):
        await served.stub.Fetch(fetch, metadata=SYSTEM_AUTH)  # exempt: no debt from these
    await served.stub.Fetch(fetch, metadata=AUTH)  # the tenant's first: no debt yet
    await refused(served.stub.Fetch(fetch, metadata=AUTH))
    served.view.leading = set()  # the leader moved: this node forwards, the leader charges
    served.view.version += 1
    before = (await served.service.local_usage(TENANT)).produce_bytes_s
    for _ in range(3):
        await produce(served, 5_000)  # (the fake replica still takes them): no debt, no refusal
    assert (await served.service.local_usage(TENANT)).produce_bytes_s == before


async def test_a_new_group_beyond_the_quota_is_refused_and_existing_groups_still_join() -> None:
    view, clock = FakeView(limits=Limits(groups=2)), Clock()
    existing = {"g1", "g2"}

    async def exists(tenant: str, group: str) -> bool | None:
        return group in existing

    async def names(tenant: str) -> set[str]:
        return set(existing)

    service = QuotaService(1, view, group_exists=exists, group_names=names, clock=clock)
    stage = QuotaStage(service, view)
    join = groups_pb2.JoinGroupRequest(group="g1")
    async with stage(JOIN_GROUP, CALLER, join, None):
        pass
    with pytest.raises(ServiceError) as caught:
        async with stage(JOIN_GROUP, CALLER, groups_pb2.JoinGroupRequest(group="g3"), None):
            raise AssertionError("the handler ran")
    assert caught.value.info.reason == Reason.QUOTA_EXCEEDED and caught.value.info.retry_after_ms == 0
    simple_commit = groups_pb2.CommitOffsetsRequest(group="g3")  # no member: would create g3
    with pytest.raises(ServiceError):
        async with stage(COMMIT_OFFSETS, CALLER, simple_commit, None):
            raise AssertionError("the handler ran")
    # Groups counted on other nodes count too.
    existing.discard("g2")
    service.board.record(2, NodeReport(usage={TENANT: TenantUsage(groups=1)}), clock.now)
    with pytest.raises(ServiceError):
        async with stage(JOIN_GROUP, CALLER, groups_pb2.JoinGroupRequest(group="g4"), None):
            pass
    assert (await service.usage(TENANT)).groups == 2


async def test_concurrent_calls_creating_new_groups_count_each_other() -> None:
    """Three joins of three new groups at once, one group left under the
    quota: the existence checks all await before any join creates its group,
    yet only the first is admitted (its name is reserved while it runs); a
    second member joining the *same* new group shares the reservation."""
    view = FakeView(limits=Limits(groups=3))
    existing = {"g1", "g2"}
    checked = asyncio.Event()

    async def exists(tenant: str, group: str) -> bool | None:
        await checked.wait()  # every call is past its first await before any decides
        return group in existing

    async def names(tenant: str) -> set[str]:
        return set(existing)

    service = QuotaService(1, view, group_exists=exists, group_names=names, clock=Clock())
    stage = QuotaStage(service, view)
    joined, finish = [], asyncio.Event()

    async def join(group: str) -> str:
        try:
            async with stage(JOIN_GROUP, CALLER, groups_pb2.JoinGroupRequest(group=group), None):
                joined.append(group)
                await finish.wait()  # a join in flight: its group is not created yet
                existing.add(group)
        except ServiceError as error:
            assert error.info.reason == Reason.QUOTA_EXCEEDED
            return "refused"
        return "joined"

    calls = [asyncio.create_task(join(g)) for g in ("g3", "g4", "g3", "g5")]
    await asyncio.sleep(0)
    checked.set()
    for _ in range(100):
        if len(joined) == 2 and sum(c.done() for c in calls) == 2:
            break
        await asyncio.sleep(0.01)
    finish.set()
    assert await asyncio.gather(*calls) == ["joined", "refused", "joined", "refused"]
    assert existing == {"g1", "g2", "g3"}
    async with stage(JOIN_GROUP, CALLER, groups_pb2.JoinGroupRequest(group="g3"), None):
        pass  # an existing group still joins; nothing stays reserved
    assert service._reserved == {}


async def test_a_group_outside_the_keys_scope_is_refused_for_scope_before_the_quota() -> None:
    view = FakeView(limits=Limits(groups=0))  # no group may be created

    async def exists(tenant: str, group: str) -> bool | None:
        return False

    service = QuotaService(1, view, group_exists=exists, clock=Clock())
    stage = QuotaStage(service, view)
    scope = KeyScope("client", consume_prefixes=("",), group_prefixes=("app-",))
    client = Caller(Principal("k-client", TENANT, scope), TENANT)
    for method, request in (
        (JOIN_GROUP, groups_pb2.JoinGroupRequest(group="other")),
        (COMMIT_OFFSETS, groups_pb2.CommitOffsetsRequest(group="other")),
    ):
        with pytest.raises(ServiceError) as caught:
            async with stage(method, client, request, None):
                raise AssertionError("the handler ran")
        assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert caught.value.info.reason == Reason.KEY_SCOPE
    with pytest.raises(ServiceError) as caught:  # in scope: the quota answers
        async with stage(JOIN_GROUP, client, groups_pb2.JoinGroupRequest(group="app-1"), None):
            raise AssertionError("the handler ran")
    assert caught.value.info.reason == Reason.QUOTA_EXCEEDED


async def test_the_produce_share_follows_the_offered_load_every_node_reports(served: Served) -> None:
    """shares.py through the service: the fallback first, then this node's
    acknowledged offered load (refused bytes included) against the others'."""
    view, service, quota = served.view, served.service, 900_000
    view.nodes, view.leading = 3, {GROUP}
    view.set(produce_bytes_s=quota)
    floor = FLOOR_TOTAL / 3

    def share() -> float:
        view.version += 1  # recompute now
        service.limits(TENANT)
        return service._tenants[TENANT].shares.produce_bytes_s

    # Nobody has demand data: it leads all the tenant's partitions.
    assert share() == pytest.approx(quota * (floor + (1 - 3 * floor)))
    held = {2: 0, 3: 0}
    for node in held:  # the other nodes ask, and hold no demand of ours
        held[node] = (await service.local_report(node, held[node])).report_id
    await produce(served, 400_000)  # the burst
    await produce(served, 400_000)  # no debt yet: admitted, into debt
    await refused(produce(served, 400_000))  # refused, but offered
    offered = service._live_demand(service._tenants[TENANT], served.clock.now).produce_bytes_s
    assert offered > (await service.usage(TENANT)).produce_bytes_s * 1.5
    others = 2 * offered
    for node in (2, 3):
        service.board.record(
            node, NodeReport(demand={TENANT: Demand(produce_bytes_s=others)}), served.clock.now
        )
    # Not yet acknowledged by the askers: this node counts none of its own.
    assert share() == pytest.approx(quota * floor)
    for _ in range(2):
        for node in held:
            held[node] = (await service.local_report(node, held[node])).report_id
    assert share() == pytest.approx(quota * (floor + (1 - 3 * floor) * offered / (offered + 2 * others)))
    for node in (2, 3):  # the others' demand went away
        service.board.record(node, NodeReport(report_id=held[node]), served.clock.now)
    assert share() == pytest.approx(quota * (1 - 2 * floor))


async def test_nodes_swap_figures_often_only_while_a_rate_limited_tenant_has_demand(served: Served) -> None:
    service = served.service
    await produce(served, 100)  # demand, but no rate quota: nothing to share
    assert not service.rates_in_demand()
    served.view.set(produce_bytes_s=1_000_000)
    await produce(served, 100)
    assert service.rates_in_demand()  # shares follow this demand: poll every POLL_S
    served.clock.now += 60  # the demand window is long past
    assert not service.rates_in_demand()  # idle: IDLE_POLL_S will do
