"""Render helm/raftlog in-process (helm-python-sdk, Helm's own Go engine
through its C library) into parsed Kubernetes manifests.

    from tests.helm.chart_render import CI_DIR, render
    objs = render([CI_DIR / "five-nodes-three-zones-values.yaml"], {"replicas": 5})
    sts = find(objs, "StatefulSet")

``render(values_files, set_values)`` composes values as
``helm template raftlog helm/raftlog -n raftlog -f A -f B --set k=v`` would:
files are merged in order (maps deep-merged, anything else replaced, a null
deletes the key), then ``set_values`` (a nested dict, or dotted keys such as
``{"tls.enabled": True}``) on top. Helm then coalesces them with the chart's
values.yaml, validates them against values.schema.json (``HelmValuesError``
on a violation) and renders (``HelmRenderError`` carries a template's
``fail`` message).

Invariants: the release is always ``raftlog`` in namespace ``raftlog`` (so
pod names are raftlog-0.. and addresses
raftlog-N.raftlog-headless.raftlog.svc.cluster.local:7001); ``lookup`` sees
no cluster, so generated secrets differ on every call; the result holds
every non-empty document of every template (hooks such as the ``helm test``
Pod included, NOTES.txt excluded), in template-path order.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import helm_python
import yaml  # PyYAML (types-PyYAML in the dev extras)

__all__ = [
    "CHART_DIR",
    "CI_DIR",
    "NAMESPACE",
    "RELEASE",
    "ci_values_files",
    "find",
    "find_all",
    "merge_values",
    "render",
    "render_files",
]

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "raftlog"
CI_DIR = CHART_DIR / "ci"
RELEASE = "raftlog"
NAMESPACE = "raftlog"

# Helm's engine logs `fail` calls on stderr; the tests read them from the exception.
helm_python.disable_logging()

_chart: helm_python.Chart | None = None


def _loaded_chart() -> helm_python.Chart:
    # Loaded once per process: the chart directory does not change during a run.
    global _chart
    if _chart is None:
        _chart = helm_python.Chart.load(CHART_DIR)
    return _chart


def ci_values_files() -> list[Path]:
    """Every ci/*-values.yaml scenario, sorted."""
    return sorted(CI_DIR.glob("*-values.yaml"))


def _deep_merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if value is None:
            merged.pop(key, None)  # as Helm: a null removes the key
        elif isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _nest(set_values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``; nested dicts pass through."""
    nested: dict[str, Any] = {}
    for key, value in set_values.items():
        parts = key.split(".")
        leaf: dict[str, Any] = {}
        node = leaf
        for part in parts[:-1]:
            node[part] = {}
            node = node[part]
        node[parts[-1]] = value
        nested = _deep_merge(nested, leaf)
    return nested


def merge_values(values_files: list[Path], set_values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The user values ``-f`` files and ``--set`` would give (before the
    chart's defaults are laid under them by Helm)."""
    merged: dict[str, Any] = {}
    for path in values_files:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a values file must be a YAML mapping")
        merged = _deep_merge(merged, loaded)
    if set_values:
        merged = _deep_merge(merged, _nest(set_values))
    return merged


def render_files(values_files: list[Path], set_values: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Template path -> rendered text (NOTES.txt included)."""
    values = merge_values(values_files, set_values)
    return _loaded_chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def render(values_files: list[Path], set_values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart rendered with these values, as parsed manifests.

    Raises ``helm_python.HelmValuesError`` (schema) or
    ``helm_python.HelmRenderError`` (a template ``fail``)."""
    objects: list[dict[str, Any]] = []
    for path, text in sorted(render_files(values_files, set_values).items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects


def find_all(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Every rendered object of ``kind``."""
    return [o for o in objects if o.get("kind") == kind]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one object of ``kind`` (and ``name``); AssertionError otherwise."""
    found = [o for o in find_all(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, rendered {len(found)}"
    return found[0]
