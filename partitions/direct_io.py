"""Whether a directory's filesystem takes ``O_DIRECT`` writes.

RocksDB's direct I/O for flush and compaction (partitions/node_store.py)
opens its SST and blob files with ``O_DIRECT``. On a filesystem that
refuses it (tmpfs, some overlay and network filesystems) the open fails
with ``EINVAL`` at the first flush, long after the store opened, and
RocksDB then stops accepting writes. So the store asks first, once, by
doing what RocksDB will do: create a file in the directory with
``O_DIRECT``, write one aligned block, sync it, remove it.

Invariants:

- ``supports_direct_io`` never raises for a refusal: any ``OSError`` on the
  probe means "no" (the store then writes through the page cache, as it did
  before, which is correct everywhere, only burstier).
- The probe file is always removed, and the directory must already exist.
- The block is 4 KiB from an anonymous ``mmap`` (page aligned): the
  alignment ``O_DIRECT`` needs for the buffer, the offset and the length on
  every Linux filesystem with a logical block size up to 4 KiB.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

__all__ = ["supports_direct_io"]

_BLOCK = 4096
_PROBE_NAME = ".direct-io-probe"


def supports_direct_io(directory: Path) -> bool:
    """True if a file in ``directory`` can be written with ``O_DIRECT``."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:  # not Linux: RocksDB's option would not mean the same
        return False
    path = directory / _PROBE_NAME
    block = mmap.mmap(-1, _BLOCK)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | flag, 0o600)
    except OSError:
        block.close()
        return False
    try:
        written = os.write(fd, block)
        os.fdatasync(fd)
        return written == _BLOCK
    except OSError:
        return False
    finally:
        os.close(fd)
        block.close()
        path.unlink(missing_ok=True)
