"""Owner-only data on disk: a node's directories 0700, its files 0600.

A node's data (the RocksDB store with every record, the operator key) must
not be readable by other users of the machine, whatever umask the node was
started with (the usual default, 022, makes files 0644 and directories
0755). RocksDB creates its files itself (WAL, SST and blob files, MANIFEST,
OPTIONS, LOG) from its own threads for as long as the store is open, so the
only thing that covers all of them is the process umask.

Invariants, once ``restrict_umask`` has run in a process:

- The umask has at least the group and other bits (0o077) set, and keeps
  any stricter bits it had: every file the process (or a library in it)
  creates from then on is owner-only. It is never loosened again.
- ``make_owner_only_dir`` leaves the directory mode 0700 (or stricter for
  the owner), also when it existed before; it changes no parent that
  existed before it was called.
- ``tighten_tree`` removes the group and other bits from everything under a
  directory, so a store created by an older build, or under a looser umask,
  is owner-only once reopened. Symbolic links are neither followed nor
  changed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["OWNER_ONLY_UMASK", "make_owner_only_dir", "restrict_umask", "tighten_tree"]

OWNER_ONLY_UMASK = 0o077
"""Umask bits that keep group and others out of every new file and directory."""

_GROUP_AND_OTHER = 0o077


def restrict_umask() -> int:
    """Add the group and other bits to the process umask; return the umask it
    had. Idempotent. Process-wide: call it early in a process that holds
    data (the node's main), and it is called again whenever a store opens."""
    previous = os.umask(OWNER_ONLY_UMASK)
    if previous & ~OWNER_ONLY_UMASK:
        # The process already had a stricter umask (e.g. 0o277): keep it.
        os.umask(previous | OWNER_ONLY_UMASK)
    return previous


def make_owner_only_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) so that only its owner may
    enter it; an existing ``path`` is set to 0700 too. Parents that existed
    are left alone (they may be shared, like /var/lib); parents created
    here get 0700 as well."""
    missing = []
    parent = path
    while not parent.exists():
        missing.append(parent)
        if parent.parent == parent:
            break
        parent = parent.parent
    for directory in reversed(missing):
        # mkdir's mode is filtered by the umask, so chmod afterwards: 0700
        # whatever the umask was.
        directory.mkdir(mode=0o700, exist_ok=True)
    _remove_group_and_other(path)


def tighten_tree(root: Path) -> int:
    """Remove the group and other bits from ``root`` and everything under
    it; return how many entries were changed. Does not follow symlinks."""
    changed = int(_remove_group_and_other(root))
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            changed += _remove_group_and_other(Path(dirpath, name))
    return changed


def _remove_group_and_other(path: Path) -> bool:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return False  # a link's own mode means nothing; never chmod its target
    mode = stat.S_IMODE(st.st_mode)
    if not mode & _GROUP_AND_OTHER:
        return False
    os.chmod(path, mode & ~_GROUP_AND_OTHER)
    return True
