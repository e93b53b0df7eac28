"""The CLI's one duration parser (cluster/cli_duration.py): the forms it
reads, the ones it refuses (a usage error before anything is sent), its
limit (the server's), and that every duration flag of ``raftlog`` —
``key create --ttl``, ``key rotate --grace/--ttl``, ``audit --since`` —
reads through it."""

from __future__ import annotations

import argparse

import pytest

from cluster import cli
from cluster.cli_duration import MAX_DURATION_S, duration_seconds
from cluster.frontend import tenant_admin


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0),
        ("45", 45),
        ("45s", 45),
        ("15m", 900),
        ("12h", 43_200),
        ("7d", 604_800),
        (" 7D ", 604_800),
        ("36500d", MAX_DURATION_S),
    ],
)
def test_the_forms_it_reads(text: str, seconds: int) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "1.5h", "-1d", "+1d", "1w", "1h30m", "1 h", "36501d", "9" * 30])
def test_anything_else_is_refused_with_the_forms_that_work(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        duration_seconds(text)
    assert repr(text) in str(refused.value)
    assert "30s" in str(refused.value) or "100 years" in str(refused.value)


def test_its_limit_is_the_servers() -> None:
    assert MAX_DURATION_S == tenant_admin.MAX_DURATION_S


def _types(parser: argparse.ArgumentParser, path: list[str]) -> dict[str, object]:
    """The ``type`` of each option of the subcommand at ``path``."""
    for word in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return {o: a.type for a in parser._actions for o in a.option_strings}


@pytest.mark.parametrize(
    ("path", "option"),
    [
        (["key", "create"], "--ttl"),
        (["key", "rotate"], "--grace"),
        (["key", "rotate"], "--ttl"),
        (["audit"], "--since"),
    ],
)
def test_every_duration_flag_reads_through_it(path: list[str], option: str) -> None:
    assert _types(cli.build_parser(), path)[option] is duration_seconds
