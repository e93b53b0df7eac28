"""The ofrep step's parts that decide whether its figures mean what they
say, without a cluster: the load client frames HTTP answers right and never
hides an unexpected status; exposure batches never repeat a pair (the
server's dedup would otherwise shrink the figure); the SSE listener finds
events in chunked bytes and a stream that misses or doubles a write fails
the figure; the experiment's records give, through the real attribution
and results code, exactly the counts the step checks. (The step itself runs
in the smoke test.)"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bench import experiment_figures, ofrep_figures, ofrep_load
from bench.sse_streams import SseListener, _Stream, latencies_ms
from flags.experiments.attribution import Attribution, parse_exposure, parse_tracking
from flags.experiments.model import Experiment, Metric, MetricType, Offsets, State
from flags.experiments.results import results_document
from flags.model import validate_flag_set

# --- the HTTP load client ----------------------------------------------------------------


def _response(status: int, body: bytes = b"", extra: str = "") -> bytes:
    length = "" if status == 304 else f"Content-Length: {len(body)}\r\n"
    return f"HTTP/1.1 {status} X\r\n{length}{extra}\r\n".encode() + body


def test_a_response_is_framed_by_its_content_length_and_waits_for_the_whole_body() -> None:
    raw = _response(200, b'{"flags":[]}', 'ETag: "abc"\r\n')
    for cut in range(len(raw)):
        assert ofrep_load.frame(raw[:cut]) is None, cut
    status, head, body, used = ofrep_load.frame(raw + _response(304)) or (0, b"", b"", 0)
    assert (status, body, used) == (200, b'{"flags":[]}', len(raw))
    assert ofrep_load.header(head, b"etag") == '"abc"'
    # The next (pipelined) answer is left for the next frame: a 304 has no body.
    assert ofrep_load.frame((raw + _response(304))[used:])[:3] == (304, b"HTTP/1.1 304 X", b"")  # type: ignore[index]


def test_content_length_is_found_in_any_case_and_a_body_without_one_is_an_error() -> None:
    raw = b"HTTP/1.1 202 Accepted\r\ncontent-LENGTH: 2\r\n\r\nok"
    assert ofrep_load.frame(raw) == (202, raw[:-6], b"ok", len(raw))
    with pytest.raises(ofrep_load.ResponseError, match="without Content-Length"):
        ofrep_load.frame(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    with pytest.raises(ofrep_load.ResponseError, match=r"not an HTTP/1\.1"):
        ofrep_load.frame(b"HTTP/1.0 200 OK\r\n\r\n")


def test_requests_are_complete_http_posts() -> None:
    body = ofrep_load.bulk_body(7)
    raw = ofrep_load.http_request("h:1", "/p", "rlc_k", body, [("If-None-Match", '"e"')])
    head, _, sent = raw.partition(b"\r\n\r\n")
    assert sent == body and json.loads(body)["context"]["targetingKey"] == "user-0000007"
    assert head.split(b"\r\n")[0] == b"POST /p HTTP/1.1"
    assert f"Content-Length: {len(body)}".encode() in head and b'If-None-Match: "e"' in head


def test_exposure_batches_never_repeat_a_targeting_key_and_flag_pair() -> None:
    flags = ofrep_figures.exposure_flags()
    seen: set[tuple[str, str]] = set()
    for batch in range(5):
        items = json.loads(ofrep_load.exposure_batch(batch * 300, 300, flags))["exposures"]
        for item in items:
            pair = (item["targetingKey"], item["flag"])
            assert pair not in seen, pair
            seen.add(pair)
            assert (item["flag"], item["variant"]) in flags
    assert len(seen) == 1500


def _result(statuses: dict[str, int], seconds: float = 2.0, **extra: Any) -> dict[str, Any]:
    return {
        "statuses": statuses,
        "requests": sum(statuses.values()),
        "seconds": seconds,
        "cpu_s": 0.5,
        "recorded": 0,
        "latency": {"p50_ms": 1.0, "p99_ms": 3.0},
        "error": None,
        **extra,
    }


def test_the_rate_is_requests_over_the_childrens_window_and_other_statuses_fail_it() -> None:
    spec = ofrep_load.LoadSpec(job="revalidate", key="k", processes=2)
    found = ofrep_load.summarize(spec, [_result({"304": 3000}), _result({"304": 1000})], 2.1, 1.0)
    assert found["rps"] == 2000 and found["flag_server_cpu_us_per_request"] == 250.0
    with pytest.raises(RuntimeError, match="other than 304"):
        ofrep_load.summarize(spec, [_result({"304": 10, "200": 1})], 2.0, None)
    with pytest.raises(RuntimeError, match="other than 304"):
        ofrep_load.summarize(spec, [_result({"429": 5})], 2.0, None)
    with pytest.raises(RuntimeError, match="failed"):
        ofrep_load.summarize(spec, [_result({"304": 10}, error="boom")], 2.0, None)


def test_the_bench_environment_is_a_valid_set_of_100_flags_with_the_exposed_variants() -> None:
    document = ofrep_figures.flag_set()
    flag_set = validate_flag_set(document)
    assert len(document["flags"]) == ofrep_figures.FLAGS == 100
    assert flag_set is not None
    for flag, variant in ofrep_figures.exposure_flags():
        assert variant in document["flags"][flag]["variants"]


# --- the SSE listener ----------------------------------------------------------------------


def _event(version: int) -> bytes:
    data = json.dumps({"etag": f'"{version}"', "lastModified": 1, "type": "refetchEvaluation"})
    return f"id: {version}\nevent: message\ndata: {data}\n\n".encode()


def _chunk(payload: bytes) -> bytes:
    return f"{len(payload):x}\r\n".encode() + payload + b"\r\n"


def test_events_are_found_in_chunked_bytes_however_they_are_split(capsys: pytest.CaptureFixture[str]) -> None:
    async def run() -> SseListener:
        listener = SseListener(1)
        stream = _Stream(listener, 0, b"")
        wire = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            + _chunk(b": ping\n\n")
            + _chunk(_event(5))
            + _chunk(_event(9))
        )
        for i in range(0, len(wire), 7):  # arbitrary read boundaries
            stream.data_received(wire[i : i + 7])
        return listener

    listener = asyncio.run(run())
    assert listener.connected == 1 and not listener.problems
    assert len(listener.received[0]) == 2 and listener.ids == [9]
    assert capsys.readouterr().out == "seen 1\nseen 2\n"


def test_a_refused_stream_and_wrong_events_are_problems() -> None:
    async def run() -> SseListener:
        listener = SseListener(2)
        _Stream(listener, 0, b"").data_received(b"HTTP/1.1 401 Unauthorized\r\n\r\n{}")
        stream = _Stream(listener, 1, b"")
        stream.data_received(b"HTTP/1.1 200 OK\r\n\r\n" + _event(5) + _event(5))
        stream.data_received(b'id: 7\nevent: message\ndata: {"type":"other"}\n\n')
        return listener

    listener = asyncio.run(run())
    assert listener.connected == 1
    assert len(listener.problems) == 3, listener.problems


def test_a_stream_that_missed_or_doubled_a_write_fails_the_figure() -> None:
    started = [1_000_000_000, 2_000_000_000]
    dump = {"received": [[1_010_000_000, 2_005_000_000]], "problems": [], "cpu_s": 0.0}
    assert latencies_ms([dump], started) == [[10.0], [5.0]]
    with pytest.raises(RuntimeError, match="saw 1 events for 2 writes"):
        latencies_ms([{"received": [[1]], "problems": [], "cpu_s": 0}], started)
    with pytest.raises(RuntimeError, match="saw 3 events"):
        latencies_ms([{"received": [[1, 2, 3]], "problems": [], "cpu_s": 0}], started)
    with pytest.raises(RuntimeError, match="wrong events"):
        latencies_ms([{"received": [[1, 2]], "problems": ["x"], "cpu_s": 0}], started)


# --- the experiment's records ------------------------------------------------------------


def _experiment() -> Experiment:
    return Experiment(
        env=ofrep_figures.ENV,
        name=experiment_figures.EXPERIMENT,
        flag=experiment_figures.EXPERIMENT_FLAG,
        control="control",
        metrics=(Metric(experiment_figures.METRIC, MetricType.CONVERSION),),
        state=State.RUNNING,
        who="0123456789abcdef",
        when=1,
        start_ms=1,
        stop_ms=None,
        start_offsets=Offsets(0, 0),
        stop_offsets=None,
    )


@pytest.mark.parametrize("exposures", [20, 2000, 2002])
def test_the_written_records_give_exactly_the_results_the_step_checks(exposures: int) -> None:
    attribution = Attribution(_experiment())
    env = ofrep_figures.ENV
    for offset, (_, value) in enumerate(experiment_figures.exposure_records(env, exposures, 1000)):
        attribution.add_exposure(offset, parse_exposure(value))
    for offset, (_, value) in enumerate(experiment_figures.tracking_records(env, exposures, 1002)):
        attribution.add_tracking(offset, parse_tracking(value))
    flag = validate_flag_set(
        {"flags": {experiment_figures.EXPERIMENT_FLAG: experiment_figures.experiment_flag()}}
    )
    document = results_document(_experiment(), attribution, flag.flags[experiment_figures.EXPERIMENT_FLAG])
    experiment_figures.check_results(document, exposures)
    assert document["analysis"]["exposures"] == exposures
    with pytest.raises(RuntimeError):
        experiment_figures.check_results(document, exposures + 2)


def test_paced_batches_fall_due_at_the_offered_rate_and_flat_out_ones_at_once() -> None:
    requests = [b"a", b"b", b"c", b"d"]
    paced = list(ofrep_load._schedule(requests, 100.0, 1000, 4000.0))
    assert paced == [(100.0, b"a"), (100.25, b"b"), (100.5, b"c"), (100.75, b"d")]
    assert [due for due, _ in ofrep_load._schedule(requests, 100.0, 1000, 0.0)] == [0.0] * 4
