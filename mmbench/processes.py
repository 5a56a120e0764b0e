"""This machine's identity and whether one of its processes still lives (a pid means nothing elsewhere)."""

from __future__ import annotations

import os
import socket
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
