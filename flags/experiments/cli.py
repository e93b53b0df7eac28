"""``raftlog experiment ...``: A/B experiments on the flag server (``ExperimentService``).

``cluster/cli.py`` builds the ``experiment`` subcommand with ``add_commands``
and runs the chosen command's ``sync`` function; connection, key and tenant
work exactly as for ``raftlog flags`` (flags/cli.py: ``RAFTLOG_FLAGS`` or
``--server``, the cluster API key, ``--tenant``/``RAFTLOG_TENANT`` for an
operator key). Commands:

- ``experiment create ENV NAME --flag KEY --control VARIANT --metric
  EVENT[:conversion|:value]`` (``--metric`` repeatable; a bare event is a
  conversion metric): a draft;
- ``experiment start ENV NAME``: analysis counts exposures from now on;
- ``experiment stop ENV NAME``: ... up to now;
- ``experiment list ENV``: one line per experiment;
- ``experiment results ENV NAME [--json]``: a table per metric, or the
  results JSON (flags/experiments/results.py documents its fields) on stdout.
  A sample-ratio mismatch is reported on stderr as a WARNING line either way.

Exit status: 0 on success, 1 when the flag server refused or could not be
reached (stderr: ``raftlog: REASON: message``), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from flags.cli import (
    DEFAULT_FLAGS_SERVER,
    FLAGS_SERVER_ENV,
    FlagsConnection,
    FlagsUsageError,
    run_connected,
)
from flags.experiments.model import InvalidExperiment, parse_metric
from raftlog.flags.v1 import flags_pb2, flags_pb2_grpc

__all__ = ["add_commands"]


class ExperimentConnection(FlagsConnection):
    """A ``FlagsConnection`` whose calls go to ``ExperimentService``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.stub = flags_pb2_grpc.ExperimentServiceStub(self.channel)  # type: ignore[assignment]


Command = Callable[[ExperimentConnection, argparse.Namespace], Awaitable[int]]


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def _describe(e: flags_pb2.Experiment) -> str:
    metrics = ", ".join(f"{m.event}:{m.type}" for m in e.metrics)
    return f"{e.environment}/{e.name}: {e.state}, flag {e.flag}, control {e.control}, metrics {metrics}"


async def _create(conn: ExperimentConnection, args: argparse.Namespace) -> int:
    try:
        metrics = [parse_metric(text) for text in args.metric]
    except InvalidExperiment as error:
        raise FlagsUsageError(str(error)) from None
    answer = await conn.call(
        "CreateExperiment",
        flags_pb2.CreateExperimentRequest(
            environment=args.env,
            name=args.name,
            flag=args.flag,
            control=args.control,
            metrics=[flags_pb2.ExperimentMetric(event=m.event, type=m.type.value) for m in metrics],
        ),
    )
    _say(f"created {_describe(answer.experiment)}")
    return 0


async def _start(conn: ExperimentConnection, args: argparse.Namespace) -> int:
    answer = await conn.call(
        "StartExperiment", flags_pb2.StartExperimentRequest(environment=args.env, name=args.name)
    )
    offsets = answer.experiment.start_offsets
    _say(f"started {args.env}/{args.name} (from exposures@{offsets.exposures}, tracking@{offsets.tracking})")
    return 0


async def _stop(conn: ExperimentConnection, args: argparse.Namespace) -> int:
    answer = await conn.call(
        "StopExperiment", flags_pb2.StopExperimentRequest(environment=args.env, name=args.name)
    )
    offsets = answer.experiment.stop_offsets
    _say(f"stopped {args.env}/{args.name} (up to exposures@{offsets.exposures}, tracking@{offsets.tracking})")
    return 0


async def _list(conn: ExperimentConnection, args: argparse.Namespace) -> int:
    answer = await conn.call("ListExperiments", flags_pb2.ListExperimentsRequest(environment=args.env))
    for experiment in answer.experiments:
        print(_describe(experiment))
    return 0


