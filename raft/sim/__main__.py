"""``python -m raft.sim``: run seeds of the simulator, print what failed.

The last line is always ``seeds=N steps=M faults=K violations=V``; the exit
status is 0 exactly when V is 0. Every failing seed is printed with its
violations and the command that replays it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from raft.sim.cluster import HAZARDS
from raft.sim.runner import DEFAULT_STEPS, run_profiles


def parse_seeds(text: str) -> range:
    """``A-B`` (inclusive) or a single ``N``."""
    try:
        if "-" in text:
            low, high = text.split("-", 1)
            first, last = int(low), int(high)
        else:
            first = last = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be N or A-B, got {text!r}") from None
    if first < 0 or last < first:
        raise argparse.ArgumentTypeError(f"bad seed range {text!r}")
    return range(first, last + 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raft.sim", description=__doc__)
    parser.add_argument(
        "--seeds", type=parse_seeds, default=parse_seeds("1-100"), help="N or A-B (inclusive)"
    )
    parser.add_argument("--nodes", type=int, choices=(3, 5), default=3)
    parser.add_argument("--profile", choices=("safety", "liveness", "all", "none"), default="all")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="events per seed before healing")
    parser.add_argument("--verbose", action="store_true", help="one line per seed and profile")
    parser.add_argument("--trace", action="store_true", help="print every event (use with one seed)")
    # Test-only: break one rule of the core to prove the checker notices.
    parser.add_argument(
        "--hazard", action="append", choices=sorted(HAZARDS), default=[], help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)

    hazards = frozenset(args.hazard)
    seeds = steps = faults = violations = 0
    for seed in args.seeds:
        seeds += 1
        for result in run_profiles(seed, args.nodes, args.profile, hazards, args.steps, args.trace):
            steps += result.steps
            faults += result.faults
            violations += len(result.violations)
            if args.trace:
                print(f"--- trace seed={seed} profile={result.profile}")
                for line in result.trace:
                    print(line)
            if args.verbose:
                print(
                    f"seed={seed} profile={result.profile} steps={result.steps} faults={result.faults} "
                    f"violations={len(result.violations)} applied={result.stats.get('max_applied', 0)} "
                    f"fingerprint={result.fingerprint}"
                )
            if result.violations:
                print(f"FAIL seed={seed} profile={result.profile} nodes={result.nodes}")
                for violation in result.violations:
                    print(f"  {violation}")
                print(f"  replay: {result.replay_command()}")
            sys.stdout.flush()
    print(f"seeds={seeds} steps={steps} faults={faults} violations={violations}")
    return 0 if violations == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
