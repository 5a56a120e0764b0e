"""A claim per job id, so that any number of ``mmbench run`` invocations on one home train each job once.

A claim is a small JSON file, ``runs/<suite>/.claims/<job id>.json``, created with ``O_CREAT | O_EXCL``
(atomic on local filesystems and NFSv3+) and naming its owner: the machine (host name and boot id, as
``mmbench.tracking.machine_id``), the process id and that process's start time (so a recycled pid is not
mistaken for the owner). It is removed when the job ends; a claim whose owner is gone (same machine,
process no longer running: a SIGKILL, an out-of-memory kill) is taken over. Taking over happens under an
``flock`` on ``.claims/.lock`` so two invocations cannot both replace the same stale claim. A claim of
another machine is never taken over: only that machine can tell whether its owner still lives.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mmbench.locks import file_lock
from mmbench.tracking import machine_id, process_alive


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22); "" where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]


@dataclass(frozen=True)
class Owner:
    """The process holding a claim."""

    host: str
    pid: int
    started: str  # see _start_time
    invocation: str = ""

    @classmethod
    def me(cls, invocation: str = "") -> Owner:
        pid = os.getpid()
        return cls(machine_id(), pid, _start_time(pid), invocation)

    def alive(self) -> bool:
        """False only when certain: same machine, and no process with this pid and start time."""
        if self.host != machine_id():
            return True
        if not process_alive(self.pid):
            return False
        now = _start_time(self.pid)
        return not (self.started and now and now != self.started)

    def describe(self) -> str:
        return f"process {self.pid} on {self.host}"


class JobClaim:
    """The claim file of one job; ``acquire`` and ``release`` it, or ``holder`` to see who has it."""

    def __init__(self, folder: str | Path, job_id: str) -> None:
        self.folder = Path(folder)
        self.path = self.folder / f"{job_id}.json"
        self.mine: Owner | None = None
        self.took_over: Owner | None = None  # the dead owner whose claim ``acquire`` replaced

    def acquire(self, invocation: str = "") -> Owner | None:
        """Take the claim (None) or return the live owner that holds it. A dead owner's claim is taken over."""
        self.folder.mkdir(parents=True, exist_ok=True)
        me = Owner.me(invocation)
        while True:
            if self._create(me):
                self.mine = me
                return None
            with self._lock():
                holder = self.holder()
                if holder is None:
                    continue  # released meanwhile: try again
                if holder.alive():
                    return holder
                self.path.unlink(missing_ok=True)  # a dead owner's claim; under the lock, nobody else replaces it
                self.took_over = holder

    def release(self) -> None:
        """Remove the claim if this process still holds it."""
        if self.mine is None:
            return
        with self._lock(), contextlib.suppress(FileNotFoundError):
            if self.holder() == self.mine:
                self.path.unlink()
        self.mine = None

    def holder(self) -> Owner | None:
        """The owner named in the claim file (None: no claim). A claim being written reads as its creator."""
        for _ in range(50):
            try:
                return Owner(**json.loads(self.path.read_text()))
            except FileNotFoundError:
                return None
            except (ValueError, TypeError):  # created but not yet written: O_EXCL then write
                time.sleep(0.02)
        return Owner("unreadable claim", -1, "")  # never taken over: remove the file by hand

    def wait(self, poll_s: float = 1.0, on_wait: Callable[[Owner], None] | None = None) -> None:
        """Return once nobody alive holds the claim (released, or its owner died)."""
        told = False
        while (holder := self.holder()) is not None and holder.alive():
            if on_wait is not None and not told:
                on_wait(holder)
                told = True
            time.sleep(poll_s)

    def _create(self, me: Owner) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump(me.__dict__, fh)
        return True

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with file_lock(self.folder / ".lock"):
            yield
