"""The OFREP port's options of ``raftlog flags serve`` (``--ofrep-*``).

Kept apart from flags/server.py so the process module stays small; imports
nothing heavy (the server parses its options before its big imports, so a
stop signal is handled from the start).

Invariants: ``ofrep_options_from_args`` accepts only a port in 0..65535 and,
per limit, a rate of 0 (no limit) or more with a burst of at least 1 when
limited; anything else raises ``ValueError`` with the message to show.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flags.rate_limit import Rate

if TYPE_CHECKING:
    from flags.ofrep import OfrepLimits

__all__ = ["DEFAULT_OFREP_PORT", "OfrepOptions", "add_ofrep_arguments", "ofrep_options_from_args"]

DEFAULT_OFREP_PORT = 8016
DEFAULT_KEY_RATE = 1000.0
DEFAULT_KEY_BURST = 2000.0
DEFAULT_ADDRESS_RATE = 50.0
DEFAULT_ADDRESS_BURST = 100.0


@dataclass(frozen=True, slots=True)
class OfrepOptions:
    port: int = DEFAULT_OFREP_PORT
    key_rate: float = DEFAULT_KEY_RATE
    """Requests a second one SDK key may make (0: no limit)."""
    key_burst: float = DEFAULT_KEY_BURST
    address_rate: float = DEFAULT_ADDRESS_RATE
    """Requests a second one client address may make with one key (0: no limit)."""
    address_burst: float = DEFAULT_ADDRESS_BURST
    public_url: str | None = None
    trust_forwarded_for: bool = False

    def limits(self) -> OfrepLimits:
        from flags.ofrep import OfrepLimits

        def rate(per_second: float, burst: float) -> Rate:
            return Rate(per_second, burst) if per_second > 0 else Rate.unlimited()

        return OfrepLimits(
            per_key=rate(self.key_rate, self.key_burst),
            per_address=rate(self.address_rate, self.address_burst),
            trust_forwarded_for=self.trust_forwarded_for,
        )


def add_ofrep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ofrep-port",
        type=int,
        default=DEFAULT_OFREP_PORT,
        help="HTTP OFREP evaluation and tracking for mobile and web apps (0: any free)",
    )
    for scope, rate, burst, what in (
        ("key", DEFAULT_KEY_RATE, DEFAULT_KEY_BURST, "one SDK key"),
        ("address", DEFAULT_ADDRESS_RATE, DEFAULT_ADDRESS_BURST, "one client address with one key"),
    ):
        parser.add_argument(
            f"--ofrep-{scope}-rate",
            type=float,
            default=rate,
            metavar="PER_S",
            help=f"OFREP requests per second {what} may make, over time (0: no limit; default {rate:g})",
        )
        parser.add_argument(
            f"--ofrep-{scope}-burst",
            type=float,
            default=burst,
            metavar="N",
            help=f"OFREP requests {what} may make at once (default {burst:g})",
        )
    parser.add_argument(
        "--ofrep-public-url",
        default=None,
        metavar="URL",
        help="the OFREP port's URL as apps reach it (e.g. https://flags.example.com): bulk answers then "
        "name the change-ping stream by absolute URL instead of by path",
    )
    parser.add_argument(
        "--ofrep-trust-forwarded-for",
        action="store_true",
        help="rate-limit by the first X-Forwarded-For address (only behind a proxy that sets it)",
    )


def ofrep_options_from_args(args: argparse.Namespace) -> OfrepOptions:
    """Raises ``ValueError`` (the message says what to fix)."""
    if not 0 <= args.ofrep_port <= 65535:
        raise ValueError(f"--ofrep-port {args.ofrep_port}: a port is 0 (any free one) to 65535")
    for scope in ("key", "address"):
        rate, burst = getattr(args, f"ofrep_{scope}_rate"), getattr(args, f"ofrep_{scope}_burst")
        if not rate >= 0 or (rate > 0 and not burst >= 1):  # (written so that NaN fails too)
            raise ValueError(
                f"--ofrep-{scope}-rate {rate:g} --ofrep-{scope}-burst {burst:g}: "
                "the rate is 0 (no limit) or more, and a limited rate needs a burst of at least 1"
            )
    return OfrepOptions(
        port=args.ofrep_port,
        key_rate=args.ofrep_key_rate,
        key_burst=args.ofrep_key_burst,
        address_rate=args.ofrep_address_rate,
        address_burst=args.ofrep_address_burst,
        public_url=args.ofrep_public_url or None,
        trust_forwarded_for=args.ofrep_trust_forwarded_for,
    )
