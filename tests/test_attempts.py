"""A job's attempts keep their time beside its checkpoints (mmbench.runner.attempts)."""

from __future__ import annotations

import json
import time

import pytest

from mmbench.runner.attempts import Attempt, AttemptClock, earlier_attempts, read_attempts


def test_an_attempt_killed_outright_counts_up_to_its_last_heartbeat(tmp_path):
    now = {"wall": 100.0, "cpu": 10.0}

    def clock(**kwargs) -> AttemptClock:
        return AttemptClock(tmp_path, interval=3600, wall_clock=lambda: now["wall"], cpu_clock=lambda: now["cpu"], **kwargs)

    first = clock(run_id="run-a")
    first.beat()  # at entry
    now.update(wall=400.0, cpu=70.0)
    first.beat()  # a heartbeat; then the process dies: no exit, no final entry
    now.update(wall=1000.0, cpu=500.0)
    with clock(run_id="run-b"):
        now.update(wall=1050.0, cpu=505.0)
    assert read_attempts(tmp_path) == [Attempt("run-a", 300.0, 60.0), Attempt("run-b", 50.0, 5.0)]
    assert earlier_attempts(tmp_path, "run-b") == [Attempt("run-a", 300.0, 60.0)]
    assert earlier_attempts(tmp_path, "run-c") == read_attempts(tmp_path)


def test_the_heartbeat_thread_rewrites_the_entry_while_the_attempt_runs(tmp_path):
    with AttemptClock(tmp_path / "job", "run-a", interval=0.02):
        time.sleep(0.3)
        (running,) = read_attempts(tmp_path / "job")  # written by the thread, before the attempt ends
        assert running.wall >= 0.1
    (ended,) = read_attempts(tmp_path / "job")
    assert ended.wall >= 0.3 and ended.run_id == "run-a"


def test_a_malformed_attempts_file_is_refused_with_its_path(tmp_path):
    assert read_attempts(tmp_path) == []
    (tmp_path / "attempts.json").write_text(json.dumps([{"run_id": "a", "wall": 1.0}]))
    with pytest.raises(ValueError, match="attempts.json is not a list of attempts"):
        read_attempts(tmp_path)
