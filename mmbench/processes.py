"""This machine's identity and whether one of its processes still lives (a pid means nothing elsewhere)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path


def machine_id() -> str:
    """This machine: its host name and, on Linux, its boot id (a pid means nothing across either)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        boot = ""
    return f"{socket.gethostname()}:{boot}" if boot else socket.gethostname()


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine exists (True where that cannot be probed)."""
    if os.name != "posix":  # os.kill(pid, 0) is not a probe elsewhere: never call a process gone there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Inside the block, SIGTERM (``kill PID``, a batch scheduler's preemption notice) raises
    KeyboardInterrupt in the main thread, as Ctrl-C does, so that a run closes its jobs' runs as KILLED with
    their time logged and its checkpoints kept, instead of dying with them RUNNING. Off the main thread
    (where no handler can be set) nothing changes; the previous handler is restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
