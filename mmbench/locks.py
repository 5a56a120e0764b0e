"""An exclusive lock between processes: ``flock`` on a lock file, released on exit or when the process dies."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) inside the block; yields True.

    Where the lock file cannot be created (a read-only folder) nothing can be written there either, so
    there is nothing to serialise: the block runs unlocked and the context yields False.
    """
    import fcntl

    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    except OSError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock
