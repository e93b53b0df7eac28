"""The node's telemetry: Prometheus metrics, OpenTelemetry traces and
structured logs (what an operator watches, traces and pages on).

- ``node_metrics``: the registry and the ``/metrics`` HTTP endpoint on the
  node's ``metrics_port``, and the per-call figures the front door records.
- ``node_collector``: figures read at scrape time from the node's replicas,
  group-commit writer, RocksDB, transport and consumer groups (nothing on
  the hot path but the counters those keep anyway).
- ``tracing``: OpenTelemetry spans, configured by the standard ``OTEL_*``
  environment variables and off unless they ask for an exporter.
- ``logs``: text or JSON log lines with node id, group, tenant and trace id.
"""
