"""Where the ``raftlog`` CLI takes its API key from.

API keys stay off the command line, where every user of the machine can
read them (``ps``, ``/proc/PID/cmdline``) and shell history keeps them: the
key comes from ``RAFTLOG_API_KEY`` or from ``--api-key-file PATH`` (the
file's first line). ``--api-key KEY`` still works, with a warning on
stderr saying so.

Invariants:

- A key file its group or other users may access is refused (a usage
  error), like ssh refuses an unprotected private key; the mode is checked
  on the opened file, so it is the file that is read.
- The key is never printed; at most 64 KiB of a file is read.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys

__all__ = ["API_KEY_ON_COMMAND_LINE_WARNING", "UsageError", "read_api_key_file", "resolve_api_key"]


class UsageError(Exception):
    """A usage error found after parsing, reported in one line (exit status 2)."""


API_KEY_ON_COMMAND_LINE_WARNING = (
    "raftlog: warning: --api-key puts the key on the command line, where other users of this "
    "machine can read it (ps, /proc/PID/cmdline) and shell history keeps it; set RAFTLOG_API_KEY "
    "or use --api-key-file PATH (a file only you can read) instead"
)


def read_api_key_file(path: str) -> str:
    """The API key in ``path``: its content without surrounding whitespace.

    Raises ``UsageError`` when it cannot be read, is empty or holds more than
    one line, or is a regular file its group or other users may access: the
    option exists to keep the key private, a warning in a script's stderr is
    easily missed, and the fix is one ``chmod``. Pipes (``<(pass show ...)``)
    are not regular files and are read as they are. The mode is checked on
    the opened file, so it is the file that is read."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if stat.S_ISREG(mode) and stat.S_IMODE(mode) & 0o077:
                raise UsageError(
                    f"--api-key-file {path} is accessible to other users (mode "
                    f"{stat.S_IMODE(mode):04o}); run `chmod 600 {path}` (or use RAFTLOG_API_KEY)"
                )
            raw = f.read(64 * 1024)  # keys are ~60 bytes: never slurp a wrong path's whole content
    except OSError as error:
        raise UsageError(f"--api-key-file {path}: {error.strerror or error}") from None
    try:
        key = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UsageError(f"--api-key-file {path} is not text; it should hold one API key") from None
    if not key:
        raise UsageError(f"--api-key-file {path} is empty; it should hold one API key")
    if any(c.isspace() for c in key):
        raise UsageError(f"--api-key-file {path} holds more than one word; it should hold one API key only")
    return key


def resolve_api_key(args: argparse.Namespace) -> str | None:
    """The key to use: ``--api-key-file``, else ``--api-key`` (with a
    warning on stderr), else ``$RAFTLOG_API_KEY``, else none."""
    if args.api_key_file is not None:
        return read_api_key_file(args.api_key_file)
    if args.api_key:
        print(API_KEY_ON_COMMAND_LINE_WARNING, file=sys.stderr)
        return str(args.api_key)
    return os.environ.get("RAFTLOG_API_KEY") or None
