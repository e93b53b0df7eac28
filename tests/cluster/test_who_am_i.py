"""``AdminService.WhoAmI`` behind the real front door on a loopback server,
called through the SDK's ``Admin.who_am_i``: any key learns its own id,
tenant and kind; a per-call key wins over the ``Admin``'s own; an unknown
key is refused at the door. (The real ``Authenticator``'s tenant rules are
covered on a live node in tests/integration/test_who_am_i.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import pytest

from client.admin import Admin
from client.errors import AuthenticationError
from cluster.controller import Principal
from cluster.frontend.admin_service import AdminService
from cluster.frontend.front_door import Caller, FrontDoor
from cluster.frontend.grpc_errors import ServiceError
from raftlog.v1 import admin_pb2_grpc, headers
from raftlog.v1.reasons import Reason

pytestmark = pytest.mark.timeout(60)

CALLERS = {
    "tenant-key": Caller(Principal("k-tenant", "acme"), "acme"),
    "operator-key": Caller(Principal("k-op", None), "default"),
}


async def identify(context: grpc.aio.ServicerContext) -> Caller:
    for key, value in context.invocation_metadata() or ():
        if key == headers.AUTHORIZATION:
            caller = CALLERS.get(str(value).removeprefix(headers.BEARER_PREFIX))
            if caller is None:
                raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, Reason.INVALID_API_KEY, "unknown key")
            return caller
    raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, Reason.MISSING_API_KEY, "no key")


@pytest.fixture
async def address() -> AsyncIterator[str]:
    server = grpc.aio.server(interceptors=[FrontDoor(identify, lambda node: f"node-{node}:7000")])
    # WhoAmI reads only the caller: nothing else of the node is needed.
    nothing = cast(Any, None)
    admin_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminService(1, nothing, lambda group: 0, nothing), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


async def test_each_key_learns_its_own_id_tenant_and_kind(address: str) -> None:
    async with Admin(address, api_key="tenant-key", timeout_s=5) as admin:
        me = await admin.who_am_i()
    assert (me.tenant, me.key_id, me.operator) == ("acme", "k-tenant", False)
    async with Admin(address, api_key="operator-key", timeout_s=5) as admin:
        me = await admin.who_am_i()
    assert (me.tenant, me.key_id, me.operator) == ("default", "k-op", True)


async def test_a_key_given_for_one_call_wins_over_the_admins_own(address: str) -> None:
    async with Admin(address, api_key="operator-key", timeout_s=5) as admin:
        me = await admin.who_am_i(api_key="tenant-key")
        assert (me.key_id, me.operator) == ("k-tenant", False)
        assert (await admin.who_am_i()).key_id == "k-op"
    async with Admin(address, timeout_s=5) as keyless:
        assert (await keyless.who_am_i(api_key="tenant-key")).tenant == "acme"


async def test_an_unknown_or_missing_key_is_refused(address: str) -> None:
    async with Admin(address, timeout_s=5) as admin:
        with pytest.raises(AuthenticationError):
            await admin.who_am_i(api_key="rlk_stolen")
        with pytest.raises(AuthenticationError):
            await admin.who_am_i()
