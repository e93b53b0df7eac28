"""Values that must never render: the broken fixture (values.schema.json
refuses it, at render and at lint) and values that would let the cluster
lose its controller quorum (the chart's render-time ``fail`` refuses them,
with a message that says what to change).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import pytest

from tests.helm.chart_render import CHART_DIR, CI_DIR, merge_values, render

BROKEN = Path(__file__).parent / "fixtures" / "broken-values.yaml"
MINIMAL = CI_DIR / "minimal-values.yaml"


def test_broken_values_file_fails_the_schema() -> None:
    with pytest.raises(helm_python.HelmValuesError) as caught:
        render([BROKEN])
    message = str(caught.value)
    # Each of the fixture's mistakes is named: a wrong type, a wrong enum-less
    # type, and a misspelt key (additionalProperties false).
    assert "/replicas" in message
    assert "/tls/enabled" in message
    assert "persistense" in message


def test_broken_values_file_fails_lint() -> None:
    report = helm_python.lint(CHART_DIR, merge_values([BROKEN]), strict=True)
    assert report["errors"], report


@pytest.mark.parametrize(
    ("set_values", "reason"),
    [
        ({"unknownTopLevel": 1}, "unknownTopLevel"),
        ({"flags.autoscaling.maxReplica": 3}, "maxReplica"),
        ({"otel.env.NOT_OTEL": "x"}, "NOT_OTEL"),
        ({"otel.envFrom": [{"secretRef": {"name": "s"}, "configMapRef": {"name": "c"}}]}, "envFrom"),
        ({"otel.envFrom": [{"secret": {"name": "s"}}]}, "envFrom"),
        ({"zoneFromPodLabel": True}, "zoneFromPodLabel"),
        ({"zone.fromNode.enable": True}, "enable"),
        ({"scheduling.antiAffinity": "sometimes"}, "antiAffinity"),
        ({"tls.source": "vault"}, "source"),
    ],
)
def test_schema_refuses_unknown_or_wrong_values(set_values: dict[str, Any], reason: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=reason):
        render([MINIMAL], set_values)


@pytest.mark.parametrize(
    ("set_values", "message"),
    [
        ({"controllers": 4, "replicas": 5}, "controllers=4: the metadata controller needs an odd number"),
        ({"controllers": 2}, "controllers=2: the metadata controller needs an odd number"),
        ({"controllers": 1}, "controllers=1: the metadata controller needs an odd number"),
        ({"replicas": 2}, "replicas=2: raftlog needs at least 3 nodes"),
        ({"replicas": 1}, "replicas=1: raftlog needs at least 3 nodes"),
        ({"controllers": 5, "replicas": 4}, "controllers=5 > replicas=4"),
        ({"pdb.maxUnavailable": 2}, "pdb.maxUnavailable=2 could lose quorum"),
        (
            {"pdb.maxUnavailable": 3, "replicas": 7, "controllers": 5},
            "pdb.maxUnavailable=3 could lose quorum",
        ),
        ({"tls.enabled": True}, "needs tls.existingSecret"),
        ({"tls.enabled": True, "tls.source": "certManager"}, "needs tls.certManager.issuerRef.name"),
    ],
)
def test_values_that_could_lose_quorum_fail_at_render(set_values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=message.replace(".", r"\.")):
        render([MINIMAL], set_values)


def test_largest_safe_values_render() -> None:
    """The boundary: 5 voters of 7 nodes with a budget of 1 is accepted."""
    objects = render([MINIMAL], {"controllers": 5, "replicas": 7, "pdb.maxUnavailable": 1})
    assert any(o["kind"] == "PodDisruptionBudget" for o in objects)
