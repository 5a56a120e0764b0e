"""Which process opened a run: this machine's identity, the owner tags, whether a process still lives.

A RUNNING run whose owner is gone (same host and boot, process ended) was abandoned; see
:meth:`mmbench.tracking.lookup.RunLookup.reap_abandoned`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from mmbench.records import Tag


def machine_id() -> str:
    """This machine: its host name and, on Linux, its boot id (a pid means nothing across either)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        boot = ""
    return f"{socket.gethostname()}:{boot}" if boot else socket.gethostname()


def owner_tags() -> dict[str, str]:
    """Tags naming this process, set on every run it opens."""
    return {Tag.HOST: machine_id(), Tag.PID: str(os.getpid())}


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine exists (True where that cannot be probed)."""
    if os.name != "posix":  # os.kill(pid, 0) is not a probe elsewhere: never call a run abandoned there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
