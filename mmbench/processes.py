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


_TERMINATED = threading.Event()  # a SIGTERM arrived inside terminate_as_interrupt's block


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Inside the block, SIGTERM (``kill PID``, a batch scheduler's preemption notice) raises
    KeyboardInterrupt in the main thread, as Ctrl-C does, so that a run closes its jobs' runs as KILLED with
    their time logged and its checkpoints kept, instead of dying with them RUNNING. Off the main thread
    (where no handler can be set) nothing changes; the previous handler is restored on exit.

    The signal is also remembered: Python drops an exception raised while it runs a garbage-collection or
    ``__del__`` callback ("Exception ignored in ..."), and code may catch it, so a job checks
    :func:`raise_if_terminated` before it calls itself finished, and a block that ends normally after a SIGTERM
    raises the KeyboardInterrupt on its way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        _TERMINATED.set()
        raise KeyboardInterrupt(f"signal {signum}")

    _TERMINATED.clear()
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
        raise_if_terminated()
    finally:
        signal.signal(signal.SIGTERM, previous)
        _TERMINATED.clear()


def raise_if_terminated() -> None:
    """Raise KeyboardInterrupt if a SIGTERM arrived inside :func:`terminate_as_interrupt`'s block, even when the
    exception its handler raised was dropped or caught on the way."""
    if _TERMINATED.is_set():
        raise KeyboardInterrupt("SIGTERM received earlier (its interrupt was dropped on the way)")
