"""``bench.transport_cost`` measures what it says: both transports carry
every byte to a receiver in another process, and the figures are per
message and positive. (The figures' values are the bench's business, not
this test's.)"""

from __future__ import annotations

import pytest

from bench import transport_cost


def test_both_transports_deliver_every_byte_and_report_per_message_cpu() -> None:
    result = transport_cost.measure(sizes=(1000, 70_000), messages=40)
    runs = result["runs"]
    assert [(r["kind"], r["message_bytes"]) for r in runs] == [
        ("grpc", 1000),
        ("frames", 1000),
        ("grpc", 70_000),
        ("frames", 70_000),
    ]
    for run in runs:
        assert run["messages"] == 40
        # measure_one raises unless the receiver read size * messages bytes.
        assert run["send_cpu_ms"] > 0 and run["receive_cpu_ms"] > 0 and run["wall_ms"] > 0
    assert set(result["frames_vs_grpc_cpu"]) == {"1000", "70000"}
    assert all(ratio is not None and ratio > 0 for ratio in result["frames_vs_grpc_cpu"].values())


def test_a_frame_split_across_reads_is_reassembled() -> None:
    """Frames far larger than a socket read arrive in pieces: the receiver
    must count whole frames only (a miscount fails the byte check)."""
    run = transport_cost.measure_one("frames", 3 << 20, messages=3)
    assert run["message_bytes"] == 3 << 20


def test_an_unknown_transport_is_refused() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        transport_cost.measure_one("carrier-pigeon", 10, 1)
