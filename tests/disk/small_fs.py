"""A small real filesystem for full-disk tests: a size-limited tmpfs, or a
loop-mounted ext4 image where tmpfs cannot be mounted. Both need root (CI
runs as root); ``small_filesystem`` raises ``Unavailable`` with the reason
when neither can be made, and the caller skips.

Also ``fill``: a ballast file that leaves a given number of bytes free.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from partitions.disk_space import MiB, statvfs_free_bytes


class Unavailable(Exception):
    """No small filesystem can be mounted here (the message says why)."""


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@contextlib.contextmanager
def small_filesystem(where: Path, size_mib: int) -> Iterator[Path]:
    """Mount a ``size_mib`` filesystem at ``where`` (created) for the block."""
    if os.geteuid() != 0:
        raise Unavailable("mounting a small filesystem needs root (CI runs as root)")
    where.mkdir(parents=True, exist_ok=True)
    tried = _run("mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs", str(where))
    image: Path | None = None
    if tried.returncode != 0:
        if shutil.which("mkfs.ext4") is None:
            raise Unavailable(f"tmpfs mount failed ({tried.stderr.strip()}) and there is no mkfs.ext4")
        image = where.with_suffix(".img")
        with open(image, "wb") as f:
            f.truncate(size_mib * MiB)
        made = _run("mkfs.ext4", "-q", "-m", "0", str(image))
        looped = _run("mount", "-o", "loop", str(image), str(where)) if made.returncode == 0 else made
        if looped.returncode != 0:
            image.unlink()
            raise Unavailable(
                f"tmpfs mount failed ({tried.stderr.strip()}); loop ext4 failed ({looped.stderr.strip()})"
            )
    try:
        yield where
    finally:
        if _run("umount", str(where)).returncode != 0:
            _run("umount", "-l", str(where))
        if image is not None:
            image.unlink(missing_ok=True)


def fill(mount: Path, leave_bytes: int, name: str = "ballast") -> Path:
    """Grow (or shrink) a ballast file so that about ``leave_bytes`` stay free."""
    ballast = mount / name
    current = ballast.stat().st_size if ballast.exists() else 0
    target = max(0, current + statvfs_free_bytes(mount) - leave_bytes)
    with open(ballast, "r+b" if ballast.exists() else "wb") as f:
        f.truncate(target)
        if target > current:  # real blocks, not a sparse hole
            os.posix_fallocate(f.fileno(), current, target - current)
    return ballast
