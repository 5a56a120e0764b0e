"""Runs that share a home and a store, and a home that moves.

Several ``mmbench run`` invocations on one ``MMBENCH_HOME`` train each job exactly once (a claim per job
id, ``mmbench.runner.claims``) and create a fresh SQLite store safely; a moved or copied home reports and
resumes (``tracking.reroot_artifacts``). The invocations are real processes (``python -m mmbench`` with
this checkout on ``PYTHONPATH``) on the synthetic suite's smoke budget with the ``dummy`` model.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_runner import seed_classifiers, store_uri

from mmbench import tracking
from mmbench.cli import main
from mmbench.runner.claims import JobClaim, Owner

REPO = Path(__file__).resolve().parents[1]
RUN = ["run", "--suite", "synthetic", "--budget", "smoke", "--models", "dummy", "--device", "cpu", "--quiet",
       "--threads", "1"]


def cli_env(home: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "MMBENCH_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def permissions_ignored() -> bool:
    """True where file permissions are not enforced (root with CAP_DAC_OVERRIDE): a read-only file opens for writing."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe"
        probe.write_text("")
        probe.chmod(0o444)
        try:
            probe.open("a").close()
        except PermissionError:
            return False
        return True


def job_runs(uri: str) -> list[tracking.RunRecord]:
    store = tracking.Store(uri)
    return store.job_runs(store.experiment_id("synthetic", create=False))


# ------------------------------------------------------------------------------------------ claims


def _dead_pid() -> int:
    proc = multiprocessing.get_context("spawn").Process(target=int)
    proc.start()
    proc.join()
    return proc.pid


def test_a_claim_is_held_once_and_a_dead_owners_claim_is_taken_over(tmp_path):
    first, second = JobClaim(tmp_path, "job1"), JobClaim(tmp_path, "job1")
    assert first.acquire("inv-a") is None
    holder = second.acquire("inv-b")
    assert holder == first.mine and holder.pid == os.getpid() and holder.alive()
    first.release()
    assert not first.path.exists() and second.acquire("inv-b") is None
    second.release()

    dead = Owner(Owner.me().host, _dead_pid(), "", "inv-dead")
    first.path.write_text(json.dumps(dead.__dict__))
    assert not dead.alive()
    assert second.acquire("inv-c") is None and second.took_over == dead
    assert json.loads(second.path.read_text())["invocation"] == "inv-c"
    second.release()

    recycled = Owner(Owner.me().host, os.getpid(), "1", "inv-old")  # this pid, but another start time
    assert not recycled.alive()
    elsewhere = Owner("another-host:0123abcd", _dead_pid(), "", "inv-far")
    assert elsewhere.alive()  # only its own machine can tell: never taken over
    first.path.write_text(json.dumps(elsewhere.__dict__))
    assert second.acquire("inv-d") == elsewhere


# ------------------------------------------------------------------------------------------ four at once


def test_four_invocations_on_one_fresh_store_train_each_job_once(tmp_path):
    home = tmp_path / "home"
    seed_classifiers(home)
    uri = store_uri(home)
    procs = [
        subprocess.Popen([sys.executable, "-m", "mmbench", *RUN, "--seeds", "0,1,2", "--tracking-uri", uri],
                         cwd=tmp_path, env=cli_env(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n\n".join(outputs)
    runs = job_runs(uri)
    assert sorted(r.tags["seed"] for r in runs) == ["0", "1", "2"], [(r.tags["seed"], r.status) for r in runs]
    assert {r.status for r in runs} == {"FINISHED"}
    trained = sum(line.startswith("[") and "  FINISHED  " in line for out in outputs for line in out.splitlines())
    assert trained == 3, "\n\n".join(outputs)  # every job run by exactly one invocation; the others skipped it
    assert not list((home / "runs" / "synthetic" / ".claims").glob("*.json"))  # every claim released


# ------------------------------------------------------------------------------------------ a home that moves


def test_a_moved_home_reports_and_resumes_in_its_new_place(tmp_path, monkeypatch):
    old, new = tmp_path / "old", tmp_path / "new"
    seed_classifiers(old)
    monkeypatch.setenv("MMBENCH_HOME", str(old))
    first = CliRunner().invoke(main, [*RUN, "--seeds", "0", "--tracking-uri", store_uri(old)], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    shutil.move(old, new)
    monkeypatch.setenv("MMBENCH_HOME", str(new))

    report = CliRunner().invoke(main, ["report", "--suite", "synthetic", "--tracking-uri", store_uri(new),
                                       "--out", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    again = CliRunner().invoke(main, [*RUN, "--seeds", "0,1", "--tracking-uri", store_uri(new)], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert "1 already finished, 1 to run" in again.output
    runs = job_runs(store_uri(new))
    assert len(runs) == 2
    for run in runs:  # old and new runs both point into the new home, and their files are there
        assert run.artifact_uri.startswith(str(new / "mlartifacts" / "synthetic")), run.artifact_uri
        assert (Path(run.artifact_uri) / "metric_keys.json").is_file()
    assert not old.exists()


@pytest.mark.skipif(permissions_ignored(), reason="file permissions are not enforced here (root)")
def test_report_reads_a_store_in_a_read_only_folder(tmp_path, monkeypatch):
    home = tmp_path / "home"
    seed_classifiers(home)
    monkeypatch.setenv("MMBENCH_HOME", str(home))
    first = CliRunner().invoke(main, [*RUN, "--seeds", "0", "--tracking-uri", store_uri(home)], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    store = home / "store.db"
    store.chmod(0o444)
    home.chmod(0o555)
    try:
        report = CliRunner().invoke(main, ["report", "--suite", "synthetic", "--tracking-uri", store_uri(home),
                                           "--out", str(tmp_path / "report")])
    finally:
        home.chmod(0o755)
        store.chmod(0o644)
    assert report.exit_code == 0, report.output
    assert (tmp_path / "report").is_dir()
