"""The flag_server step's parts that decide whether its figures mean what
they say, without a cluster: the loaded history is a log the flag server
accepts record by record; a stream's messages count only with the right
content; a stream that misses a write or sees one too many fails the step
instead of becoming a sample. (The step itself runs in the smoke test.)"""

from __future__ import annotations

from typing import Any

import pytest

from bench import flag_load
from bench.child_processes import split_evenly as _split
from bench.flag_streams import MARKER_FLAG, _latencies, _Listener
from flags.store import Accepted, FlagStore


@pytest.mark.parametrize(("flags", "events"), [(1, 1 + 1), (3, 4), (10, 95), (100, 1000)])
def test_the_planned_history_is_accepted_record_by_record(flags: int, events: int) -> None:
    store = FlagStore()
    for offset, record in enumerate(flag_load.plan(flags, events)):
        result = store.apply("t", offset, record.key, flag_load.record_value(record, 1_700_000_000_000))
        assert isinstance(result, Accepted), (offset, record, result)
    assert store.env_version("t", flag_load.ENV) == events
    versions = flag_load.expected_versions(flags, events)
    assert len(versions) == flags
    for flag, version in versions.items():
        assert store.flag_version("t", flag_load.ENV, flag) == version


def test_every_update_changes_the_definition() -> None:
    records = list(flag_load.plan(3, 40))
    last: dict[str, bytes] = {}
    for record in records[1:]:
        assert record.flag is not None
        value = flag_load.record_value(record, 1)
        definition = value[value.index(b'"definition"') : value.index(b'"env"')]
        assert last.get(record.flag) != definition, record
        last[record.flag] = definition


def test_a_plan_too_short_for_its_flags_is_refused() -> None:
    with pytest.raises(ValueError):
        list(flag_load.plan(10, 10))


def _listener(*kinds: str) -> _Listener:
    return _Listener(list(kinds))


def _event(kind: str, flag: str = MARKER_FLAG) -> bytes:
    # The raw bytes are protobuf; the listener only looks for these markers in them.
    return b"\n\x14" + kind.encode() + b"\x12\x10flags " + flag.encode()


def test_event_streams_count_changes_of_the_marker_flag_and_skip_keep_alives(
    capsys: pytest.CaptureFixture[str],
) -> None:
    listener = _listener("event", "event")
    listener.on_message(0, _event("keep_alive"))
    listener.on_message(0, _event("configuration_change"))
    assert listener.received[0] and not listener.received[1] and not listener.problems
    assert capsys.readouterr().out == ""  # one of two streams saw write 1: not yet reported
    listener.on_message(1, _event("configuration_change"))
    assert capsys.readouterr().out == "seen 1\n"
    listener.on_message(1, _event("configuration_change", "another-flag"))
    listener.on_message(1, _event("provider_ready"))
    assert len(listener.problems) == 2, listener.problems


def test_a_snapshot_counts_only_with_its_writes_mark() -> None:
    listener = _listener("sync")
    listener.on_message(0, b'{"flags":{"x":{"variants":{"current":"mark-000001"}}}}')
    assert not listener.problems
    listener.on_message(0, b'{"flags":{"x":{"variants":{"current":"mark-000001"}}}}')  # not write 2's
    listener.on_message(0, b'{"flags":{}}')
    assert len(listener.problems) == 2, listener.problems


def _dump(kinds: list[str], received: list[list[int]], problems: list[str] | None = None) -> dict[str, Any]:
    return {"kinds": kinds, "received": received, "problems": problems or [], "cpu_s": 0.0}


def test_latencies_are_receipt_minus_the_writes_start_per_kind() -> None:
    started = [1_000_000_000, 2_000_000_000]
    dump = _dump(["event", "sync"], [[1_005_000_000, 2_001_000_000], [1_010_000_000, 2_020_000_000]])
    found = _latencies([dump], started)
    assert found == {"event": [[5.0], [1.0]], "sync": [[10.0], [20.0]]}


def test_a_stream_that_missed_or_doubled_a_write_fails_the_figure() -> None:
    started = [1_000_000_000, 2_000_000_000]
    with pytest.raises(RuntimeError, match="saw 1 changes for 2 writes"):
        _latencies([_dump(["event"], [[1_005_000_000]])], started)
    with pytest.raises(RuntimeError, match="saw 3 changes"):
        _latencies([_dump(["sync"], [[1, 2, 3]])], started)
    with pytest.raises(RuntimeError, match="wrong messages"):
        _latencies([_dump(["sync"], [[1, 2]], ["stream 0: snapshot 1 carries mark None"])], started)


def test_streams_are_split_over_the_listeners_to_the_last_one() -> None:
    assert _split(500, 4) == [125, 125, 125, 125]
    assert _split(10, 4) == [3, 3, 2, 2]
    assert sum(_split(1001, 3)) == 1001
