"""Progress of long loops: a tqdm bar on a terminal, plain periodic lines anywhere else.

Piped to a file or a CI log, a tqdm bar writes a carriage return per refresh (kilobytes of noise); there
:class:`LineProgress` writes one line every ``interval`` seconds (and one at the end) with the step, the
rate and the time left.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

LINE_INTERVAL_S = 60.0  # seconds between lines on a non-terminal
COUNT_INTERVAL_S = 15.0  # seconds between the lines of a counted phase (CountLines)


class LineProgress:
    """The subset of tqdm's interface the trainer uses, printed as periodic lines."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", stream: TextIO | None = None,
                 interval: float = LINE_INTERVAL_S, clock: Callable[[], float] = time.monotonic,
                 silent: bool = False) -> None:
        self.total, self.n, self.desc, self.silent = total, initial, desc, silent
        self.stream = stream if stream is not None else sys.stderr
        self.interval, self.clock = interval, clock
        self.start_n, self.start = initial, clock()
        self.last_line = self.start
        self.postfix = ""

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last_line >= self.interval:
            self._line(now)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self.n > self.start_n and not self.silent:
            self._line(self.clock())

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line(self, now: float) -> None:
        self.last_line = now
        done, elapsed = self.n - self.start_n, now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        left = f", {format_seconds((self.total - self.n) / rate)} left" if rate > 0 and self.n < self.total else ""
        extra = f"  {self.postfix}" if self.postfix else ""
        self.stream.write(f"{self.desc}: {self.n}/{self.total} ({100 * self.n / max(self.total, 1):.0f} %), "
                          f"{rate:.3g} it/s{left}{extra}\n")
        self.stream.flush()


class CountLines:
    """Counted work in named phases as plain lines (never a carriage return), each with its time left:
    ``coherence: generating 1200/5000 samples, ~2m10s left``.

    Call it with ``(phase, done, total)``: ``done == 0`` starts a phase (one line, and the clock of its
    rate), then at most one line every ``interval`` seconds, and one when ``done`` reaches ``total``. The
    time left extrapolates the phase's rate so far.
    """

    def __init__(self, say: Callable[[str], None], interval: float = COUNT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.say, self.interval, self.clock = say, interval, clock
        self.phase, self.start, self.last = "", clock(), clock()

    def __call__(self, phase: str, done: int, total: int, noun: str = "samples") -> None:
        now = self.clock()
        if done == 0 or phase != self.phase:
            self.phase, self.start, self.last = phase, now, now
            self.say(f"{phase}: generating {total} {noun}")
            if done == 0:
                return
        if done < total and now - self.last < self.interval:
            return
        self.last, elapsed = now, now - self.start
        if done >= total:
            self.say(f"{phase}: generated {done}/{total} {noun} in {format_seconds(elapsed)}")
            return
        left = f", ~{format_seconds(elapsed * (total - done) / done)} left" if done > 0 else ""
        self.say(f"{phase}: generating {done}/{total} {noun}{left}")


def format_seconds(seconds: float) -> str:
    """``42s``, ``7m05s``, ``2h19m``: a duration as the dry run, the report and the logs print it."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def progress_bar(total: int, initial: int = 0, desc: str = "", disable: bool = False,
                 stream: TextIO | None = None) -> Any:
    """A tqdm bar when ``stream`` (stderr) is a terminal, else a :class:`LineProgress`; ``disable``: neither."""
    stream = stream if stream is not None else sys.stderr
    if disable:
        return LineProgress(total, initial, desc, stream, interval=float("inf"), silent=True)
    if stream.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True, file=stream)
    return LineProgress(total, initial, desc, stream)
