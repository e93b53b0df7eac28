"""The front door's caller check on a node a few metadata entries behind
(cluster/frontend/auth.py): a key or a tenant created a moment ago on the
controller leader is waited for (up to ``CATCH_UP_S``), never refused at
once; one that never appears is refused after the wait."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
import pytest

from cluster.controller import Principal
from cluster.frontend import auth
from cluster.frontend.auth import Authenticator
from cluster.frontend.grpc_errors import ServiceError
from raftlog.v1.reasons import Reason

OPERATOR = Principal("k-op", None)


class LaggingController:
    """What Authenticator reads of a ControllerReplica: ``state`` answers
    from what this node has applied; ``apply_later`` applies a tenant after
    a delay, moving ``version`` and waking ``wait_changed`` callers."""

    def __init__(self) -> None:
        self.tenants: set[str] = {"default"}
        self.version = 0
        self._changed = asyncio.Event()
        self.state = self

    def authenticate(self, key: str) -> Principal | None:
        return OPERATOR if key == "op-key" else None

    def tenant(self, name: str) -> object | None:
        return object() if name in self.tenants else None

    async def wait_changed(self, version: int, timeout: float) -> None:
        if self.version == version:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

    def apply_later(self, tenant: str, delay_s: float) -> None:
        def apply() -> None:
            self.tenants.add(tenant)
            self.version += 1
            self._changed.set()

        asyncio.get_running_loop().call_later(delay_s, apply)


class Context:
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


def as_operator_in(tenant: str) -> Any:
    return Context((("authorization", "Bearer op-key"), ("raftlog-tenant", tenant)))


async def test_a_tenant_created_a_moment_ago_is_waited_for() -> None:
    controller = LaggingController()
    authenticator = Authenticator(controller)  # type: ignore[arg-type]
    controller.apply_later("acme", 0.1)
    caller = await authenticator.caller(as_operator_in("acme"))
    assert caller.tenant == "acme"


async def test_a_tenant_that_never_appears_is_refused_after_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "CATCH_UP_S", 0.2)
    authenticator = Authenticator(LaggingController())  # type: ignore[arg-type]
    started = asyncio.get_running_loop().time()
    with pytest.raises(ServiceError) as refused:
        await authenticator.caller(as_operator_in("nobody"))
    assert (refused.value.code, refused.value.info.reason) == (
        grpc.StatusCode.NOT_FOUND,
        Reason.UNKNOWN_TENANT,
    )
    assert asyncio.get_running_loop().time() - started >= 0.19
