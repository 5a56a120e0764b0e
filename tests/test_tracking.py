"""mmbench.tracking: URIs, fail-fast checks, key sanitising, batching limits, run bookkeeping."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from mmbench import tracking


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_resolve_uri_order_and_absolute_sqlite(monkeypatch, tmp_path, _isolated_home):
    assert tracking.resolve_uri(None) == f"sqlite:///{_isolated_home / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'env.db'}")
    assert tracking.resolve_uri(None).endswith("env.db")
    assert tracking.resolve_uri("http://example.invalid:5000") == "http://example.invalid:5000"
    monkeypatch.chdir(tmp_path)
    assert tracking.resolve_uri("sqlite:///rel/store.db") == f"sqlite:///{tmp_path / 'rel' / 'store.db'}"
    with pytest.raises(tracking.TrackingError, match="no scheme"):
        tracking.resolve_uri("just-a-path.db")


def test_artifact_root_is_absolute_beside_sqlite(tmp_path):
    uri = f"sqlite:///{tmp_path / 'a' / 'store.db'}"
    assert tracking.artifact_root(uri) == str(tmp_path / "a" / "mlartifacts")
    assert tracking.artifact_root("http://localhost:5000") is None


def test_unreachable_server_fails_fast():
    start = time.perf_counter()
    with pytest.raises(tracking.TrackingError, match="cannot reach the MLflow tracking server"):
        tracking.check_reachable(f"http://127.0.0.1:{_free_port()}", timeout=3)
    assert time.perf_counter() - start < 10


def test_unusable_sqlite_paths(tmp_path):
    not_db = tmp_path / "notes.db"
    not_db.write_text("hello, not a database")
    with pytest.raises(tracking.TrackingError, match="not a SQLite database"):
        tracking.check_reachable(f"sqlite:///{not_db}")
    with pytest.raises(tracking.TrackingError, match="cannot create the folder"):
        tracking.check_reachable(f"sqlite:///{not_db}/inside/store.db")
    with pytest.raises(tracking.TrackingError, match="plain file store"):
        tracking.check_reachable(f"file://{tmp_path}")


def test_metric_key_sanitising():
    assert tracking.metric_key("coherence/loo/mean") == "coherence/loo/mean"
    assert tracking.metric_key("a:b=c+d@e,f[g]") == "a_b_c_d_e_f_g_"
    assert len(tracking.metric_key("x" * 400)) == 250
    with pytest.raises(ValueError):
        tracking.metric_key("///")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    store = tracking.Store(f"sqlite:///{folder / 'store.db'}")
    store.check()
    return store


def test_experiment_has_absolute_artifact_location_and_is_reused(store):
    first = store.experiment_id("suite-a")
    assert store.experiment_id("suite-a") == first
    assert store.experiment_id("suite-b", create=False) is None
    experiment = store.client.get_experiment(first)
    assert experiment.name == "mmbench/suite-a"
    assert Path(experiment.artifact_location) == Path(tracking.artifact_root(store.uri)) / "suite-a"


def test_batches_respect_mlflow_limits_and_long_values_are_marked(store):
    experiment = store.experiment_id("suite-limits")
    run = store.create_run(experiment, "limits", {f"tag{i}": i for i in range(130)})  # > 100 tags per call
    store.log_params(run, {f"p{i}": i for i in range(250)} | {"long": "v" * 7000})
    store.log_metrics(run, [("m/series", float(i), i) for i in range(2500)], 0)
    store.set_tags(run, {"big": "x" * 9000})
    record = store.run(run)
    assert len(record.tags) >= 131 and record.tags["tag129"] == "129"
    assert len(record.params) == 251 and record.params["p249"] == "249"
    assert len(record.params["long"]) <= tracking.MAX_PARAM_VALUE and "truncated" in record.params["long"]
    assert len(record.tags["big"]) <= tracking.MAX_TAG_VALUE and "truncated" in record.tags["big"]
    history = store.metric_history(run, "m/series")
    assert [s for s, _ in history] == list(range(2500))


def test_metric_buffer_flushes_at_threshold_and_on_demand(store):
    run = store.create_run(store.experiment_id("suite-buffer"), "buffer", {})
    buffer = tracking.MetricBuffer(store, run, flush_every=4)
    buffer.add({"a": 1.0, "b": 2.0}, step=1)
    assert store.run(run).metrics == {}
    buffer.add({"a": 3.0, "b": 4.0}, step=2)  # 4 pending: written
    assert store.run(run).metrics == {"a": 3.0, "b": 4.0}
    buffer.add({"c": 5.0}, step=3)
    buffer.flush()
    assert store.run(run).metrics["c"] == 5.0


def test_finished_and_unfinished_job_bookkeeping(store):
    experiment = store.experiment_id("suite-jobs")

    def job(job_id: str, status: str, budget: str = "quick") -> str:
        run = store.create_run(experiment, job_id, {"kind": "job", "job_id": job_id, "budget": budget})
        store.mark(run, status)
        time.sleep(0.01)  # distinct start times
        return run

    failed_a = job("a", "FAILED")
    finished_a = job("a", "FINISHED")
    killed_b = job("b", "KILLED")
    job("c", "FINISHED", budget="smoke")
    assert store.finished_jobs(experiment, "quick") == {"a": finished_a}
    assert store.unfinished_attempts(experiment, "quick") == {"a": failed_a, "b": killed_b}
    assert store.budgets(experiment) == ["quick", "smoke"]
    assert store.run(finished_a).end_time is not None


def test_runs_left_running_by_a_dead_process_are_reaped(store):
    """A SIGKILLed invocation leaves its runs RUNNING; the next one marks them KILLED, but only runs of
    this machine whose process is gone (not a live process's, not another machine's)."""
    import subprocess
    import sys

    from mmbench.records import Tag
    from mmbench.tracking import machine_id

    experiment = store.experiment_id("suite-reap")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = store.create_run(experiment, "dead", {"kind": "job", Tag.PID: str(gone.pid)})
    alive = store.create_run(experiment, "alive", {"kind": "job"})  # this process
    elsewhere = store.create_run(experiment, "elsewhere", {"kind": "job", Tag.HOST: "other-host", Tag.PID: str(gone.pid)})
    finished = store.create_run(experiment, "done", {"kind": "job", Tag.PID: str(gone.pid)})
    store.mark(finished, "FINISHED")
    assert store.run(alive).tags[Tag.HOST] == machine_id()
    assert store.reap_abandoned(experiment) == [dead]
    assert store.run(dead).status == "KILLED" and "abandoned: process" in store.run(dead).tags["error"]
    assert store.run(dead).end_time is not None
    assert [store.run(r).status for r in (alive, elsewhere, finished)] == ["RUNNING", "RUNNING", "FINISHED"]
    assert store.reap_abandoned(experiment) == []


def test_the_newest_of_several_unfinished_attempts_is_resumed(store):
    """Two KILLED attempts of one job (and a FAILED one of another, older than its KILLED retry): the
    newest attempt is the one to resume, whatever order the store returns them in."""
    experiment = store.experiment_id("suite-resume-newest")
    runs = {}
    for name, job_id, status in (("k1", "a", "KILLED"), ("k2", "a", "KILLED"), ("f1", "b", "FAILED"),
                                 ("k3", "b", "KILLED"), ("k4", "a", "KILLED")):
        runs[name] = store.create_run(experiment, name, {"kind": "job", "job_id": job_id, "budget": "quick"})
        store.mark(runs[name], status)
        time.sleep(0.01)  # distinct start times
    assert store.unfinished_attempts(experiment, "quick") == {"a": runs["k4"], "b": runs["k3"]}
