"""Smoke test of the benchmark harness: ``python -m bench --profile smoke``
runs every step (references, Raft core, flag evaluator, flag server,
OFREP, cluster figures, compaction, failover, density, tenancy) on tiny settings and must write a report with every promised key
holding a sane number. The figures themselves mean nothing at this size;
``make bench`` measures them."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import report

REPO = Path(__file__).resolve().parent.parent.parent

# The keys issue 6 names, and the sanity range of each (smoke settings).
POSITIVE = (
    "produce_mb_s",
    "produce_records_s",
    "produce_small_records_s",
    "produce_p50_ms",
    "produce_p99_ms",
    "produce_p999_ms",
    "e2e_p99_ms",
    "consume_mb_s",
    "failover_p50_ms",
    "failover_p99_ms",
    "raft_core_proposals_s",
    "compaction_mb_s",
    "produce_p99_without_compaction_ms",
    "produce_p99_during_compaction_ms",
    "flag_eval_static_us",
    "flag_eval_targeting_us",
    "flag_eval_fractional_us",
    "flag_rpc_evals_s",
    "flag_propagation_p50_ms",
    "flag_propagation_p99_ms",
    "flag_server_bootstrap_s",
    "flag_server_rss_mb",
    "ofrep_bulk_rps",
    "ofrep_304_rps",
    "flag_sse_propagation_p50_ms",
    "flag_sse_propagation_p99_ms",
    "exposures_per_s",
    "experiment_results_ms",
    "experiment_results_p50_ms",
    "experiment_catchup_s",
    "noisy_neighbor_p99_ratio",
    "quota_accuracy",
    "tls_produce_ratio",
    "metrics_produce_ratio",
    "tracing_produce_ratio",
    "produce_vs_disk_ratio",
)
REFERENCE = (
    "fsync_per_s",
    "rocksdb_sync_mb_s",
    "grpc_echo_rpc_s",
    "grpc_echo_mb_s",
    "flagd_core_static_us",
    "flagd_core_targeting_us",
    "flagd_core_fractional_us",
    "aiohttp_304_rps",
    "aiohttp_304_cpu_us",
)


def _sane(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.timeout(200)
def test_smoke_run_writes_every_key_with_a_sane_number(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--profile", "smoke", "--out", str(out), "--dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=190,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr[-4000:]}"
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["errors"] == {}
    for key in POSITIVE:
        assert _sane(document[key]) and document[key] > 0, f"{key} = {document[key]!r}"
    assert _sane(document["idle_cpu_pct_per_node"]) and 0 <= document["idle_cpu_pct_per_node"] < 200
    # Every figure of the table is in the document (memory per partition is
    # null here: the smoke profile starts no baseline cluster).
    assert {key for key, _, _ in report.FIGURES} <= set(document)
    assert document["produce_p50_ms"] <= document["produce_p99_ms"] <= document["produce_p999_ms"]
    assert document["failover_p50_ms"] <= document["failover_p99_ms"]
    # The compaction step cleaned the whole filled range on its pass.
    compaction = document["details"]["compaction"]
    assert compaction["range_bytes"] >= 1e6 and compaction["compacted_bytes_by_replica"], compaction
    assert compaction["latency_during_compaction"]["samples"] >= 1
    # The flag figures rest on identical answers from both evaluators.
    assert document["flags_identical"] is True
    # The flag server: every stream saw every write; a real process's memory.
    assert document["flag_propagation_p50_ms"] <= document["flag_propagation_p99_ms"]
    propagation = document["details"]["flag_server"]["propagation"]
    assert propagation["samples"] == propagation["streams"] * propagation["writes"] > 0, propagation
    assert 10 < document["flag_server_rss_mb"] < 2000
    # The OFREP step: every SSE stream saw every write; every exposure sent
    # is in the log; the experiment's results counted every record.
    ofrep = document["details"]["ofrep"]
    assert ofrep["sse"]["samples"] == ofrep["sse"]["streams"] * ofrep["sse"]["writes"] > 0, ofrep["sse"]
    assert ofrep["exposures"]["in_log"] == ofrep["exposures"]["sent"] > 0, ofrep["exposures"]
    assert ofrep["exposures"]["paced"]["in_log"] == ofrep["exposures"]["paced"]["sent"] > 0
    assert ofrep["bulk"]["exposures_in_log"] > 0 and ofrep["revalidate"]["requests"] > 0
    assert document["experiment_results_p50_ms"] <= document["experiment_results_ms"]
    for key in REFERENCE:
        value = document["reference"][key]
        assert _sane(value) and value > 0, f"reference {key} = {value!r}"
    assert len(document["commit"]) == 40
    assert document["machine"]["cores"] >= 1 and document["machine"]["memory_gib"] > 0
    assert document["parameters"]["replication_factor"] == 3
    # Every target is judged, and a miss is listed.
    assert set(document["targets"]) == {t.key for t in report.TARGETS}
    assert document["missed"] == [k for k, t in document["targets"].items() if not t["met"]]
    table = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "| figure |" in table and "this machine's reference" in table
    # The harness itself stays small: seconds of setup around tiny runs (the
    # bound is loose: other tests share the machine's cores; the telemetry
    # step starts three more small clusters).
    assert elapsed < 120, f"the smoke run took {elapsed:.0f} s"


def test_the_report_says_missed_and_lists_the_miss() -> None:
    document = report.assemble(
        {"produce_mb_s": 50.0, "failover_p99_ms": 900.0},
        {"fsync_per_s": 1000},
        {},
        {},
        meta={"commit": "0" * 40, "dirty": False, "machine": {}, "profile": "test", "wall_s": 1},
    )
    assert document["targets"]["produce_mb_s"] == {"target": "≥ 100", "value": 50.0, "met": False}
    assert document["targets"]["failover_p99_ms"]["met"] is True
    assert "produce_mb_s" in document["missed"] and "failover_p99_ms" not in document["missed"]
    # Figures never measured are null, and count as not met.
    assert document["consume_mb_s"] is None and "consume_mb_s" in document["missed"]
    table = report.markdown(document)
    assert "**MISSED**" in table and "**not measured**" in table
