"""``python -m chaos``: run one failover drill and print its report.

    python -m chaos --nemesis kill-leader,pause --duration 60 --seed 7 --nodes 3
    python -m chaos --schedule smoke          # make chaos-smoke
    python -m chaos --schedule full           # make chaos (420 s of scheduled faults)
    python -m chaos --list                    # the nemeses

The last line printed is the verdict
(``faults=N acked=A lost=L duplicated=D unexpected=U reordered=R divergent=V
failover_p50_ms=X failover_p99_ms=Y``); the exit status is 0 only when the
drill passed (chaos/report.py), 1 when it found anomalies, 2 for bad
arguments. Without ``--seed`` a random seed is drawn and printed: rerun with
it (the report's ``replay`` line) to replay the same schedule.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from pathlib import Path

from chaos.drill import DrillConfig, run_drill
from chaos.nemesis import NEMESES
from chaos.schedule import FULL, SMOKE

SCHEDULES = {
    # name: (nemeses, fault-phase seconds, shuffle each round)
    "smoke": (SMOKE, 0.0, False),
    "full": (FULL, 420.0, True),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--nemesis", help=f"comma-separated nemeses ({', '.join(NEMESES)})")
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), help="a preset drill instead of --nemesis")
    parser.add_argument("--duration", type=float, help="seconds of faults (with recovery gaps) to schedule")
    parser.add_argument("--seed", type=int, help="replays a schedule (default: random, printed)")
    parser.add_argument("--nodes", type=int, choices=(3, 5), default=3)
    parser.add_argument("--shuffle", action="store_true", help="a random nemesis order each round")
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument(
        "--rate", type=float, default=120.0, help="records per second, all producers together"
    )
    parser.add_argument("--consumers", type=int, default=2, help="members of the reading group (0: none)")
    parser.add_argument("--no-idempotence", action="store_true", help="negative control: expect duplicates")
    parser.add_argument(
        "--unsafe-ack-before-commit", action="store_true", help="negative control: expect lost writes"
    )
    parser.add_argument(
        "--unsafe-compaction-drops-latest",
        action="store_true",
        help="negative control: compaction drops some keys' latest record; expect compacted_missing",
    )
    parser.add_argument(
        "--dir", type=Path, help="where to make the drill's directory (default: the temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the drill's directory even when it passes")
    parser.add_argument("--report", type=Path, help="also write the JSON report to this file")
    parser.add_argument("--list", action="store_true", help="list the nemeses and exit")
    return parser.parse_args(argv)


def config_from(args: argparse.Namespace) -> DrillConfig:
    shuffle = args.shuffle
    if args.schedule:
        nemeses, duration, shuffle = SCHEDULES[args.schedule]
        if args.duration is not None:
            duration = args.duration
    elif args.nemesis:
        nemeses = tuple(n.strip() for n in args.nemesis.split(",") if n.strip())
        unknown = [n for n in nemeses if n not in NEMESES]
        if unknown:
            raise SystemExit(f"error: unknown nemeses {unknown}; --list shows them")
        duration = args.duration if args.duration is not None else 60.0
    else:
        raise SystemExit("error: give --nemesis NAME[,NAME] or --schedule smoke|full")
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    return DrillConfig(
        nemeses=tuple(nemeses),
        duration_s=duration,
        seed=seed,
        nodes=args.nodes,
        shuffle=shuffle,
        producers=args.producers,
        rate=args.rate,
        consumers=args.consumers,
        idempotent=not args.no_idempotence,
        unsafe_ack_before_commit=args.unsafe_ack_before_commit,
        unsafe_compaction_drops_latest=args.unsafe_compaction_drops_latest,
        workdir=args.dir,
        keep=args.keep,
        report_path=args.report,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, nemesis in NEMESES.items():
            print(f"{name:<16} {nemesis.summary}")
        return 0
    try:
        config = config_from(args)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    report = asyncio.run(run_drill(config))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
