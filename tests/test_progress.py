"""mmbench.progress: periodic plain lines on a non-terminal (no carriage returns), tqdm on a terminal."""

from __future__ import annotations

import io

from mmbench.progress import LineProgress, progress_bar


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_every_interval_with_rate_and_time_left():
    stream, clock = io.StringIO(), _Clock()
    with LineProgress(300, desc="m:score", stream=stream, interval=60.0, clock=clock) as bar:
        for _ in range(300):
            clock.now += 1.0  # one step per second
            bar.update(1)
            bar.set_postfix(loss="0.5")
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[0] == "m:score: 60/300 (20 %), 1 it/s, 4m00s left  loss=0.5"
    assert len(lines) == 6  # at 60, 120, 180, 240, 300 s and the closing line
    assert lines[-1].startswith("m:score: 300/300 (100 %), 1 it/s") and "left" not in lines[-1]


def test_a_resumed_bar_counts_its_rate_from_where_it_started():
    stream, clock = io.StringIO(), _Clock()
    bar = LineProgress(1000, initial=900, desc="x", stream=stream, interval=10.0, clock=clock)
    for _ in range(20):
        clock.now += 0.5  # two steps per second
        bar.update(1)
    assert stream.getvalue().splitlines()[0] == "x: 920/1000 (92 %), 2 it/s, 40s left"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_tqdm_and_disable_prints_nothing():
    from tqdm.auto import tqdm

    bar = progress_bar(10, desc="t", stream=_Terminal())
    assert isinstance(bar, tqdm)
    bar.close()
    quiet = io.StringIO()
    with progress_bar(10, desc="q", disable=True, stream=quiet) as silent:
        silent.update(10)
    assert quiet.getvalue() == ""
