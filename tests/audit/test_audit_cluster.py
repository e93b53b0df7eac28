"""The audit trail on a real 3-node cluster: each admin action made through
the SDK — through a node that does not lead the controller, so changes are
forwarded — including refused ones, leaves exactly one event, with who,
what, when and from where, and no key's clear text; operators read it with
``raftlog audit``, tenant keys cannot read it at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from client import (
    AuthorizationError,
    Consumer,
    NotFoundError,
    PreconditionFailedError,
    UnknownTenantError,
)
from client.admin import Admin
from cluster.audit.events import AUDIT_TOPIC
from cluster.groups.group_logs import SYSTEM_TENANT
from harness.local_cluster import LocalCluster

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("audit"), topics=[])
    c.start_all()
    yield c
    c.close()


def _audit_cli(cluster: LocalCluster, key: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAFTLOG_BOOTSTRAP": cluster.addresses[2], "RAFTLOG_API_KEY": key}
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", "audit", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


async def _admin_actions(cluster: LocalCluster) -> tuple[list[str], dict[str, str]]:
    """Every kind of admin action, through a node that does not lead the
    controller; the clear texts of the keys made, and their ids by the
    method that made them."""
    async with Admin(list(cluster.addresses.values()), api_key=cluster.api_key) as any_node:
        leader = (await any_node.cluster_status()).controller_leader
    follower = next(n for n in cluster.addresses if n != leader)
    secrets: list[str] = []
    made: dict[str, str] = {}
    async with Admin([cluster.addresses[follower]], api_key=cluster.api_key) as op:
        created = await op.create_tenant("acme")
        tenant_key = created.api_key.clear_text
        secrets.append(tenant_key)
        extra = await op.create_api_key("acme")
        secrets.append(extra.clear_text)
        rotated = await op.rotate_api_key(extra.key_id, grace_seconds=60)
        secrets.append(rotated.api_key.clear_text)
        made = {
            "CreateTenant": created.api_key.key_id,
            "CreateApiKey": extra.key_id,
            "RotateApiKey": rotated.api_key.key_id,
        }
        await op.revoke_api_key(rotated.api_key.key_id)
        await op.set_tenant_quota("acme", topics=5)
        with pytest.raises(NotFoundError):
            await op.decommission_node(99)
    async with Admin([cluster.addresses[follower]], api_key=tenant_key) as acme:
        await acme.create_topic("orders", 1, 3)
        await acme.alter_topic_config("orders", retention_ms=60_000)
        with pytest.raises(PreconditionFailedError):
            await acme.compact_topic("orders")  # not a compacted topic
        await acme.delete_topic("orders")
        await acme.list_topics()  # read-only: no event
        with pytest.raises(AuthorizationError):
            await acme.create_tenant("evil")  # a tenant key on an operator method
    async with Admin([cluster.addresses[follower]], api_key=cluster.api_key) as op:
        await op.delete_tenant("acme")
    return secrets, made


async def test_every_admin_action_leaves_one_event_readable_with_the_cli(cluster: LocalCluster) -> None:
    started_ms = int(time.time() * 1000)
    secrets, made = await _admin_actions(cluster)

    done = _audit_cli(cluster, cluster.api_key, "--json")
    assert done.returncode == 0, done.stderr
    for secret in secrets:
        assert secret not in done.stdout and secret.split("_")[-1] not in done.stdout
    events = [json.loads(line) for line in done.stdout.splitlines()]
    mine = [e for e in events if e["time_ms"] >= started_ms]
    by_method: dict[str, list[dict[str, Any]]] = {}
    for event in mine:
        by_method.setdefault(event["method"], []).append(event)
    expected = {
        "CreateTenant": 2,  # the operator's, and the tenant key's refused one
        "CreateApiKey": 1,
        "RotateApiKey": 1,
        "RevokeApiKey": 1,
        "SetTenantQuota": 1,
        "DecommissionNode": 1,
        "CreateTopic": 1,
        "AlterTopicConfig": 1,
        "CompactTopic": 1,
        "DeleteTopic": 1,
        "DeleteTenant": 1,
    }
    assert {m: len(e) for m, e in by_method.items()} == expected, mine

    ok, refused = by_method["CreateTenant"]
    # A call that issued a key names it (its id, from the forwarding node's handler).
    assert (ok["outcome"], ok["key_tenant"], ok["target"]) == (
        "ok",
        None,
        {"name": "acme", "created_key_id": made["CreateTenant"]},
    )
    [create_key] = by_method["CreateApiKey"]
    assert create_key["target"] == {"tenant": "acme", "created_key_id": made["CreateApiKey"]}
    [rotate] = by_method["RotateApiKey"]
    assert rotate["target"]["created_key_id"] == made["RotateApiKey"] != rotate["target"]["key_id"]
    assert "created_key_id" not in refused["target"]
    assert (refused["outcome"], refused["code"], refused["reason"]) == (
        "refused",
        "PERMISSION_DENIED",
        "OPERATOR_KEY_REQUIRED",
    )
    assert refused["key_tenant"] == "acme" and refused["tenant"] == "acme"
    [decommission] = by_method["DecommissionNode"]
    assert (decommission["outcome"], decommission["code"], decommission["target"]) == (
        "refused",
        "NOT_FOUND",
        {"node_id": "99"},
    )
    [compact] = by_method["CompactTopic"]
    assert (compact["outcome"], compact["reason"]) == ("refused", "NOT_COMPACTED")
    [alter] = by_method["AlterTopicConfig"]
    assert alter["outcome"] == "ok" and alter["target"] == {"name": "orders", "retention_ms": "60000"}
    [topic] = by_method["CreateTopic"]
    assert topic["target"]["name"] == "orders" and topic["tenant"] == "acme" and topic["key_tenant"] == "acme"
    [quota] = by_method["SetTenantQuota"]
    assert quota["target"] == {"tenant": "acme", "quota": {"topics": "5"}} and quota["key_tenant"] is None
    [revoke] = by_method["RevokeApiKey"]
    assert revoke["target"]["key_id"]
    for event in mine:
        # Where: the client's address and the node it called (not the leader it was forwarded to).
        assert "127.0.0.1" in event["peer"] and event["node"] in cluster.addresses
        assert started_ms <= event["time_ms"] <= int(time.time() * 1000)
    assert len({e["node"] for e in mine}) == 1

    readable = _audit_cli(cluster, cluster.api_key, "--since", "10m")
    assert readable.returncode == 0, readable.stderr
    assert "REFUSED PERMISSION_DENIED OPERATOR_KEY_REQUIRED CreateTenant tenant=acme" in readable.stdout
    assert " ok CreateTopic tenant=acme " in readable.stdout

    # Tenant keys cannot read the audit: not with the CLI, not with the SDK.
    other_key = None
    async with Admin(list(cluster.addresses.values()), api_key=cluster.api_key) as op:
        other_key = (await op.create_tenant("globex")).api_key.clear_text
    denied = _audit_cli(cluster, other_key)
    assert denied.returncode == 1 and "needs an operator key" in denied.stderr
    assert denied.stdout == ""
    async with Consumer(
        list(cluster.addresses.values()), api_key=other_key, tenant=SYSTEM_TENANT
    ) as consumer:
        with pytest.raises(UnknownTenantError):
            await consumer.metadata.partition_count(AUDIT_TOPIC)
