"""Which process opened a run: this machine's identity, the owner tags, whether a process still lives.

A RUNNING run whose owner is gone (same host and boot, process ended) was abandoned; see
:meth:`mmbench.tracking.lookup.RunLookup.reap_abandoned`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from mmbench.processes import machine_id, process_alive
from mmbench.records import Tag

__all__ = ["abandoned", "machine_id", "owner_tags", "process_alive"]


def owner_tags() -> dict[str, str]:
    """Tags naming this process, set on every run it opens."""
    return {Tag.HOST: machine_id(), Tag.PID: str(os.getpid())}


def abandoned(tags: Mapping[str, str]) -> bool:
    """Whether a RUNNING run with these tags was opened on this machine (same host and boot) by a process
    that no longer exists: nobody will close it. A run of another machine is never called abandoned here."""
    pid = tags.get(Tag.PID, "")
    return tags.get(Tag.HOST) == machine_id() and pid.isdigit() and not process_alive(int(pid))
