"""Faults injected by hand become tests: a run killed outright resumes to the same numbers, and every
fail-early case is one line that names the problem and the fix, before any work is done.

The killed run is a real process (``python -m mmbench`` with this checkout on ``PYTHONPATH``), killed with
SIGKILL at a seeded random moment of its job, on the synthetic suite's smoke budget.
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_concurrency import RUN, cli_env, job_runs, permissions_ignored
from test_runner import seed_classifiers, store_uri, tiny_budget, tiny_suite

from mmbench.cli import main
from mmbench.records import Metric
from mmbench.suites import unregister_suite
from mmbench.suites.spec import Variant, overrides

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def _invoke(args: list[str]):
    return CliRunner().invoke(main, args)


def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and errors[0] == result.output.strip().splitlines()[-1], result.output
    text = errors[0]
    for needle in needles:
        assert needle in text, text


# ------------------------------------------------------------------------------------------ SIGKILL


def _evaluated(run) -> dict[str, float]:
    """The evaluation: not wall-clock figures, whether a stage was reused, nor the training curves (a resumed job
    loads its finished stages, so its run logs the curves of what it still trained only)."""
    return {k: v for k, v in run.metrics.items()
            if k not in Metric.WALL_CLOCK and not k.startswith(("stage/", "train/", "val/"))}


def _started_job(command: list[str], cwd, home) -> tuple[subprocess.Popen, list[str]]:
    """``mmbench run`` in a subprocess, returned once its job has started, with the lines printed so far."""
    proc = subprocess.Popen(command, cwd=cwd, env=cli_env(home), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "  started  " in line:
            break
    return proc, seen


# Swept by hand with KILL_DELAY = 0.0, 0.2, ..., 5.0 s on the loaded machine (2026-11-30): every kill point resumes to
# the uninterrupted numbers. (One earlier failure, with FID apart, was never reproduced.)
@pytest.mark.parametrize("kill_seed", [16, 18])
def test_a_run_killed_at_a_random_moment_resumes_to_the_uninterrupted_numbers(tmp_path, monkeypatch, kill_seed):
    args = [*RUN[:RUN.index("dummy")], "mvae", *RUN[RUN.index("dummy") + 1:], "--seeds", "0"]
    reference_home, home = tmp_path / "reference", tmp_path / "killed"
    for folder in (reference_home, home):
        seed_classifiers(folder)
    monkeypatch.setenv("MMBENCH_HOME", str(reference_home))
    reference = CliRunner().invoke(main, [*args, "--tracking-uri", store_uri(reference_home)], catch_exceptions=False)
    assert reference.exit_code == 0, reference.output
    [expected] = job_runs(store_uri(reference_home))

    # seconds after the job starts (training, checkpoints or evaluation); KILL_DELAY pins it to investigate
    delay = float(os.environ.get("KILL_DELAY", random.Random(kill_seed).uniform(0.0, 3.0)))
    command = [sys.executable, "-m", "mmbench", *args, "--tracking-uri", store_uri(home)]
    proc, seen = _started_job(command, tmp_path, home)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    killed = job_runs(store_uri(home))
    resumed = subprocess.run(command, cwd=tmp_path, env=cli_env(home), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, "".join(seen) + resumed.stdout + resumed.stderr
    runs = job_runs(store_uri(home))
    finished = [r for r in runs if r.status == "FINISHED"]
    assert len(finished) == 1, [(r.run_id, r.status) for r in runs]
    if killed and killed[0].status != "FINISHED":  # killed while it ran: its run is closed as abandoned
        closed = next(r for r in runs if r.run_id == killed[0].run_id)
        assert closed.status == "KILLED" and "abandoned" in closed.tags["error"]
    got, want = _evaluated(finished[0]), _evaluated(expected)
    assert set(got) == set(want)
    assert {k: v for k, v in got.items() if v != want[k]} == {}, f"killed {delay:.2f} s after the job started"
    assert not list((home / "runs" / "synthetic" / ".claims").glob("*.json"))


def test_a_terminated_run_closes_its_job_as_killed_and_the_resume_counts_that_attempt(tmp_path):
    """SIGTERM (``kill``, a scheduler's preemption) stops a run as Ctrl-C does: the job's run is KILLED with its
    time logged, not left RUNNING; the resumed job's run counts the stopped attempt (job/attempts, its time)."""
    args = [*RUN[:RUN.index("dummy")], "mvae", *RUN[RUN.index("dummy") + 1:], "--seeds", "0"]
    seed_classifiers(tmp_path)
    command = [sys.executable, "-m", "mmbench", *args, "--tracking-uri", store_uri(tmp_path)]
    proc, seen = _started_job(command, tmp_path, tmp_path)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    seen += proc.stdout.readlines()
    assert proc.wait(timeout=60) == 130, "".join(seen)
    assert any("interrupted: the running jobs are marked KILLED" in line for line in seen), "".join(seen)
    [stopped] = job_runs(store_uri(tmp_path))
    assert stopped.status == "KILLED" and "interrupted" in stopped.tags["error"]
    assert stopped.metrics[Metric.JOB_SECONDS] >= 0.9

    resumed = subprocess.run(command, cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    [finished] = [r for r in job_runs(store_uri(tmp_path)) if r.status == "FINISHED"]
    assert finished.tags["resumed_from"] == stopped.run_id
    assert finished.metrics[Metric.ATTEMPTS] == 2.0
    assert finished.metrics[Metric.EARLIER_SECONDS] == pytest.approx(stopped.metrics[Metric.JOB_SECONDS], abs=0.5)


# ------------------------------------------------------------------------------------------ bad options


@pytest.mark.parametrize(("args", "message"), [
    (["--models", ""], "no rows given"),
    (["--models", " , "], "no rows given"),
    (["--seeds", "-1"], "integers >= 0"),
    (["--seeds", "0,1,0"], "seed 0 is given twice"),
    (["--seeds", ","], "no seeds given"),
])
def test_empty_models_and_negative_or_repeated_seeds_are_errors(args, message):
    result = _invoke(["run", "--suite", "synthetic", *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_mmbench_home_being_a_file_is_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "home-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MMBENCH_HOME", str(blocker))
    for args in (["run", "--suite", "synthetic", "--models", "dummy"], ["report", "--suite", "synthetic"]):
        _one_line_error(_invoke(args), f"MMBENCH_HOME={blocker} is a file", "point MMBENCH_HOME at a folder")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_dask_scheduler_fails_fast_in_one_line(_isolated_home):
    start = time.perf_counter()
    result = _invoke(["run", "--suite", "synthetic", "--models", "dummy", "--backend", "dask",
                      "--scheduler", f"tcp://127.0.0.1:{_closed_port()}"])
    _one_line_error(result, "cannot reach the dask scheduler", "leave --scheduler out")
    assert time.perf_counter() - start < 10
    assert not (_isolated_home / "classifiers").exists()  # before any work


# ------------------------------------------------------------------------------------------ FID weights


@pytest.fixture
def inception_suite():
    budget = tiny_budget()
    budget = dataclasses.replace(budget, eval_overrides=overrides(dict(budget.eval_overrides),
                                                                  fid_extractor="inception-v3-compat"))
    yield tiny_suite("t-inception", (Variant("dummy", "dummy"),), metrics=("fid",), budget=budget)
    unregister_suite("t-inception")


@pytest.mark.parametrize("given_by", ["option", "environment"])
def test_garbage_inception_weights_fail_before_any_training(inception_suite, _isolated_home, monkeypatch, given_by):
    seed_classifiers(_isolated_home)
    garbage = _isolated_home / "weights-inception-garbage.pth"
    garbage.write_bytes(os.urandom(4096))
    args = ["run", "--suite", "t-inception", "--device", "cpu", "--quiet", "--tracking-uri", store_uri(_isolated_home)]
    if given_by == "option":
        args += ["--inception-weights", str(garbage)]
    else:
        monkeypatch.setenv("MMBENCH_INCEPTION_WEIGHTS", str(garbage))
    result = _invoke(args)
    _one_line_error(result, f"the Inception FID weights {garbage} cannot be used", "--inception-weights FILE")
    store = store_uri(_isolated_home)
    assert not Path(store[len("sqlite:///"):]).exists() or not _job_runs_of(store, "t-inception")


def _job_runs_of(uri: str, suite: str):
    from mmbench import tracking

    store = tracking.Store(uri)
    experiment = store.experiment_id(suite, create=False)
    return store.job_runs(experiment) if experiment else []


def test_well_formed_inception_weights_pass_the_probe(tmp_path):
    from mmbench.metrics.extractors import InceptionWeightsError, probe_inception, random_inception_weights

    weights = random_inception_weights(tmp_path / "inception.pth")
    assert probe_inception(str(weights)) == weights
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(InceptionWeightsError, match="truncated.pth cannot be used"):
        probe_inception(str(truncated))


# ------------------------------------------------------------------------------------------ store and report


@pytest.fixture
def one_run(_isolated_home, monkeypatch):
    """One finished dummy job in a store of its own home."""
    seed_classifiers(_isolated_home)
    uri = store_uri(_isolated_home)
    result = CliRunner().invoke(main, [*RUN, "--seeds", "0", "--tracking-uri", uri], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return {"home": _isolated_home, "uri": uri, "run": job_runs(uri)[0]}


def test_a_corrupt_run_artifact_is_one_line_naming_the_run_and_the_fix(one_run, tmp_path):
    artifact = Path(one_run["run"].artifact_uri) / "metric_keys.json"
    artifact.write_text('{"coherence/loo/mean": tru')
    result = _invoke(["report", "--suite", "synthetic", "--tracking-uri", one_run["uri"], "--out", str(tmp_path / "r")])
    _one_line_error(result, f"run {one_run['run'].run_id}'s artifact metric_keys.json is corrupt", "mlflow runs delete")
    artifact.unlink()
    result = _invoke(["report", "--suite", "synthetic", "--tracking-uri", one_run["uri"], "--out", str(tmp_path / "r")])
    _one_line_error(result, "has no readable artifact metric_keys.json", "mlflow runs delete")
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_a_report_folder_that_cannot_be_written_is_one_line(one_run, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = _invoke(["report", "--suite", "synthetic", "--tracking-uri", one_run["uri"], "--out", str(blocker / "r")])
    _one_line_error(result, f"{blocker} is a file", "pass another --out")


@pytest.mark.skipif(permissions_ignored(), reason="file permissions are not enforced here (root)")
def test_read_only_out_and_read_only_store_are_one_line(one_run, tmp_path):
    out = tmp_path / "read-only"
    out.mkdir(mode=0o555)
    result = _invoke(["report", "--suite", "synthetic", "--tracking-uri", one_run["uri"], "--out", str(out / "r")])
    _one_line_error(result, "is not writable", "pass another --out")
    db = Path(one_run["uri"][len("sqlite:///"):])
    db.chmod(0o444)
    try:
        result = _invoke([*RUN, "--seeds", "1", "--tracking-uri", one_run["uri"]])
    finally:
        db.chmod(0o644)
    _one_line_error(result, f"the SQLite tracking store {db} is read-only", "chmod u+w")
    assert len(job_runs(one_run["uri"])) == 1


def test_a_sigterm_whose_interrupt_was_dropped_still_stops_the_run():
    """Python drops an exception raised inside a garbage-collection callback ("Exception ignored in ..."), and
    code may catch it: the SIGTERM is remembered, so the job's finish line and the block's exit still raise."""
    from mmbench.processes import raise_if_terminated, terminate_as_interrupt

    def dropped_sigterm():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here; the except below stands for Python dropping it
        except KeyboardInterrupt:
            pass

    with pytest.raises(KeyboardInterrupt, match="SIGTERM received earlier"):
        with terminate_as_interrupt():
            dropped_sigterm()
            with pytest.raises(KeyboardInterrupt, match="SIGTERM received earlier"):
                raise_if_terminated()  # what a job checks before it calls itself finished
    raise_if_terminated()  # outside the block: forgotten
    with terminate_as_interrupt():  # no signal: nothing raised
        raise_if_terminated()
