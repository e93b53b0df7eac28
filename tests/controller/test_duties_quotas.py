"""The controller leader makes the applied default quotas the cluster
file's ``[quotas]`` (cluster/controller_duties.py), over a stand-in for the
controller replica that applies what is submitted at once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from cluster.controller import SetQuota, decode_command, encode_command
from cluster.controller.model import MAX_TENANT_PARTITIONS
from cluster.controller.quotas import BUILT_IN_DEFAULTS, QuotaLimits
from cluster.controller.results import ApplyResult
from cluster.controller.state import ControllerState
from cluster.controller_duties import ControllerDuties
from cluster.controller_replica import ControllerReplica
from cluster.static_config import parse_cluster


class FakeController:
    """A controller replica that leads and applies every submitted command."""

    def __init__(self, members: set[int]) -> None:
        self.state = ControllerState()
        self.is_leader = True
        self.members = members
        self.submitted: list[bytes] = []

    async def submit(self, command: bytes) -> ApplyResult:
        self.submitted.append(command)
        return self.state.apply(self.state.applied_index + 1, command)

    async def wait_changed(self, version: int, timeout: float | None = None) -> int:
        raise asyncio.CancelledError  # one round of duties is enough

    def quota_proposals(self) -> list[SetQuota]:
        return [c for c in map(decode_command, self.submitted) if isinstance(c, SetQuota)]


def duties(tmp_path: Path, quotas: dict[str, Any] | None) -> tuple[ControllerDuties, FakeController]:
    doc: dict[str, Any] = {
        "cluster_id": "c",
        "nodes": [{"id": n, "address": f"127.0.0.1:{7000 + n}"} for n in (1, 2, 3)],
    }
    if quotas is not None:
        doc["quotas"] = quotas
    fake = FakeController({1, 2, 3})
    cluster = parse_cluster(doc, tmp_path)
    return ControllerDuties(1, cast(ControllerReplica, fake), cluster, tmp_path), fake


async def test_the_leader_applies_the_file_s_defaults_once(tmp_path: Path) -> None:
    run, fake = duties(tmp_path, {"produce_mb_s": 1.5, "topics": 20})
    with pytest.raises(asyncio.CancelledError):
        await run.run()
    wanted = QuotaLimits(produce_bytes_s=1_500_000, topics=20)
    assert fake.quota_proposals() == [SetQuota("", wanted)]
    assert fake.state.quota_defaults() == QuotaLimits(
        produce_bytes_s=1_500_000, partitions=MAX_TENANT_PARTITIONS, topics=20
    )
    # Applied: nothing more to propose, however often the leader looks.
    await run.sync_quota_defaults()
    assert len(fake.quota_proposals()) == 1


async def test_a_file_without_quotas_proposes_nothing_on_a_new_cluster(tmp_path: Path) -> None:
    run, fake = duties(tmp_path, None)
    await run.sync_quota_defaults()
    # The file's "partitions = 1000" is the built-in default: nothing to do either.
    run2, fake2 = duties(tmp_path, {"partitions": MAX_TENANT_PARTITIONS})
    await run2.sync_quota_defaults()
    assert fake.submitted == [] and fake2.submitted == []


async def test_a_setting_removed_from_the_file_goes_back_to_its_default(tmp_path: Path) -> None:
    run, fake = duties(tmp_path, {"requests_s": 100})
    await fake.submit(encode_command(SetQuota("", QuotaLimits(requests_s=5, partitions=10))))
    await run.sync_quota_defaults()
    assert fake.state.quota_defaults() == QuotaLimits(requests_s=100, partitions=MAX_TENANT_PARTITIONS)
    run, _ = duties(tmp_path, None)
    run.controller = cast(ControllerReplica, fake)
    await run.sync_quota_defaults()
    assert fake.state.quota_defaults() == BUILT_IN_DEFAULTS
    assert fake.quota_proposals()[-1] == SetQuota("", QuotaLimits())
