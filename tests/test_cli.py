"""The harness CLI end to end: run (smoke) into a temporary SQLite store, rerun, report, validate, ui.

One module-scoped smoke run (the synthetic suite's dummy row, two seeds) feeds the store tests, the
report tests and the UI test. Helpers (the tiny model, test suites, shared classifiers) come from
``test_runner``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_runner import seed_classifiers, store_uri, tiny_model, tiny_suite  # noqa: F401 (tiny_model: a fixture)

from mmbench import tracking
from mmbench.cli import main
from mmbench.hashing import sha256_file
from mmbench.suites import get_suite, unregister_suite
from mmbench.suites.spec import Variant, overrides

REPO = Path(__file__).resolve().parents[1]
FIGURES = ("fig5", "fig8", "fig9", "fig13", "fig14", "fig15", "fig20")
TABLES = ("conditional", "unconditional", "robustness")


def _invoke(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _subprocess_env(home: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true"}
    if home is not None:
        env["MMBENCH_HOME"] = str(home)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """`mmbench run --suite synthetic --budget smoke --models dummy --seeds 0,1` into a fresh store."""
    home = tmp_path_factory.mktemp("smoke_home")
    seed_classifiers(home)
    uri = store_uri(home)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMBENCH_HOME", str(home))
        start = time.perf_counter()
        result = _invoke(["run", "--suite", "synthetic", "--budget", "smoke", "--models", "dummy", "--seeds", "0,1",
                          "--device", "cpu", "--quiet", "--threads", "1", "--tracking-uri", uri])
        seconds = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    return {"home": home, "uri": uri, "output": result.output, "seconds": seconds}


def _job_runs(uri: str) -> list[tracking.RunRecord]:
    store = tracking.Store(uri)
    return store.job_runs(store.experiment_id("synthetic", create=False))


# ------------------------------------------------------------------------------------------ torch-free


def test_help_and_ls_do_not_import_torch():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from mmbench.cli import main\n"
        "outs = [CliRunner().invoke(main, args) for args in (['--help'], ['ls', 'models'], ['ls', 'suites'])]\n"
        "assert all(o.exit_code == 0 for o in outs), [o.output for o in outs]\n"
        "print(outs[1].output)\n"
        "print('HEAVY', sorted(m for m in ('torch', 'mlflow') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_subprocess_env(),
                         timeout=120, check=True).stdout
    assert "HEAVY []" in out
    from mmbench import registry

    listed = [line.split()[0] for line in out.splitlines() if line and not line.startswith("HEAVY")]
    assert listed == registry.names()


def test_ls_suites_marks_budgets():
    out = _invoke(["ls", "suites", "-v"]).output
    for name in ("polymnist10", "polymnist10-scaling", "polymnist10-ablation", "polymnist5", "synthetic"):
        assert f"\n{name}  v" in "\n" + out
    assert "unmeasured, to be sized" in out and "ranks nothing" in out and "the paper's sizes" in out
    assert "        mvtcae: steps 1500\n" in out  # a budget's per-model overrides are listed


# ------------------------------------------------------------------------------------------ run + store


def test_smoke_run_logs_params_tags_metrics_and_artifacts(smoke):
    assert "ranks nothing" in smoke["output"]
    assert "[2/2] dummy seed" in smoke["output"]
    runs = _job_runs(smoke["uri"])
    assert sorted(r.tags["seed"] for r in runs) == ["0", "1"] and {r.status for r in runs} == {"FINISHED"}
    store = tracking.Store(smoke["uri"])
    experiment = store.client.get_experiment_by_name("mmbench/synthetic")
    assert Path(experiment.artifact_location).is_absolute()
    assert Path(experiment.artifact_location).parent == smoke["home"] / "mlartifacts"
    classifiers = smoke["home"] / "classifiers"
    for run in runs:
        tags = run.tags
        parent = store.run(tags["mlflow.parentRunId"])
        assert parent.tags["kind"] == "invocation" and parent.status == "FINISHED"
        for key in ("suite_version", "budget", "model", "job_id", "config_hash", "git_commit", "versions.torch",
                    "dataset_hash", "fid_extractor", "fid_weights", "device"):
            assert tags.get(key), key
        assert (tags["suite"], tags["model"], tags["budget"], tags["device"]) == ("synthetic", "dummy", "smoke", "cpu")
        assert tags["classifier_sha256"] == sha256_file(classifiers / f"{tags['classifier']}.pt")
        assert tags["substitute_sha256"] == sha256_file(classifiers / f"{tags['substitute']}.pt")
        assert run.params["model/latent_dim"] == "16" and run.params["seed"] == tags["seed"]
        assert run.params["eval/n_conditional"] == "24" and run.params["data/n_train"] == "256"
        directions = store.read_json(run.run_id, "metric_keys.json")
        assert json.loads(tags["skipped"]) == store.read_json(run.run_id, "skipped.json") == {}
        evaluated = {k for k in run.metrics if not k.startswith(("train/", "val/", "stage/", "job/"))}
        assert run.metrics["job/seconds"] > 0
        assert evaluated == set(directions)  # every expected key has a value (dummy can do everything)
        assert all(np.isfinite(v) for v in run.metrics.values())
        assert directions["coherence/loo/mean"] is True and directions["fid/loo/mean"] is False
        config = store.read_json(run.run_id, "config.json")
        assert config["job_id"] == tags["job_id"] and config["config"]["latent_dim"] == 16
        names = set(store.artifact_names(run.run_id, "samples")) | set(store.artifact_names(run.run_id, "tables"))
        assert {"samples/samples_loo.png", "samples/samples_uncond.png", "tables/mode_coverage_counts.csv",
                "tables/coherence_conditional.csv"} <= names
    assert len({r.tags["job_id"] for r in runs}) == 2


def test_rerun_of_a_finished_suite_skips_every_job(smoke, monkeypatch):
    monkeypatch.setenv("MMBENCH_HOME", str(smoke["home"]))
    start = time.perf_counter()
    result = _invoke(["run", "--suite", "synthetic", "--budget", "smoke", "--models", "dummy", "--seeds", "0,1",
                      "--quiet", "--tracking-uri", smoke["uri"]])
    assert result.exit_code == 0, result.output
    assert "2 already finished, 0 to run" in result.output
    assert time.perf_counter() - start < smoke["seconds"]
    assert len(_job_runs(smoke["uri"])) == 2


@pytest.mark.usefixtures("tiny_model")
def test_exit_code_counts_failed_jobs(_isolated_home):
    seed_classifiers(_isolated_home)
    tiny_suite("t-cli-fail", (Variant("ok", "tiny-ae"), Variant("bad1", "tiny-ae", overrides(explode=True)),
                              Variant("bad2", "tiny-ae", overrides(explode=True, latent=3))))
    result = _invoke(["run", "--suite", "t-cli-fail", "--quiet", "--device", "cpu", "--threads", "1",
                      "--tracking-uri", store_uri(_isolated_home)])
    assert result.exit_code == 2, result.output
    assert result.output.count("FAILED") >= 2 and "1 finished, 2 failed" in result.output
    unregister_suite("t-cli-fail")


@pytest.mark.usefixtures("tiny_model")
def test_dry_run_prints_plan_and_cost_and_writes_nothing(_isolated_home):
    tiny_suite("t-cli-dry", (Variant("a", "tiny-ae"), Variant("b", "tiny-ae", overrides(sample_noise=0.2))))
    uri = store_uri(_isolated_home)
    result = _invoke(["run", "--suite", "t-cli-dry", "--dry-run", "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    assert "ae/m0..m2 (3) 12×32;" in result.output and "ae/m0..m2 (3) 12×32 (shared)" in result.output
    assert "to run: 2 jobs, 36 optimiser steps" in result.output  # b's three stages are a's
    assert "conditional queries" in result.output and "evaluation generates" in result.output
    assert not (_isolated_home / "store.db").exists()
    unregister_suite("t-cli-dry")


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(("args", "message"), [
    (["run", "--suite", "synthetc"], "Did you mean 'synthetic'?"),
    (["run", "--suite", "synthetic", "--budget", "smok"], "Did you mean 'smoke'?"),
    (["run", "--suite", "synthetic", "--models", "dumy", "--dry-run"], "Did you mean 'dummy'?"),
    (["validate", "--suite", "polymnist1O"], "Did you mean 'polymnist10'?"),
    (["rnu"], "Did you mean 'run'?"),
    (["report", "--suite", "synthetic", "--format", "docx"], "unknown format"),
])
def test_unknown_names_get_did_you_mean(args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert message in result.output


@pytest.mark.usefixtures("tiny_model")
def test_validate_catches_a_bad_suite():
    tiny_suite("t-cli-bad", (Variant("ok", "tiny-ae"), Variant("typo", "mvea")),
               metrics=("coherence", "unconditional_fid", "coherense"))
    result = _invoke(["validate", "--suite", "t-cli-bad"])
    assert result.exit_code == 1
    assert "Did you mean 'mvae'?" in result.output and "Did you mean 'coherence'?" in result.output
    assert "'unconditional_fid' needs unconditional" in result.output
    unregister_suite("t-cli-bad")


def test_unreachable_tracking_uri_fails_fast(_isolated_home):
    start = time.perf_counter()
    result = CliRunner().invoke(main, ["run", "--suite", "synthetic", "--models", "dummy",
                                       "--tracking-uri", f"http://127.0.0.1:{_free_port()}"])
    assert result.exit_code == 1
    assert "cannot reach the MLflow tracking server" in result.output
    assert time.perf_counter() - start < 30
    assert not (_isolated_home / "classifiers").exists()  # failed before any work
    blocker = _isolated_home / "a-file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(main, ["run", "--suite", "synthetic", "--models", "dummy",
                                       "--tracking-uri", f"sqlite:///{blocker}/store.db"])
    assert result.exit_code == 1 and "cannot create the folder" in result.output


# ------------------------------------------------------------------------------------------ report


def test_report_writes_every_table_and_figure(smoke, tmp_path):
    out = tmp_path / "report"
    result = _invoke(["report", "--suite", "synthetic", "--budget", "smoke", "--tracking-uri", smoke["uri"],
                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in TABLES:
        for fmt in ("md", "csv", "tex"):
            assert (out / "tables" / f"{name}.{fmt}").stat().st_size > 0
    for name in FIGURES:
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / "figures" / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    for kind in ("loo", "uncond"):
        assert (out / "samples" / f"dummy_{kind}.png").read_bytes()[:4] == b"\x89PNG"
    index = (out / "report.md").read_text()
    assert "ranks nothing" in index and "not drawn" not in index
    # only dummy was run: every other row is listed as missing, with its reason, and shows no number
    assert "## Missing rows" in index and "- mvae: seed 0: no run yet" in index and "\n- dummy:" not in index
    assert "| mvae | — [1] | — [1] |" in (out / "tables" / "conditional.md").read_text()
    # the findings check: no SBM or MVAE row ran, so each claim cannot be checked, and says what it lacks
    findings = list(csv.DictReader(io.StringIO((out / "findings.csv").read_text())))
    assert len(findings) == 5 and {f["verdict"] for f in findings} == {"cannot be checked"}
    assert "sbm-vae coherence/uncond/all_agree: no run yet for this row" in findings[0]["missing"]
    assert "## Findings" in index and "**cannot be checked**" in (out / "findings.md").read_text()
    runs = _job_runs(smoke["uri"])
    prov = json.loads((out / "provenance.json").read_text())
    assert sorted(prov["runs"]["dummy"].values()) == sorted(r.run_id for r in runs)
    assert prov["suite_version"] == get_suite("synthetic").version and prov["shared"]["git_commit"]
    # the table's mean ± std equals an independent computation from the store
    values = [r.metrics["coherence/loo/mean"] for r in runs]
    expected = f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"
    assert f"| dummy | {expected} |" in (out / "tables" / "conditional.md").read_text()
    csv_line = next(line for line in (out / "tables" / "conditional.csv").read_text().splitlines()
                    if line.startswith("dummy,") and "coherence/loo/mean" in line)
    assert abs(float(csv_line.split(",")[3]) - np.mean(values)) < 1e-12


def test_report_does_not_import_torch(smoke, tmp_path):
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from mmbench.cli import main\n"
        f"r = CliRunner().invoke(main, ['report', '--suite', 'synthetic', '--budget', 'smoke', '--tracking-uri', "
        f"{smoke['uri']!r}, '--out', {str(tmp_path)!r}, '--format', 'md'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_subprocess_env(smoke["home"]), timeout=300, check=True).stdout
    assert "TORCH False" in out
    assert (tmp_path / "tables" / "conditional.md").exists() and not (tmp_path / "tables" / "conditional.tex").exists()


def test_report_without_runs_says_what_to_run(_isolated_home):
    result = CliRunner().invoke(main, ["report", "--suite", "synthetic", "--tracking-uri", store_uri(_isolated_home)])
    assert result.exit_code != 0
    assert "mmbench run --suite synthetic" in result.output


# ------------------------------------------------------------------------------------------ ui


def _post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_ui_serves_the_store_on_loopback_and_stops(smoke):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmbench", "ui", "--tracking-uri", smoke["uri"], "--port", str(port)],
        env=_subprocess_env(smoke["home"]), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        experiments = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and experiments is None:
            try:
                experiments = _post(f"{base}/api/2.0/mlflow/experiments/search", {"max_results": 100})
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(1)
        assert experiments is not None, "the MLflow UI did not answer within 120 s"
        found = {e["name"]: e["experiment_id"] for e in experiments["experiments"]}
        assert "mmbench/synthetic" in found
        runs = _post(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [found["mmbench/synthetic"]]})
        job_ids = {r["info"]["run_id"] for r in runs["runs"]}
        assert {r.run_id for r in _job_runs(smoke["uri"])} <= job_ids
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert f"at {base}" in output
    assert proc.returncode == 0, output
    with socket.socket() as sock:  # the server's whole process group is gone: the port is free again
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