def _number(value: Any, percent: bool = False) -> str:
    if value is None:
        return "-"
    if percent:
        return f"{100 * value:.2f}%"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(results: dict[str, Any]) -> str:
    lines = [
        f"experiment {results['environment']}/{results['experiment']} ({results['state']}), "
        f"flag {results['flag']}, control {results['control']}, {results['users']} users",
        f"sample ratio check p = {_number(results['srm_p_value'])} against weights "
        + ", ".join(f"{k}={v:g}" for k, v in results["weights"].items()),
    ]
    for metric in results["metrics"]:
        conversion = metric["type"] == "conversion"
        lines.append("")
        lines.append(f"{metric['event']} ({metric['type']})")
        header = (
            "variant",
            "users",
            "conv." if conversion else "mean",
            "rate" if conversion else "",
            "lift",
            "95% interval",
            "p-value",
            "P(beats control)",
        )
        rows = [header]
        for row in metric["variants"]:
            interval = (
                "-"
                if row["lift_ci_low"] is None
                else f"[{_number(row['lift_ci_low'], True)}, {_number(row['lift_ci_high'], True)}]"
            )
            rows.append(
                (
                    row["variant"],
                    str(row["users"]),
                    _number(row["conversions"] if conversion else row["mean"]),
                    _number(row["rate"], True) if conversion else "",
                    _number(row["lift"], True),
                    interval,
                    _number(row["p_value"]),
                    _number(row["chance_to_beat_control"], True),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines.extend(
            "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
        )
    return "\n".join(lines)


async def _results(conn: ExperimentConnection, args: argparse.Namespace) -> int:
    answer = await conn.call(
        "GetExperimentResults", flags_pb2.GetExperimentResultsRequest(environment=args.env, name=args.name)
    )
    results = json.loads(answer.results_json)
    if results.get("srm_warning"):
        _say(
            f"WARNING: sample ratio mismatch (p = {results['srm_p_value']:.3g}): users per variant do not "
            "fit the flag's weights; assignment or exposure logging is broken, do not trust these results"
        )
    print(json.dumps(results, indent=2) if args.json else _table(results))
    return 0


def run_command(args: argparse.Namespace) -> int:
    """Run ``args.experiment_command``; the exit status."""
    return run_connected(args, args.experiment_command, ExperimentConnection)


def add_commands(parser: argparse.ArgumentParser) -> None:
    """Fill ``parser`` (``raftlog experiment``) with the experiment commands."""
    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        help=f"the flag server (default: ${FLAGS_SERVER_ENV} or {DEFAULT_FLAGS_SERVER})",
    )
    commands = parser.add_subparsers(dest="experiment_action", required=True)

    def command(name: str, function: Command, help_text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(name, help=help_text)
        sub.set_defaults(sync=run_command, experiment_command=function)
        return sub

    create = command("create", _create, "create a draft experiment on a flag")
    create.add_argument("env")
    create.add_argument("name")
    create.add_argument("--flag", required=True, metavar="KEY", help="the flag whose variants are compared")
    create.add_argument("--control", required=True, metavar="VARIANT", help="the control variant")
    create.add_argument(
        "--metric",
        required=True,
        action="append",
        metavar="EVENT[:conversion|:value]",
        help="a tracking event to compare (repeatable); conversion by default",
    )
    for name, function, help_text in (
        ("start", _start, "start analysing: exposures from now on count"),
        ("stop", _stop, "stop analysing: exposures from now on do not count"),
    ):
        sub = command(name, function, help_text)
        sub.add_argument("env")
        sub.add_argument("name")
    command("list", _list, "an environment's experiments").add_argument("env")
    results = command("results", _results, "the results now, per metric and variant")
    results.add_argument("env")
    results.add_argument("name")
    results.add_argument("--json", action="store_true", help="the results JSON on stdout")
