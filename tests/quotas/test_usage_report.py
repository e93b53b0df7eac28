"""The usage report between nodes and the DescribeTenant figures are
derived from one list of figures (cluster/quotas/usage.py ``USAGE_FIELDS``)."""

from __future__ import annotations

from dataclasses import fields

from cluster.frontend.tenant_admin import MEASURED_USAGE
from cluster.quotas.node_quotas import usage_figures
from cluster.quotas.usage import USAGE_FIELDS, GroupSize, NodeReport, TenantUsage
from cluster.quotas.usage_poller import from_report, to_report
from raftlog.internal.v1 import node_admin_pb2


def _every_field_set() -> TenantUsage:
    values = {}
    for i, f in enumerate(fields(TenantUsage), start=1):
        values[f.name] = i if f.type == "int" else i + 0.5
    return TenantUsage(**values)  # type: ignore[arg-type]


def test_every_figure_crosses_the_wire_and_back() -> None:
    usage = _every_field_set()
    sizes = {7: GroupSize(100, 2, 1_700_000_000_000), 9: GroupSize(0, 1, 5)}
    sent = NodeReport({"acme": usage, "idle": TenantUsage()}, {"acme": sizes, "b": {3: GroupSize(1, 1, 1)}})
    report = to_report(3, sent)
    assert report.node_id == 3
    received = from_report(report)
    assert received.sizes == sent.sizes
    assert received.usage == {**sent.usage, "b": TenantUsage()}
    entry_fields = set(node_admin_pb2.TenantUsageEntry.DESCRIPTOR.fields_by_name)
    assert set(USAGE_FIELDS) <= entry_fields


def test_describe_tenant_gets_every_measured_figure_by_its_name() -> None:
    figures = usage_figures(_every_field_set())
    assert set(figures) == set(MEASURED_USAGE)
    assert all(isinstance(v, int) and v > 0 for v in figures.values())
