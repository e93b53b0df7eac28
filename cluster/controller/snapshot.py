"""The controller's snapshot: the whole metadata state as bytes.

Layout, version 3 (``wire`` primitives, big-endian); version 2 is the same
without the key scopes and the quota tables, version 1 is version 2
without each topic's ``compaction`` and ``config_revision``:

================== ==========================================================
field              meaning
================== ==========================================================
magic              the 4 bytes ``RLMC`` (not a partition snapshot)
version u8         1, 2 or 3
applied_index u64  the last log index applied
next_group_id u64  the Raft group the next partition gets
tenants            u32 count, then name text, created_index u64
api_keys           u32 count, then key_id text, is_operator flag, tenant
                   text, salt blob, digest blob, created_index u64,
                   (version 3: ``key_scope``, field_codecs.py)
nodes              u32 count, then node_id u64, address text, zone text,
                   controller_eligible flag, alive flag, decommissioning flag
topics             u32 count, then tenant text, name text, partitions u32,
                   replication_factor u16, retention_ms opt_i64,
                   retention_bytes opt_i64, revision u64, (version 2:
                   ``compaction``, field_codecs.py, config_revision
                   u64), and per partition: group u64, replicas ids,
                   learners ids, revision u64
quota_defaults     version 3 only: the applied cluster defaults, the 8
                   quota fields as opt_i64 (``quotas.write_quota``)
tenant_quotas      version 3 only: u32 count, then tenant text and the 8
                   quota fields, by tenant name
crc u32            zlib CRC-32 of every byte before it
================== ==========================================================

Invariants:

- A state is written at the lowest version that holds it: version 3 once
  a quota is set or a key has a scope other than its tenant's default or
  an expiry; else version 2 once a topic has a compaction setting other
  than its default or a changed config; else version 1 (so a node not yet
  upgraded can still install it). A snapshot that a lower version could
  hold is refused as corrupt (one encoding per state). Older snapshots
  restore with every topic at the default settings, every key at its
  default scope without expiry, and no quotas.
- Deterministic: every table is written sorted by its key (tenant name, key
  id, node id, (tenant, topic name)), so equal states give equal bytes
  whatever order they were built in and whatever the hash seed.
- Assignments are written inside their topic, which is where their tenant,
  topic, partition and topic revision come from: they cannot disagree.
- ``decode_image`` accepts only what ``encode_image`` writes: a wrong magic,
  unknown version, bad CRC, truncation, trailing bytes or a table out of
  order raises ``CorruptSnapshot``. Whether the contents make sense
  together (every topic's tenant exists, ...) is checked by
  ``ControllerState.restore``, which raises ``CorruptSnapshot`` too.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cluster.controller.field_codecs import (
    read_compaction,
    read_key_scope,
    read_key_tenant,
    write_compaction,
    write_key_scope,
    write_key_tenant,
)
from cluster.controller.model import ApiKeyRecord, Assignment, Node, Tenant, Topic, TopicConfig, default_scope
from cluster.controller.quotas import QuotaLimits, read_quota, write_quota
from cluster.primitives.wire import Reader, WireError, Writer

__all__ = ["MAGIC", "SNAPSHOT_VERSION", "ControllerImage", "CorruptSnapshot", "decode_image", "encode_image"]

MAGIC = b"RLMC"
SNAPSHOT_VERSION = 3
"""The newest version this code writes and reads (it reads 1 and 2 too)."""
_DEFAULT_COMPACTION = TopicConfig()
_NO_QUOTA = QuotaLimits()
_CRC_SIZE = 4


class CorruptSnapshot(ValueError):
    """Snapshot data that this code did not write (or that was damaged)."""


@dataclass(frozen=True, slots=True)
class ControllerImage:
    """The state a snapshot carries, every table sorted by its key."""

    applied_index: int
    next_group_id: int
    tenants: tuple[Tenant, ...]
    api_keys: tuple[ApiKeyRecord, ...]
    nodes: tuple[Node, ...]
    topics: tuple[Topic, ...]
    assignments: tuple[Assignment, ...]
    """Sorted by group."""
    quota_defaults: QuotaLimits = _NO_QUOTA
    """The applied cluster defaults (``SetQuota("")``), built-ins not laid under."""
    tenant_quotas: tuple[tuple[str, QuotaLimits], ...] = ()
    """Per tenant overrides, sorted by tenant; none all None."""


def _version(image: ControllerImage) -> int:
    """The lowest version that holds ``image``."""
    if _needs_version_3(image):
        return 3
    return 2 if any(_needs_version_2(t) for t in image.topics) else 1


def _needs_version_3(image: ControllerImage) -> bool:
    return (
        not image.quota_defaults.is_empty
        or bool(image.tenant_quotas)
        or any(k.scope != default_scope(k.tenant) or k.expires_at_ms != 0 for k in image.api_keys)
    )


def encode_image(image: ControllerImage) -> bytes:
    """The snapshot bytes. Raises ``ValueError`` for an image whose tables
    are out of order or whose topics and assignments disagree."""
    _check_order(image)
    by_group = {a.group: a for a in image.assignments}
    version = _version(image)
    w = Writer().raw(MAGIC).u8(version).u64(image.applied_index).u64(image.next_group_id)
    w.u32(len(image.tenants))
    for tenant in image.tenants:
        w.text(tenant.name).u64(tenant.created_index)
    w.u32(len(image.api_keys))
    for key in image.api_keys:
        w.text(key.key_id)
        write_key_tenant(w, key.tenant)
        w.blob(key.salt).blob(key.digest).u64(key.created_index)
        if version == 3:
            write_key_scope(w, key.scope, key.expires_at_ms)
    w.u32(len(image.nodes))
    for node in image.nodes:
        w.u64(node.node_id).text(node.address).text(node.zone)
        w.flag(node.controller_eligible).flag(node.alive).flag(node.decommissioning)
    w.u32(len(image.topics))
    written = 0
    for topic in image.topics:
        w.text(topic.tenant).text(topic.name).u32(topic.partitions).u16(topic.replication_factor)
        w.opt_i64(topic.retention_ms).opt_i64(topic.retention_bytes).u64(topic.revision)
        if version >= 2:
            write_compaction(w, topic.config)
            w.u64(topic.config_revision)
        if len(topic.groups) != topic.partitions:
            raise ValueError(f"topic {topic.tenant}/{topic.name}: {len(topic.groups)} groups")
        for partition, group in enumerate(topic.groups):
            a = by_group.get(group)
            if a is None or (a.tenant, a.topic, a.partition, a.topic_revision) != (
                topic.tenant,
                topic.name,
                partition,
                topic.revision,
            ):
                raise ValueError(f"topic {topic.tenant}/{topic.name} partition {partition}: no assignment")
            w.u64(group).ids(a.replicas).ids(a.learners).u64(a.revision)
            written += 1
    if written != len(image.assignments):
        raise ValueError(f"{len(image.assignments) - written} assignments belong to no topic")
    if version == 3:
        write_quota(w, image.quota_defaults)
        w.u32(len(image.tenant_quotas))
        for quota_tenant, limits in image.tenant_quotas:
            w.text(quota_tenant)
            write_quota(w, limits)
    body = bytes(w)
    return body + zlib.crc32(body).to_bytes(_CRC_SIZE, "big")


def _needs_version_2(topic: Topic) -> bool:
    config = topic.config
    compaction = (
        config.cleanup_policy,
        config.min_compaction_lag_ms,
        config.delete_retention_ms,
        config.max_compaction_lag_ms,
    )
    defaults = _DEFAULT_COMPACTION
    return topic.config_revision != 0 or compaction != (
        defaults.cleanup_policy,
        defaults.min_compaction_lag_ms,
        defaults.delete_retention_ms,
        defaults.max_compaction_lag_ms,
    )


def decode_image(data: bytes) -> ControllerImage:
    """The image in ``data`` (see the module docstring for what it checks)."""
    header = len(MAGIC) + 1
    if len(data) < header + _CRC_SIZE or data[: len(MAGIC)] != MAGIC:
        raise CorruptSnapshot("not a controller snapshot (no RLMC magic)")
    version = data[len(MAGIC)]
    if not 1 <= version <= SNAPSHOT_VERSION:
        raise CorruptSnapshot(
            f"controller snapshot version {version}: this code reads versions 1-{SNAPSHOT_VERSION} "
            "(written by a newer raftlog?)"
        )
    body = data[:-_CRC_SIZE]
    if zlib.crc32(body) != int.from_bytes(data[-_CRC_SIZE:], "big"):
        raise CorruptSnapshot("controller snapshot CRC mismatch: the snapshot is damaged")
    r = Reader(body, "controller snapshot", start=header)
    try:
        image = _read_image(r, version)
        r.finish()
    except WireError as exc:
        raise CorruptSnapshot(str(exc)) from None
    if _version(image) != version:
        raise CorruptSnapshot(
            f"controller snapshot version {version} holds nothing version {version - 1} cannot: "
            "no raftlog writes it"
        )
    try:
        _check_order(image)
        _check_sorted("groups", [a.group for a in image.assignments])
    except ValueError as exc:
        raise CorruptSnapshot(f"controller snapshot: {exc}") from None
    return image


def _count(r: Reader, field: str) -> int:
    count = r.u32(field)
    if count > r.remaining:  # every row takes at least one byte
        raise WireError(f"{r.what}: {field} {count} runs past the end")
    return count


def _read_image(r: Reader, version: int) -> ControllerImage:
    applied_index, next_group_id = r.u64("applied_index"), r.u64("next_group_id")
    tenants = tuple(Tenant(r.text("tenant"), r.u64("created_index")) for _ in range(_count(r, "tenants")))
    keys = []
    for _ in range(_count(r, "api keys")):
        key_id = r.text("key_id")
        tenant = read_key_tenant(r, key_id)
        salt, digest, created = r.blob("salt"), r.blob("digest"), r.u64("created")
        scope, expires_at_ms = read_key_scope(r) if version == 3 else (default_scope(tenant), 0)
        keys.append(ApiKeyRecord(key_id, tenant, salt, digest, created, scope, expires_at_ms))
    nodes = tuple(
        Node(
            r.u64("node_id"),
            r.text("address"),
            r.text("zone"),
            r.flag("eligible"),
            r.flag("alive"),
            r.flag("dec"),
        )
        for _ in range(_count(r, "nodes"))
    )
    topics = []
    assignments = []
    for _ in range(_count(r, "topics")):
        tenant, name, partitions, rf = r.text("tenant"), r.text("topic"), r.u32("partitions"), r.u16("rf")
        retention_ms, retention_bytes, revision = (
            r.opt_i64("retention_ms"),
            r.opt_i64("retention_bytes"),
            r.u64("rev"),
        )
        compaction: tuple[str, int, int, int | None] = ("delete", 0, TopicConfig().delete_retention_ms, None)
        config_revision = 0
        if version >= 2:
            compaction = read_compaction(r)
            config_revision = r.u64("config_revision")
        if partitions > r.remaining:
            raise WireError(f"{r.what}: topic {tenant}/{name}: {partitions} partitions run past the end")
        groups = []
        for partition in range(partitions):
            group, replicas, learners = r.u64("group"), r.ids("replicas"), r.ids("learners")
            assignments.append(
                Assignment(group, tenant, name, revision, partition, replicas, learners, r.u64("revision"))
            )
            groups.append(group)
        topics.append(
            Topic(
                tenant,
                name,
                partitions,
                rf,
                retention_ms,
                retention_bytes,
                revision,
                tuple(groups),
                *compaction,
                config_revision,
            )
        )
    assignments.sort(key=lambda a: a.group)
    quota_defaults, tenant_quotas = _NO_QUOTA, []
    if version == 3:
        quota_defaults = read_quota(r)
        for _ in range(_count(r, "tenant quotas")):
            quota_tenant = r.text("quota tenant")
            limits = read_quota(r)
            if limits.is_empty:
                raise WireError(f"{r.what}: tenant {quota_tenant!r}'s quota overrides are empty")
            tenant_quotas.append((quota_tenant, limits))
    return ControllerImage(
        applied_index,
        next_group_id,
        tenants,
        tuple(keys),
        nodes,
        tuple(topics),
        tuple(assignments),
        quota_defaults,
        tuple(tenant_quotas),
    )


def _check_order(image: ControllerImage) -> None:
    """Raise ``ValueError`` unless the keyed tables are sorted by their keys."""
    _check_sorted("tenants", [t.name for t in image.tenants])
    _check_sorted("api keys", [k.key_id for k in image.api_keys])
    _check_sorted("nodes", [n.node_id for n in image.nodes])
    _check_sorted("topics", [(t.tenant, t.name) for t in image.topics])
    _check_sorted("tenant quotas", [tenant for tenant, _ in image.tenant_quotas])


def _check_sorted(what: str, keys: Sequence[Any]) -> None:
    for before, after in itertools.pairwise(keys):
        if not before < after:
            raise ValueError(f"{what} out of order or repeated at {after!r}")
