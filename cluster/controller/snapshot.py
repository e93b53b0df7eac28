"""The controller's snapshot: the whole metadata state as bytes.

Layout, version 2 (``wire`` primitives, big-endian); version 1 is the same
without each topic's ``compaction`` and ``config_revision``:

================== ==========================================================
field              meaning
================== ==========================================================
magic              the 4 bytes ``RLMC`` (not a partition snapshot)
version u8         1 or 2
applied_index u64  the last log index applied
next_group_id u64  the Raft group the next partition gets
tenants            u32 count, then name text, created_index u64
api_keys           u32 count, then key_id text, is_operator flag, tenant
                   text, salt blob, digest blob, created_index u64
nodes              u32 count, then node_id u64, address text, zone text,
                   controller_eligible flag, alive flag, decommissioning flag
topics             u32 count, then tenant text, name text, partitions u32,
                   replication_factor u16, retention_ms opt_i64,
                   retention_bytes opt_i64, revision u64, (version 2:
                   ``compaction`` as commands.py writes it, config_revision
                   u64), and per partition: group u64, replicas ids,
                   learners ids, revision u64
crc u32            zlib CRC-32 of every byte before it
================== ==========================================================

Invariants:

- A state is written at the lowest version that holds it: version 1 while
  no topic has a compaction setting other than its default or a changed
  config (so a node not yet upgraded can still install it), else 2; a
  version-2 snapshot that version 1 could hold is refused as corrupt (one
  encoding per state). Version-1 snapshots written before version 2
  existed restore with every topic at the defaults.
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

from cluster.controller.commands import read_compaction, read_key_tenant, write_compaction, write_key_tenant
from cluster.controller.model import ApiKeyRecord, Assignment, Node, Tenant, Topic, TopicConfig
from cluster.primitives.wire import Reader, WireError, Writer

__all__ = ["MAGIC", "SNAPSHOT_VERSION", "ControllerImage", "CorruptSnapshot", "decode_image", "encode_image"]

MAGIC = b"RLMC"
SNAPSHOT_VERSION = 2
"""The newest version this code writes and reads (it reads 1 too)."""
_DEFAULT_COMPACTION = TopicConfig()
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


def encode_image(image: ControllerImage) -> bytes:
    """The snapshot bytes. Raises ``ValueError`` for an image whose tables
    are out of order or whose topics and assignments disagree."""
    _check_order(image)
    by_group = {a.group: a for a in image.assignments}
    version = 2 if any(_needs_version_2(t) for t in image.topics) else 1
    w = Writer().raw(MAGIC).u8(version).u64(image.applied_index).u64(image.next_group_id)
    w.u32(len(image.tenants))
    for tenant in image.tenants:
        w.text(tenant.name).u64(tenant.created_index)
    w.u32(len(image.api_keys))
    for key in image.api_keys:
        w.text(key.key_id)
        write_key_tenant(w, key.tenant)
        w.blob(key.salt).blob(key.digest).u64(key.created_index)
    w.u32(len(image.nodes))
    for node in image.nodes:
        w.u64(node.node_id).text(node.address).text(node.zone)
        w.flag(node.controller_eligible).flag(node.alive).flag(node.decommissioning)
    w.u32(len(image.topics))
    written = 0
    for topic in image.topics:
        w.text(topic.tenant).text(topic.name).u32(topic.partitions).u16(topic.replication_factor)
        w.opt_i64(topic.retention_ms).opt_i64(topic.retention_bytes).u64(topic.revision)
        if version == 2:
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
    if version == 2 and not any(_needs_version_2(t) for t in image.topics):
        raise CorruptSnapshot(
            "controller snapshot version 2 holds nothing version 1 cannot: no raftlog writes it"
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
        keys.append(ApiKeyRecord(key_id, tenant, r.blob("salt"), r.blob("digest"), r.u64("created")))
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
        if version == 2:
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
    return ControllerImage(
        applied_index, next_group_id, tenants, tuple(keys), nodes, tuple(topics), tuple(assignments)
    )


def _check_order(image: ControllerImage) -> None:
    """Raise ``ValueError`` unless the keyed tables are sorted by their keys."""
    _check_sorted("tenants", [t.name for t in image.tenants])
    _check_sorted("api keys", [k.key_id for k in image.api_keys])
    _check_sorted("nodes", [n.node_id for n in image.nodes])
    _check_sorted("topics", [(t.tenant, t.name) for t in image.topics])


def _check_sorted(what: str, keys: Sequence[Any]) -> None:
    for before, after in itertools.pairwise(keys):
        if not before < after:
            raise ValueError(f"{what} out of order or repeated at {after!r}")
