"""``raftlog audit`` (cluster/cli_audit.py) reads the trail up to the ends it
found when it started, however slowly the fetches come back, and stops
there; ``--follow`` goes on; a trail that stops arriving is an error, not a
short listing. A stand-in consumer plays the audit partition."""

from __future__ import annotations

from dataclasses import replace
from types import TracebackType
from typing import Any, ClassVar

import pytest

from client.fetcher import ConsumerRecord
from cluster import cli, cli_audit
from cluster.audit.events import AUDIT_TOPIC, AuditEvent, encode

pytestmark = pytest.mark.timeout(30)

EVENT = AuditEvent(
    id="0" * 32,
    time_ms=1_700_000_000_000,
    node=1,
    peer="ipv4:127.0.0.1:5000",
    key_id="k1",
    key_tenant=None,
    tenant="acme",
    method="CreateTopic",
)


class StopFollowing(Exception):
    """Ends a ``--follow`` run in the test (a user's Ctrl-C)."""


class SlowTrail:
    """The audit partition: ``stored`` events, fetched two at a time after
    ``slow_polls`` empty polls before each (a slow leader); one more event is
    written once the reader has its ends; and with ``stall`` no record ever
    arrives."""

    stored: ClassVar[list[AuditEvent]] = [replace(EVENT, id=f"{i:032x}") for i in range(5)]
    slow_polls = 3
    stall = False

    def __init__(self, _bootstrap: list[str], **_identity: Any) -> None:
        self.log = list(self.stored)
        self.pos = 0
        self.empty_left = self.slow_polls
        self.polls_at_end = 0
        self.metadata = self

    async def __aenter__(self) -> SlowTrail:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def partition_count(self, topic: str) -> int:
        assert topic == AUDIT_TOPIC
        return 1

    def assign(self, partitions: list[tuple[str, int]]) -> None:
        assert partitions == [(AUDIT_TOPIC, 0)]

    async def seek_to_end(self) -> None:
        self.pos = len(self.log)

    async def seek_to_beginning(self) -> None:
        self.pos = 0
        self.log.append(replace(EVENT, id="f" * 32))  # written after the reader started

    def position(self, tp: tuple[str, int]) -> int:
        return self.pos

    async def poll(self, timeout_s: float = 1.0) -> list[ConsumerRecord]:
        if self.stall:
            return []
        if self.pos >= len(self.log):
            self.polls_at_end += 1
            if self.polls_at_end > 3:
                raise StopFollowing
            return []
        if self.empty_left:
            self.empty_left -= 1
            return []
        self.empty_left = self.slow_polls
        batch = self.log[self.pos : self.pos + 2]
        records = [
            ConsumerRecord(AUDIT_TOPIC, 0, self.pos + i, e.time_ms, e.id.encode(), encode(e))
            for i, e in enumerate(batch)
        ]
        self.pos += len(batch)
        return records


@pytest.fixture
def trail(monkeypatch: pytest.MonkeyPatch) -> type[SlowTrail]:
    monkeypatch.setattr(cli_audit, "Consumer", SlowTrail)
    monkeypatch.setattr(cli_audit, "POLL_S", 0.0)
    monkeypatch.setenv("RAFTLOG_API_KEY", "rlk_test")
    return SlowTrail


def printed_ids(out: str) -> list[str]:
    return [line.split('"id":"')[1][:32] for line in out.splitlines()]


def test_the_whole_trail_is_read_however_slow_the_fetches(
    trail: type[SlowTrail], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--bootstrap", "127.0.0.1:1", "audit", "--json"]) == 0
    # Every event stored when it started, in order; not the one written after.
    assert printed_ids(capsys.readouterr().out) == [e.id for e in trail.stored]


def test_follow_goes_on_past_the_ends(trail: type[SlowTrail], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(StopFollowing):
        cli.main(["--bootstrap", "127.0.0.1:1", "audit", "--json", "--follow"])
    assert printed_ids(capsys.readouterr().out) == [e.id for e in trail.stored] + ["f" * 32]


def test_a_trail_that_stops_arriving_is_an_error_not_a_short_listing(
    trail: type[SlowTrail], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(trail, "stall", True)
    monkeypatch.setattr(cli_audit, "STALL_S", 0.2)
    assert cli.main(["--bootstrap", "127.0.0.1:1", "audit"]) == 1
    err = capsys.readouterr().err
    assert "stopped arriving (partition 0: offset 0 of 5)" in err and "incomplete" in err


def test_a_coalesced_event_says_how_many_calls_it_stands_for() -> None:
    refused = replace(EVENT, outcome="refused", code="PERMISSION_DENIED", reason="OPERATOR_KEY_REQUIRED")
    assert "REFUSED PERMISSION_DENIED OPERATOR_KEY_REQUIRED (999 calls) CreateTopic" in cli_audit.render(
        replace(refused, count=999)
    )
    assert "calls)" not in cli_audit.render(refused)
