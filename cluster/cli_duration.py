"""How the ``raftlog`` CLI reads a duration: ``30s``, ``15m``, ``12h``,
``7d`` or plain seconds (``raftlog key create --ttl``, ``key rotate
--grace/--ttl``: cluster/cli_tenants.py; ``raftlog audit --since``:
cluster/cli_audit.py). One parser, so every flag reads the same text the
same way.

Invariants:

- The result is a whole number of seconds, ``0 <= s <= MAX_DURATION_S``;
  anything else (a fraction, a sign, an unknown unit, too long) is an
  ``argparse.ArgumentTypeError`` naming the forms that work, so argparse
  makes it a usage error (exit 2) before anything is sent.
- Units and surrounding blanks are read case-insensitively (``7D``).
"""

from __future__ import annotations

import argparse
import re
from typing import Final

__all__ = ["MAX_DURATION_S", "duration_seconds"]

MAX_DURATION_S: Final = 100 * 365 * 86_400
"""The longest ttl or grace the server takes (cluster/frontend/tenant_admin.py
has the same number; the CLI does not import the server). Far beyond any
audit trail, so ``--since`` loses nothing by it."""

_DURATION = re.compile(r"(\d+)([smhd]?)")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


def duration_seconds(text: str) -> int:
    """``30d``, ``12h``, ``15m``, ``45s`` or plain seconds, as seconds (an
    argparse ``type``)."""
    found = _DURATION.fullmatch(text.strip().lower())
    if found is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a duration like 30s, 15m, 12h or 7d")
    seconds = int(found.group(1)) * _SECONDS[found.group(2)]
    if seconds > MAX_DURATION_S:
        raise argparse.ArgumentTypeError(f"{text!r}: at most 100 years")
    return seconds
