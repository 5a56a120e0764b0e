"""The time of a job's attempts, kept beside its checkpoints, so that an attempt killed outright still counts.

An attempt that ends normally logs its wall and CPU time with its run (``job/seconds``); one killed outright
(SIGKILL, a machine handed back, a power cut) logs nothing, and a resumed job's figures would cover its last
attempt only. So while an attempt runs, a daemon thread rewrites the attempt's entry in the job's
``attempts.json`` every :data:`HEARTBEAT_S` seconds: its run id, the run it resumed, wall and CPU time so far.
A killed attempt leaves its last entry (short by at most one interval); the finishing attempt follows the
chain of resumed runs back and logs the sum of their times (:data:`mmbench.records.Metric.EARLIER_SECONDS`),
or nothing when an attempt of the chain is not recorded (one made before this file existed): unknown, not
zero. One process runs a job at a time (its claim), so the file has one writer.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from mmbench.atomic import write_json
from mmbench.records import Metric

HEARTBEAT_S = 60.0
FILE_NAME = "attempts.json"


@dataclass(frozen=True)
class Attempt:
    """One attempt of a job: its run and the wall and CPU seconds it had run at its last heartbeat."""

    run_id: str
    wall: float
    cpu: float
    previous: str | None = None  # the run of the attempt this one resumed


def read_attempts(workdir: Path) -> list[Attempt]:
    """The attempts recorded in ``workdir`` (none when the file is missing); a malformed file is an error."""
    path = Path(workdir) / FILE_NAME
    if not path.exists():
        return []
    try:
        return [Attempt(str(a["run_id"]), float(a["wall"]), float(a["cpu"]), a.get("previous"))
                for a in json.loads(path.read_text())]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a list of attempts ({exc}); delete it to stop counting earlier "
                         "attempts of this job") from exc


def others(workdir: Path, run_id: str) -> list[Attempt]:
    """Every recorded attempt of the job but the one of run ``run_id``."""
    return [a for a in read_attempts(workdir) if a.run_id != run_id]


def earlier_attempts(workdir: Path, previous: str | None) -> list[Attempt] | None:
    """The attempts an attempt resuming run ``previous`` follows, newest first (none for a first attempt),
    or None when one of them is not recorded, so their time is unknown."""
    recorded = {a.run_id: a for a in read_attempts(workdir)}
    chain: list[Attempt] = []
    while previous is not None:
        attempt = recorded.get(previous)
        if attempt is None or attempt in chain:
            return None
        chain.append(attempt)
        previous = attempt.previous
    return chain


class AttemptClock:
    """Records this attempt's wall and CPU time in ``workdir/attempts.json``: at entry, every ``interval``
    seconds from a daemon thread, and at exit. ``wall_clock``/``cpu_clock``: injectable for tests."""

    def __init__(self, workdir: Path, run_id: str, previous: str | None = None, interval: float = HEARTBEAT_S,
                 wall_clock: Callable[[], float] = time.perf_counter,
                 cpu_clock: Callable[[], float] = time.process_time) -> None:
        self.path = Path(workdir) / FILE_NAME
        self.run_id, self.previous, self.interval = run_id, previous, interval
        self.wall_clock, self.cpu_clock = wall_clock, cpu_clock
        self.start_wall, self.start_cpu = wall_clock(), cpu_clock()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def beat(self) -> Attempt:
        """Write this attempt's entry now (the others' entries kept) and return it."""
        with self._lock:
            now = Attempt(self.run_id, self.wall_clock() - self.start_wall, self.cpu_clock() - self.start_cpu,
                          self.previous)
            kept = others(self.path.parent, self.run_id)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, [asdict(a) for a in [*kept, now]])
            return now

    def _beat_until_stopped(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def __enter__(self) -> AttemptClock:
        self.beat()
        self._thread = threading.Thread(target=self._beat_until_stopped, name="attempt-clock", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.beat()


def total_cpu_seconds(metrics: Mapping[str, float], resumed: bool) -> float | None:
    """The CPU time of every attempt of a finished job's run, from what it logged: its own
    (``job/cpu_seconds``) plus its earlier attempts' (``job/earlier_attempts_cpu_seconds``); None when a part is
    unknown (a run that predates the CPU metric, or one resumed before earlier attempts were counted)."""
    own = metrics.get(Metric.JOB_CPU_SECONDS)
    attempts = metrics.get(Metric.ATTEMPTS)
    if own is None or (resumed and attempts is None):
        return None
    if attempts is None or attempts <= 1:
        return own
    earlier = metrics.get(Metric.EARLIER_CPU_SECONDS)
    return None if earlier is None else own + earlier
