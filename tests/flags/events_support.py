"""Test tools for exposures, tracking and change pings on a real cluster: an
environment with an SDK key, reading a tenant's service topic back, and
the records' documented values (canonical JSON) to compare with."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from client.admin import Admin
from client.consumer import Consumer, ConsumerRecord, FetchMode, OffsetReset
from client.errors import NotFoundError, UnknownTopicOrPartitionError
from flags.sdk_keys import issue_sdk_key, revoke_record
from harness.local_cluster import LocalCluster
from tests.flags.log_nodes import ENV, WHO, FlagNode, bootstrap, env_create, now_ms


async def env_and_key(node: FlagNode, tenant: str, env: str = ENV, **kind: Any) -> tuple[str, str]:
    """Create ``env`` (if missing) and a key of it; ``(clear key, key id)``.
    ``kind``: ``kind=KeyKind.CLIENT`` for a client key."""
    if not node.live.store.has_environment(tenant, env):
        await node.writer.append(tenant, env_create(env))
    issued = issue_sdk_key(env, "test key", WHO, now_ms(), **kind)
    await node.writer.append_record(tenant, issued.record_key, issued.record_value)
    return issued.clear_key, issued.key_id


async def revoke(node: FlagNode, tenant: str, key_id: str, env: str = ENV) -> None:
    key, value = revoke_record(key_id, env, WHO, now_ms())
    await node.writer.append_record(tenant, key, value)


async def end_offset(cluster: LocalCluster, tenant: str, topic: str) -> int:
    """The topic's high watermark; 0 when it does not exist."""
    async with Admin(bootstrap(cluster), api_key=cluster.api_key, tenant=tenant) as admin:
        try:
            await admin.describe_topic(topic)
        except (NotFoundError, UnknownTopicOrPartitionError):
            return 0
    consumer = Consumer(bootstrap(cluster), api_key=cluster.api_key, tenant=tenant, fetch_mode=FetchMode.POLL)
    async with consumer:
        consumer.assign([(topic, 0)])
        try:
            await consumer.seek_to_end((topic, 0))
        except (NotFoundError, UnknownTopicOrPartitionError):
            return 0
        return consumer.position((topic, 0)) or 0


async def read_topic(
    cluster: LocalCluster, tenant: str, topic: str, count: int, timeout_s: float = 20.0
) -> list[ConsumerRecord]:
    """The first ``count`` records of the tenant's ``topic`` (fails on timeout
    with what it read), and then anything more that arrives within 0.3 s."""
    consumer = Consumer(
        bootstrap(cluster),
        api_key=cluster.api_key,
        tenant=tenant,
        fetch_mode=FetchMode.POLL,
        fetch_max_wait_ms=100,
        auto_offset_reset=OffsetReset.EARLIEST,
    )
    found: list[ConsumerRecord] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with consumer:
        consumer.assign([(topic, 0)])
        while len(found) < count:
            if loop.time() > deadline:
                raise AssertionError(
                    f"read {len(found)} of {count} records of {tenant}/{topic}: {found[-3:]}"
                )
            try:
                found.extend(await consumer.poll(0.5))
            except (NotFoundError, UnknownTopicOrPartitionError):
                await asyncio.sleep(0.1)
        found.extend(await consumer.poll(0.3))
    return found


def canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def exposure_record(
    env: str, flag: str, variant: str, reason: str, key: str, version: int, source: str, ts: int
) -> bytes:
    """An exposure record's value in the documented format (flags/event_records.py),
    written out field by field: what the encoders must produce, byte for byte."""
    return canonical(
        {
            "format": 1,
            "env": env,
            "flag": flag,
            "variant": variant,
            "reason": reason,
            "targetingKey": key,
            "ts": ts,
            "version": version,
            "source": source,
        }
    )
