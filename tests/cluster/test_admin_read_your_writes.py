"""A metadata change forwarded by a follower is answered only once the
follower's own metadata has applied it (``AdminService._change``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cluster.frontend.admin_service import METADATA_INDEX_KEY, AdminService
from raftlog.v1 import admin_pb2


class LaggingController:
    """A follower's controller replica that has applied up to ``applied``."""

    is_leader = False
    leader_address = "leader:1"

    def __init__(self, applied: int) -> None:
        self.applied = applied
        self.caught_up = asyncio.Event()

    async def wait_applied(self, index: int, timeout: float) -> bool:
        if self.applied < index:
            try:
                await asyncio.wait_for(self.caught_up.wait(), timeout)
            except TimeoutError:
                return False
            self.applied = index
        return True


class LeaderAnswering:
    """Stands for the leader: answers every forwarded change at ``index``."""

    def __init__(self, index: int) -> None:
        self.index = index

    async def forward_with_trailers(self, context: Any, address: str, method: Any, request: Any) -> Any:
        return admin_pb2.CreateTenantResponse(), ((METADATA_INDEX_KEY, str(self.index)),)


class Context:
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def time_remaining(self) -> float | None:
        return self.remaining


def service(controller: LaggingController, forwarder: LeaderAnswering) -> AdminService:
    return AdminService(
        node_id=2,
        controller=controller,  # type: ignore[arg-type]
        leader_of=lambda group: 0,
        forwarder=forwarder,  # type: ignore[arg-type]
    )


async def test_the_answer_waits_until_the_change_applied_here() -> None:
    controller = LaggingController(applied=10)
    admin = service(controller, LeaderAnswering(index=12))
    answer = asyncio.create_task(admin.CreateTenant(admin_pb2.CreateTenantRequest(name="t"), Context(30.0)))
    await asyncio.sleep(0.05)
    assert not answer.done()  # the follower has not applied index 12 yet
    controller.caught_up.set()
    await asyncio.wait_for(answer, 1)
    assert controller.applied == 12


@pytest.mark.parametrize("remaining", [0.05, None])
async def test_a_lagging_node_still_answers_within_the_deadline(
    remaining: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cluster.frontend.admin_service.READ_YOUR_WRITES_WAIT_S", 0.1)
    admin = service(LaggingController(applied=10), LeaderAnswering(index=12))
    answer = await asyncio.wait_for(
        admin.CreateTenant(admin_pb2.CreateTenantRequest(name="t"), Context(remaining)),
        1,
    )
    assert answer == admin_pb2.CreateTenantResponse()
