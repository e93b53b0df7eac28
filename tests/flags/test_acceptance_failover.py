"""Acceptance (issue 16): failures under the real ``openfeature-sdk`` +
``openfeature-provider-flagd`` (RPC and IN_PROCESS mode at once), on a flag server
process on a real 3-node cluster.

- The flag server restarts (SIGTERM, and SIGKILL): both providers reconnect on
  their own and serve a change made after the restart (RPC: announced by a
  ``configuration_change`` event on the new EventStream; in-process: in the
  snapshot of the new SyncFlags stream).
- The leader of the tenant's flags partition is SIGKILLed while changes are
  written through the admin API: every change the API acknowledged is in the
  flag's history, in the log exactly once, and the last one is what both
  providers serve; no change is there twice, none appears that was not asked for.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.event import ProviderEvent
from openfeature.flag_evaluation import Reason

from tests.flags.acceptance_fixtures import (
    ENV,
    FlagAdminError,
    Providers,
    Stack,
    TenantFlags,
    bool_flag,
    string_flag,
    until,
)
from tests.flags.stack_fixtures import acceptance_fixtures

pytestmark = pytest.mark.timeout(150)

RPC = ResolverType.RPC
IN_PROCESS = ResolverType.IN_PROCESS


stack, providers, _ = acceptance_fixtures("acceptance-failover")


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_providers_reconnect_after_a_flag_server_restart(
    stack: Stack, providers: Providers, kill: bool
) -> None:
    tenant, key = stack.tenant_with_flags()
    rpc = providers.connect(RPC, stack.server.eval_address, selector=key)
    local = providers.connect(IN_PROCESS, stack.server.sync_address, selector=key)
    assert rpc.details("boolean", "bool-flag", False).value is True
    assert rpc.details("boolean", "bool-flag", False).reason == Reason.CACHED
    assert local.details("boolean", "bool-flag", False).value is True
    until(lambda: rpc.seen(ProviderEvent.PROVIDER_READY), what="first ready event")
    readies = len(rpc.seen(ProviderEvent.PROVIDER_READY))

    stack.restart_server(kill=kill)
    # The EventStream is back when the server says provider_ready on it again.
    until(lambda: len(rpc.seen(ProviderEvent.PROVIDER_READY)) > readies, what="RPC provider reconnected")
    tenant.put_flag("bool-flag", bool_flag("off"))
    tenant.put_flag("after-restart", string_flag("new"))

    until(lambda: "bool-flag" in rpc.changed_keys(), what="configuration_change after the restart")
    assert rpc.details("boolean", "bool-flag", True).value is False
    assert rpc.details("string", "after-restart", "x").value == "new"
    until(lambda: local.details("string", "after-restart", "x").value == "new", what="in-process snapshot")
    assert local.details("boolean", "bool-flag", True).value is False


@dataclass
class Writes:
    """Unconditional updates of one flag, value ``str(i)`` for i = 1, 2, ...,
    one at a time; what the admin API said about each."""

    tenant: TenantFlags
    acknowledged: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            value = str(i)
            try:
                self.tenant.put_flag("counter", string_flag(value), timeout_s=15.0)
            except FlagAdminError as error:
                with self.lock:
                    self.failed.append(value)
                    self.errors.append(str(error))
            else:
                with self.lock:
                    self.acknowledged.append(value)

    def count(self) -> int:
        with self.lock:
            return len(self.acknowledged)


@pytest.mark.usefixtures("restart_killed_nodes")
def test_no_acknowledged_change_is_lost_when_the_flags_partition_leader_dies(
    stack: Stack, providers: Providers
) -> None:
    tenant, key = stack.tenant_with_flags("failover")
    tenant.put_flag("counter", string_flag("0"))
    rpc = providers.connect(RPC, stack.server.eval_address, selector=key)
    local = providers.connect(IN_PROCESS, stack.server.sync_address, selector=key)
    leader = stack.partition_leader(tenant.tenant)
    assert leader in stack.cluster.node_ids

    writes = Writes(TenantFlags(tenant.tenant, tenant.api_key, tenant.address))
    writer = threading.Thread(target=writes.run, name="flag-writes")
    writer.start()
    try:
        until(lambda: writes.count() >= 10, timeout_s=20, what="10 acknowledged writes before the kill")
        stack.cluster.kill(leader)
        killed_at = writes.count()
        until(
            lambda: writes.count() >= killed_at + 15,
            timeout_s=40,
            what="15 acknowledged writes after the kill",
        )
    finally:
        writes.stop.set()
        writer.join(30)
        writes.tenant.close()
    assert not writer.is_alive()
    assert stack.partition_leader(tenant.tenant) not in (0, leader)

    history = [entry for entry in tenant.history("counter") if entry.kind in ("create", "update")]
    served = [json.loads(entry.definition_json)["variants"]["v"] for entry in history]
    assert served[0] == "0"
    assert len(served) == len(set(served)), f"a change is in the history twice: {served}"
    assert set(writes.acknowledged) <= set(served), (
        f"acknowledged but lost: {sorted(set(writes.acknowledged) - set(served), key=int)}"
    )
    assert set(served) <= {"0", *writes.acknowledged, *writes.failed}, (
        f"not asked for; errors: {writes.errors}"
    )
    assert served == sorted(served, key=int), "changes out of the order they were made in"

    changes = [
        json.loads(record.value)
        for record in stack.read_log(tenant.tenant)
        if record.key == f"{ENV}/counter".encode() and record.value is not None
    ]
    log_values = [c["definition"]["variants"]["v"] for c in changes if c["kind"] in ("create", "update")]
    assert len(log_values) == len(set(log_values)), f"a change is in the log twice: {log_values}"
    assert set(log_values) == set(served)

    last = served[-1]
    assert json.loads(tenant.get_flag("counter").definition_json)["variants"]["v"] == last
    until(lambda: rpc.details("string", "counter", "x").value == last, what=f"RPC serves {last}")
    until(lambda: local.details("string", "counter", "x").value == last, what=f"in-process serves {last}")


@pytest.fixture
def restart_killed_nodes(stack: Stack) -> Iterator[None]:
    """Whatever a test killed runs again afterwards (the next test gets three nodes)."""
    yield
    for node in stack.cluster.node_ids:
        if node not in stack.cluster.processes:
            stack.cluster.start(node)
