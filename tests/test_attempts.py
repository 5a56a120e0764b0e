"""A job's attempts keep their time beside its checkpoints (mmbench.runner.attempts)."""

from __future__ import annotations

import json
import time

import pytest

from mmbench.runner.attempts import Attempt, AttemptClock, earlier_attempts, read_attempts


def test_an_attempt_killed_outright_counts_up_to_its_last_heartbeat(tmp_path):
    now = {"wall": 100.0, "cpu": 10.0}

    def clock(run_id: str, previous: str | None) -> AttemptClock:
        return AttemptClock(tmp_path, run_id, previous, interval=3600, wall_clock=lambda: now["wall"],
                            cpu_clock=lambda: now["cpu"])

    first = clock("run-a", None)
    first.beat()  # at entry
    now.update(wall=400.0, cpu=70.0)
    first.beat()  # a heartbeat; then the process dies: no exit, no final entry
    now.update(wall=1000.0, cpu=500.0)
    with clock("run-b", "run-a"):
        now.update(wall=1050.0, cpu=505.0)
    a, b = Attempt("run-a", 300.0, 60.0, None), Attempt("run-b", 50.0, 5.0, "run-a")
    assert read_attempts(tmp_path) == [a, b]
    assert earlier_attempts(tmp_path, "run-a") == [a]  # what run-b follows
    assert earlier_attempts(tmp_path, "run-b") == [b, a]  # what a third attempt resuming run-b follows
    assert earlier_attempts(tmp_path, None) == []  # a first attempt


def test_an_unrecorded_attempt_in_the_chain_makes_the_earlier_time_unknown_not_zero(tmp_path):
    (tmp_path / "attempts.json").write_text(json.dumps([{"run_id": "b", "wall": 5.0, "cpu": 1.0, "previous": "a"}]))
    assert earlier_attempts(tmp_path, "b") is None  # "a" ran before the file existed
    assert earlier_attempts(tmp_path, "unknown") is None
    (tmp_path / "attempts.json").write_text(json.dumps([{"run_id": "a", "wall": 1.0, "cpu": 1.0, "previous": "a"}]))
    assert earlier_attempts(tmp_path, "a") is None  # a loop is no chain


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


def test_a_job_logs_its_attempt_figures_only_when_every_earlier_attempt_was_recorded(tmp_path):
    from mmbench.records import Metric
    from mmbench.runner.job import _log_earlier_attempts

    class Recorder:
        def __init__(self) -> None:
            self.logged: dict[str, float] = {}

        def log_metrics(self, run_id, values, timestamp_ms):
            self.logged.update({key: value for key, value, _ in values})

    resumed = Recorder()
    _log_earlier_attempts(resumed, "run-b", tmp_path, "run-a")  # run-a left no entry: unknown
    assert resumed.logged == {}
    first = Recorder()
    _log_earlier_attempts(first, "run-a", tmp_path, None)
    assert first.logged == {Metric.ATTEMPTS: 1.0, Metric.EARLIER_SECONDS: 0.0, Metric.EARLIER_CPU_SECONDS: 0.0}
