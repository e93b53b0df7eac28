"""``Join`` on the controller leader (cluster/internal/join.py), in process
against a real ``ControllerState``: what a registered node may change (its
zone only, at its registered address, keeping its controller eligibility),
what is refused (its id at another address: ``NODE_ID_IN_USE``, nothing
changed), and that a controller voter is never registered by ``Join``
(``join_until_registered(registered_first=True)`` waits for the bootstrap)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import grpc
import pytest

from cluster.controller import RegisterNode, encode_command
from cluster.controller.state import ControllerState
from cluster.frontend.grpc_errors import ServiceError
from cluster.internal import join
from cluster.internal.join import JoinService, join_until_registered
from raftlog.internal.v1 import join_pb2
from raftlog.v1.reasons import Reason

pytestmark = pytest.mark.timeout(30)

CLUSTER = "c1"


class _Controller:
    """The controller leader's surface ``Join`` uses: its state, and
    ``submit`` applying the command as the committed entry would."""

    def __init__(self) -> None:
        self.state = ControllerState()
        self.is_leader = True
        self.leader_address = ""
        self.version = 0

    async def submit(self, data: bytes) -> object:
        self.version += 1
        return self.state.apply(self.version, data)

    async def wait_changed(self, version: int, timeout: float) -> None:
        await asyncio.sleep(min(timeout, 0.01))

    def bootstrap(self, node_id: int, address: str, zone: str, eligible: bool) -> None:
        self.version += 1
        self.state.apply(self.version, encode_command(RegisterNode(node_id, address, zone, eligible)))


def _request(node_id: int, address: str, zone: str = "") -> join_pb2.JoinRequest:
    return join_pb2.JoinRequest(cluster_id=CLUSTER, node_id=node_id, address=address, zone=zone)


def _service(controller: _Controller) -> JoinService:
    return JoinService(1, CLUSTER, cast(Any, controller))


def _registered(controller: _Controller, node_id: int) -> tuple[str, str, bool] | None:
    node = controller.state.node(node_id)
    return None if node is None else (node.address, node.zone, node.controller_eligible)


async def test_a_new_node_is_registered_never_controller_eligible() -> None:
    controller = _Controller()
    await _service(controller)._register(_request(4, "10.0.0.4:7001", "zone-b"))
    assert _registered(controller, 4) == ("10.0.0.4:7001", "zone-b", False)


@pytest.mark.parametrize("eligible", [True, False])
async def test_a_registered_node_may_change_its_zone_and_keeps_its_eligibility(eligible: bool) -> None:
    controller = _Controller()
    controller.bootstrap(2, "10.0.0.2:7001", "from-the-file", eligible)
    await _service(controller)._register(_request(2, "10.0.0.2:7001", "pod-zone"))
    assert _registered(controller, 2) == ("10.0.0.2:7001", "pod-zone", eligible)


async def test_the_same_id_at_another_address_is_node_id_in_use_and_changes_nothing() -> None:
    controller = _Controller()
    controller.bootstrap(2, "10.0.0.2:7001", "a", True)
    before = controller.version
    with pytest.raises(ServiceError) as caught:
        await _service(controller)._register(_request(2, "10.0.0.9:7001", "b"))
    assert caught.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert caught.value.info.reason == Reason.NODE_ID_IN_USE
    assert "10.0.0.2" not in str(caught.value)  # a refusal names no address
    assert _registered(controller, 2) == ("10.0.0.2:7001", "a", True)
    assert controller.version == before  # nothing proposed


async def test_registered_as_asked_is_ok_without_a_proposal() -> None:
    controller = _Controller()
    controller.bootstrap(2, "10.0.0.2:7001", "a", True)
    before = controller.version
    await _service(controller)._register(_request(2, "10.0.0.2:7001", "a"))
    assert controller.version == before


async def test_a_voter_is_never_registered_by_join(monkeypatch: pytest.MonkeyPatch) -> None:
    """A controller voter's join loop asks nothing until the bootstrap has
    registered it (eligible); then it only brings its zone in step, and
    stays eligible."""
    controller = _Controller()
    service = _service(controller)
    asked: list[tuple[str, str]] = []

    async def ask(address: str, request: join_pb2.JoinRequest, *_: object) -> tuple[str, bool]:
        asked.append((address, request.zone))
        await service._register(request)  # the leader answering in process
        return "", False

    monkeypatch.setattr(join, "_ask", ask)
    voter = _request(3, "10.0.0.3:7001", "pod-zone")
    loop = asyncio.create_task(
        join_until_registered(
            cast(Any, controller), voter, ["10.0.0.1:7001"], cast(Any, None), registered_first=True
        )
    )
    await asyncio.sleep(0.2)
    assert not loop.done() and asked == []  # never a Join before the bootstrap
    assert _registered(controller, 3) is None
    controller.bootstrap(3, "10.0.0.3:7001", "from-the-file", True)
    await asyncio.wait_for(loop, 5)
    assert asked == [("10.0.0.1:7001", "pod-zone")]
    assert _registered(controller, 3) == ("10.0.0.3:7001", "pod-zone", True)
