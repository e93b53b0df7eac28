"""helm/raftlog checked offline, the way CI can (no Kubernetes API server):
``helm lint --strict`` with every ci/ scenario, every scenario rendered, and
every rendered object validated -- core kinds with kubernetes-validate
(strict: unknown fields are errors) for two Kubernetes versions, the
monitoring.coreos.com and cert-manager kinds against the minimal schemas in
tests/helm/schemas/ (unknown fields refused), and the PrometheusRule's rule
groups through ``promtool check rules``.

Invariant: every rendered kind is checked by exactly one of the two
validators; a kind neither knows fails the test instead of slipping by.
"""

from __future__ import annotations

import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import helm_python
import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from tests.helm.chart_render import CHART_DIR, ci_values_files, find_all, merge_values, render
from tests.tools import promtool

KUBERNETES_VERSIONS = ("1.30.0", "1.33.0", "1.35.0")
SCHEMAS = Path(__file__).parent / "schemas"
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
    ("cert-manager.io/v1", "Certificate"): "certificate.json",
}
SCENARIOS = ci_values_files()
EXPECTED_SCENARIOS = {"minimal", "five-nodes-three-zones", "tls", "metrics", "flags-off"}


@cache
def _rendered(path: Path) -> list[dict[str, Any]]:
    return render([path])


@cache
def _custom_schema(file_name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / file_name).read_text(encoding="utf-8"))
    return loaded


def validate_object(obj: dict[str, Any], version: str) -> None:
    """Raise if ``obj`` is not a valid object of its kind."""
    custom = CUSTOM_KINDS.get((obj["apiVersion"], obj["kind"]))
    if custom is not None:
        jsonschema.validate(obj, _custom_schema(custom))
    else:
        kubernetes_validate.validate(obj, version, strict=True)


def test_every_required_scenario_exists() -> None:
    names = {p.name.removesuffix("-values.yaml") for p in SCENARIOS}
    assert names >= EXPECTED_SCENARIOS, f"missing ci/ scenarios: {EXPECTED_SCENARIOS - names}"


@pytest.mark.parametrize("values_file", SCENARIOS, ids=lambda p: p.name)
def test_lint_strict(values_file: Path) -> None:
    report = helm_python.lint(CHART_DIR, merge_values([values_file]), strict=True, namespace="raftlog")
    # Severity 2 (warning) and 3 (error) fail under --strict; 1 is info (e.g. "icon is recommended").
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, f"helm lint --strict: {report}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values_file", SCENARIOS, ids=lambda p: p.name)
def test_rendered_objects_validate(values_file: Path, version: str) -> None:
    objects = _rendered(values_file)
    assert objects, "the chart rendered nothing"
    for obj in objects:
        try:
            validate_object(obj, version)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as error:
            pytest.fail(
                f"{values_file.name}: {obj['kind']} {obj['metadata']['name']} (k8s {version}): {error}"
            )


def test_validators_refuse_unknown_fields() -> None:
    """Negative control: a misspelt field in a core and in a custom kind fails
    validation, so the checks above can fail at all."""
    objects = _rendered(SCENARIOS[0])
    statefulset = json.loads(json.dumps(find_all(objects, "StatefulSet")[0]))
    statefulset["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {"port": 7001}}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_object(statefulset, KUBERNETES_VERSIONS[0])
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x", "namespace": "raftlog"},
        "spec": {"selector": {}, "endpoints": [{"port": "metrics", "intervall": "30s"}]},
    }
    with pytest.raises(jsonschema.ValidationError):
        validate_object(monitor, KUBERNETES_VERSIONS[0])


def test_monitoring_objects_rendered_only_when_switched_on() -> None:
    for path in SCENARIOS:
        values = merge_values([path])
        metrics = values.get("metrics", {})
        objects = _rendered(path)
        for kind, key in (("ServiceMonitor", "serviceMonitor"), ("PrometheusRule", "prometheusRule")):
            wanted = bool(metrics.get(key, {}).get("enabled", False))
            assert len(find_all(objects, kind)) == int(wanted), f"{path.name}: {kind}"


@pytest.mark.parametrize(
    "values_file",
    [p for p in SCENARIOS if find_all(_rendered(p), "PrometheusRule")],
    ids=lambda p: p.name,
)
def test_prometheus_rules_pass_promtool(values_file: Path, tmp_path: Path) -> None:
    (rule,) = find_all(_rendered(values_file), "PrometheusRule")
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}), encoding="utf-8")
    done = subprocess.run(
        [promtool(), "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"promtool check rules:\n{done.stdout}\n{done.stderr}"


def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    """Negative control for the check above."""
    rules_file = tmp_path / "rules.yaml"
    broken = {"groups": [{"name": "x", "rules": [{"alert": "X", "expr": "sum(rate(raftlog_x_total[5m])"}]}]}
    rules_file.write_text(yaml.safe_dump(broken), encoding="utf-8")
    done = subprocess.run(
        [promtool(), "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
