"""``os.environ`` changed for a while, for the flag tests that launch processes or run the CLI in-process.

Invariant: on the way out every name is as it was, set to its old value or
removed if it was unset, even when the body raised.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` for the duration (a process launched
    inside copies it; the ``raftlog`` CLI run in-process reads it)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
