"""Cost you can plan with: measured step and sample times price the next run; the cost model otherwise;
job lines for parallel jobs; an ETA from each remaining job's own estimate; no carriage returns off a TTY.

Runs use :class:`tests.test_runner.TinyAE` (two linear autoencoder stages) on the synthetic patterns.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_runner import _run, seed_classifiers, store_uri, tiny_budget, tiny_model, tiny_suite  # noqa: F401 (a fixture)

from mmbench import paths, tracking
from mmbench.runner import cost
from mmbench.runner.dryrun import dry_run
from mmbench.runner.job import CLAIMED, JobOutcome
from mmbench.runner.plan import stage_costs
from mmbench.runner.prepare import RunOptions
from mmbench.runner.run import Progress
from mmbench.suites import get_suite, suite_names, unregister_suite
from mmbench.suites.spec import Variant, overrides

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture(autouse=True)
def _forget_test_suites():
    """The suites a test registers end with it (a later test walks every registered suite)."""
    before = set(suite_names())
    yield
    for name in set(suite_names()) - before:
        unregister_suite(name)


def _finished_run(home: Path, suite: str) -> tracking.RunRecord:
    store = tracking.Store(store_uri(home))
    experiment = store.experiment_id(suite, create=False)
    (run,) = store.job_runs(experiment, None, tracking.FINISHED)
    return run


def test_a_dry_run_after_a_run_prices_more_steps_from_the_measured_step_and_sample_times(_isolated_home, tiny_model):  # noqa: F811
    seed_classifiers(_isolated_home)
    tiny_suite("t-cost", (Variant("ae", "tiny-ae"),), budget=tiny_budget(**{"tiny-ae": {"steps": 6}}))
    summary, _ = _run("t-cost", _isolated_home)
    assert [o.status for o in summary.outcomes] == ["FINISHED"]
    run = _finished_run(_isolated_home, "t-cost")
    assert run.tags["threads"] == "1" and run.tags["device"] == "cpu" and run.tags["cost_key"]
    per_step = {m: run.metrics[f"stage/ae/{m}/seconds_per_step"] for m in ("m0", "m1", "m2")}
    assert per_step["m0"] == pytest.approx(run.metrics["stage/ae/m0/seconds"] / 6)
    per_sample = run.metrics["job/eval_seconds_per_sample"]
    stored = {}  # the artifact store keeps each stage's cost beside its weights
    for path in paths.artifacts_dir().glob("*.pt"):
        meta = torch.load(path, weights_only=True)["meta"]
        stored[meta["stage"]] = meta
    assert stored["ae/m0"]["seconds_per_step"] == pytest.approx(per_step["m0"])
    assert {k: stored["ae/m1"][k] for k in ("device", "threads", "batch_size", "steps", "trained_steps")} == {
        "device": "cpu", "threads": 1, "batch_size": 32, "steps": 6, "trained_steps": 6}

    # a second run of the same model with three times the steps: priced from the measurements
    tiny_suite("t-cost", (Variant("ae", "tiny-ae"),), budget=tiny_budget(**{"tiny-ae": {"steps": 18}}))
    lines: list[str] = []
    (priced,) = dry_run("t-cost", RunOptions(tracking_uri=store_uri(_isolated_home), device="cpu", threads=1),
                        lines.append)
    generated = priced.conditional + priced.unconditional
    assert per_sample == pytest.approx(run.metrics["job/eval_seconds"] / generated)  # same sizes, other steps
    overhead = run.metrics["job/overhead_seconds"]
    stage_seconds = sum(run.metrics[f"stage/ae/{m}/seconds"] for m in per_step)
    assert overhead == pytest.approx(run.metrics["job/seconds"] - stage_seconds - run.metrics["job/eval_seconds"])
    closed_form = 18 * sum(per_step.values()) + generated * per_sample + overhead
    assert priced.seconds == pytest.approx(closed_form, rel=1e-9)
    assert {p.source for p in priced.estimate.parts} == {cost.MEASURED}
    job_line = next(line for line in lines if priced.job.job_id in line)
    training, evaluation = 18 * sum(per_step.values()), generated * per_sample
    assert (f"(training {cost.format_seconds(training)} measured here, "
            f"eval {cost.format_seconds(evaluation)} measured here, "
            f"overhead {cost.format_seconds(overhead)} measured here)") in job_line
    assert f"~{cost.format_seconds(closed_form)}" in job_line

    # measured at one thread: a plan for two threads per job is not priced from it
    lines = []
    (other,) = dry_run("t-cost", RunOptions(tracking_uri=store_uri(_isolated_home), device="cpu", threads=2),
                       lines.append)
    assert cost.MEASURED not in {p.source for p in other.estimate.parts}
    assert "measurements of these models also exist for cpu with 1 thread(s)" in lines[-1]


def test_an_empty_store_prices_from_the_cost_model_and_says_so(_isolated_home):
    lines: list[str] = []
    suite = get_suite("synthetic")
    options = RunOptions(budget="smoke", models=("mvae",), device="cpu", threads=1,
                         tracking_uri=store_uri(_isolated_home))
    (priced,) = dry_run(suite, options, lines.append)
    (stage,) = priced.stages
    ref = cost.COST_MODEL[("mvae", "joint")]
    width = priced.job.config["width"]
    per_step = ref.seconds_per_step * (stage.batch_size / 64) * (width / 0.25) ** 2 * (3 / 10)
    generated = priced.conditional + priced.unconditional
    closed_form = stage.steps * per_step + generated * cost.SECONDS_PER_DIRECT_SAMPLE
    assert priced.seconds == pytest.approx(closed_form, rel=1e-9)
    line = next(line for line in lines if "mvae seed 0" in line)
    evaluation = generated * cost.SECONDS_PER_DIRECT_SAMPLE
    assert (f"(training {cost.format_seconds(stage.steps * per_step)} cost model, "
            f"eval {cost.format_seconds(evaluation)} cost model)") in line
    assert "priced: 2 by cost model" in lines[-1]
    assert not Path(_isolated_home, "store.db").exists()  # a dry run writes nothing


def test_a_model_neither_measured_nor_in_the_cost_model_is_unknown(_isolated_home, tiny_model):  # noqa: F811
    tiny_suite("t-unknown", (Variant("ae", "tiny-ae"),))
    lines: list[str] = []
    (priced,) = dry_run("t-unknown", RunOptions(device="cpu", threads=1, tracking_uri=store_uri(_isolated_home)),
                        lines.append)
    assert priced.seconds is None
    assert "(training unknown, eval unknown)" in next(line for line in lines if "ae seed 0" in line)
    assert "4 unknown" in lines[-1]  # three stages and the evaluation


def _estimate(seconds: float) -> cost.JobEstimate:
    return cost.JobEstimate((cost.Part("train", seconds, cost.MEASURED),))


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_eta_sums_the_remaining_jobs_own_estimates_not_the_average_of_past_jobs():
    jobs = [_Job(f"j{i}") for i in range(3)]
    lines: list[str] = []
    clock = _Clock()
    progress = Progress(3, 1, lines.append, {"j0": _estimate(160), "j1": _estimate(30), "j2": _estimate(40)}, clock)
    progress.start(jobs[0])
    clock.now = 164.0
    progress.done(JobOutcome("j0", "j0", "r", tracking.FINISHED, 164.0))
    assert lines[-1].endswith("(ETA ~1m10s)")  # 30 + 40, not 2 × 164
    progress.start(jobs[1])
    clock.now += 10.0
    assert progress.eta() == "~1m00s"  # 30 − 10 left of the running job + 40
    clock.now += 50.0  # the running job overruns its estimate: nothing negative is counted
    assert progress.eta() == "~40s"


def test_parallel_etas_divide_by_the_workers_and_count_jobs_without_an_estimate():
    lines: list[str] = []
    progress = Progress(3, 2, lines.append, {"j0": _estimate(100), "j1": _estimate(60)}, _Clock())
    progress.done(JobOutcome("j0", "j0", "r", tracking.FINISHED, 1.0))
    assert progress.eta() == "≥ 30s; 1 job(s) without an estimate"


class _Job:
    def __init__(self, job_id: str) -> None:
        self.job_id, self.title = job_id, job_id


def test_a_job_left_to_another_invocation_then_run_here_is_counted_once():
    lines: list[str] = []
    progress = Progress(2, 1, lines.append, {}, _Clock())
    progress.start(_Job("j0"))
    progress.done(JobOutcome("j0", "j0", "", CLAIMED, 0.0, "claimed"))  # another invocation holds it
    progress.start(_Job("j1"))
    progress.done(JobOutcome("j1", "j1", "r", tracking.FINISHED, 1.0))
    progress.start(_Job("j0"))  # the other invocation stopped: this one runs it at the end
    progress.done(JobOutcome("j0", "j0", "r", tracking.FINISHED, 1.0))
    progress.done(JobOutcome("j0", "j0", "r", tracking.FINISHED, 1.0))  # reported twice: said once
    counters = [line.split("]")[0] + "]" for line in lines]
    assert counters == ["[1/2]", "[-/2]", "[2/2]", "[1/2]", "[2/2]", "[2/2]"], lines


def test_parallel_jobs_each_say_they_started_and_finished(_isolated_home):
    seed_classifiers(_isolated_home)
    tiny_suite("t-par", (Variant("dummy", "dummy"),))  # loky workers import the registry fresh: a built-in model
    summary, lines = _run("t-par", _isolated_home, seeds=(0, 1), n_jobs=2)
    assert [o.status for o in summary.outcomes] == ["FINISHED", "FINISHED"]
    for title in ("dummy seed 0", "dummy seed 1"):
        started = [i for i, line in enumerate(lines) if f"] {title}  started  (job " in line]
        ended = [i for i, line in enumerate(lines) if f"] {title}  FINISHED  " in line]
        assert len(started) == 1 and len(ended) == 1 and started[0] < ended[0], lines


def test_the_start_watcher_reports_a_job_once_this_invocations_worker_claims_it(_isolated_home, tiny_model):  # noqa: F811
    from mmbench.runner.job import job_claim
    from mmbench.runner.parallel import StartWatcher

    suite = tiny_suite("t-watch", (Variant("a", "tiny-ae"), Variant("b", "tiny-ae", overrides(latent=3))))
    from mmbench.runner.prepare import prepare, resolve

    jobs = prepare(*resolve(suite, RunOptions()), RunOptions(), lambda _: None).jobs
    seen: list[str] = []
    other = job_claim(jobs[1])
    assert other.acquire("another invocation") is None
    mine = job_claim(jobs[0])
    with StartWatcher(jobs, "this invocation", lambda job: seen.append(job.job_id), poll_s=0.01):
        assert mine.acquire("this invocation") is None
        for _ in range(500):
            if seen:
                break
            time.sleep(0.01)
    mine.release()
    other.release()
    assert seen == [jobs[0].job_id]  # the other invocation's claim is not this run's start


def test_the_cli_off_a_terminal_writes_plain_lines_without_carriage_returns(tmp_path):
    env = {**os.environ, "MMBENCH_HOME": str(tmp_path), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "mmbench", "run", "--suite", "synthetic", "--budget", "smoke",
               "--models", "mvtcae", "--threads", "1", "--device", "cpu"]
    result = subprocess.run(command, capture_output=True, env=env, timeout=600, check=False)
    out = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, out
    assert "\r" not in out
    assert "[1/1] mvtcae seed 0  started  (job " in out and "mvtcae-seed-0:joint: 3/3 (100 %)" in out


def test_a_job_gets_the_asked_threads_else_torch_s_default_in_process_else_a_share_of_the_cores():
    import os

    from mmbench.runner.parallel import job_threads

    share = max(1, (os.cpu_count() or 1) // 2)
    assert job_threads(3, 4, "dask") == 3
    assert job_threads(None, 1, "loky") is None  # one job at a time in this process: torch's default
    assert job_threads(None, 2, "loky") == share and job_threads(None, 2, "dask") == share
    assert job_threads(None, 1, "dask") == max(1, os.cpu_count() or 1)  # a dask worker process of its own


def test_the_cost_model_prices_a_lean_score_net_and_a_shorter_sampler_below_the_default():
    """The score stage and each sample of an SBM cost what its net and sampler cost: the lean UNet's profiled
    factors (training, sampling) and score evaluations × their price."""
    from types import SimpleNamespace

    from latentdiff.sampling import nfe_of
    from mmbench.runner.plan import StageCost

    base = {"sampler": "pc", "sampler_steps": 100, "corrector_steps": 1}
    default = SimpleNamespace(model="sbm-vae", config=base)
    lean = SimpleNamespace(model="sbm-vae", config={**base, "unet_level_attention": False, "unet_block_mult": 1,
                                                     "sampler_steps": 10})
    stage = StageCost(name="score", steps=100, batch_size=64, modalities=10)
    sampling, training = cost.SCORE_NET_FACTORS[(False, 1)]
    assert cost.cost_model_step(lean, stage) == pytest.approx(cost.cost_model_step(default, stage) * training)
    assert cost.cost_model_sample(default) == pytest.approx(200 * cost.SECONDS_PER_SCORE_EVALUATION)
    assert cost.cost_model_sample(lean) == pytest.approx(nfe_of("pc", 10) * cost.SECONDS_PER_SCORE_EVALUATION * sampling)
    assert 0 < sampling < training < 1
    ae = StageCost(name="ae/m0", steps=100, batch_size=64, modalities=1)
    assert cost.cost_model_step(lean, ae) == cost.cost_model_step(default, ae)  # the autoencoders are untouched


def test_finished_jobs_are_compared_with_the_cost_model_over_the_jobs_measured_in_full():
    """The dry run's check of the cost model: measured and estimated totals over the finished jobs whose every
    part was measured and which the cost model prices; their ratio and the per-job range."""
    from types import SimpleNamespace

    from mmbench.runner.cost import COST_MODEL_SOURCE, MEASURED, JobCost, JobEstimate, Part
    from mmbench.runner.dryrun import model_check

    def finished(job_id: str, *parts: Part) -> JobCost:
        return JobCost(SimpleNamespace(job_id=job_id), [], [], JobEstimate(parts), 10, 0)

    costs = [finished("a", Part("joint", 50.0, MEASURED), Part("eval", 10.0, MEASURED)),
             finished("b", Part("joint", 30.0, MEASURED)),
             finished("c", Part("joint", 99.0, COST_MODEL_SOURCE)),  # not measured in full: left out
             finished("d", Part("joint", 77.0, MEASURED))]  # the cost model cannot price it: left out
    modelled = {"a": 50.0, "b": 50.0, "c": 40.0, "d": None}
    assert model_check(costs, modelled) == ("finished jobs against the cost model: 2 job(s), 1m30s measured, "
                                            "1m40s estimated (×0.90; per job ×0.60–×1.20)")
    assert model_check(costs[2:], modelled) is None and model_check([], modelled) is None


def test_cpu_time_is_compared_with_the_cost_model_of_what_the_job_itself_ran():
    """The dry run's CPU check: every attempt's CPU time (unknown parts mean no figure), against the cost model's
    price of the stages the run trained and its evaluation (a stage it loaded is not its cost)."""
    from types import SimpleNamespace

    from mmbench.records import Metric, Tag
    from mmbench.runner.attempts import total_cpu_seconds
    from mmbench.runner.cost import COST_MODEL_SOURCE, JobCost, JobEstimate, Part
    from mmbench.runner.dryrun import CpuUse, cpu_against_model, cpu_use, model_check
    from mmbench.tracking import RunRecord

    cpu, attempts, earlier = Metric.JOB_CPU_SECONDS, Metric.ATTEMPTS, Metric.EARLIER_CPU_SECONDS
    assert total_cpu_seconds({cpu: 60.0}, resumed=False) == 60.0
    assert total_cpu_seconds({cpu: 60.0, attempts: 3.0, earlier: 30.0}, resumed=True) == 90.0
    assert total_cpu_seconds({cpu: 60.0}, resumed=True) is None  # resumed before earlier attempts were counted
    assert total_cpu_seconds({cpu: 60.0, attempts: 2.0}, resumed=True) is None
    assert total_cpu_seconds({attempts: 1.0}, resumed=False) is None  # before the CPU metric

    def run(metrics, resumed=False):
        tags = {Tag.RESUMED_FROM: "r0"} if resumed else {}
        return RunRecord("r", "FINISHED", 0, None, {}, metrics, tags, "")

    loaded = {cpu: 60.0, "stage/ae/m0/reused": 1.0, "stage/score/reused": 0.0}
    assert cpu_use(run(loaded)) == CpuUse(60.0, frozenset({"ae/m0"}))
    assert cpu_use(run({**loaded, attempts: 2.0, earlier: 9.0}, resumed=True)) is None  # whose CPU was it?
    assert cpu_use(run({cpu: 60.0, attempts: 2.0, earlier: 9.0, "stage/score/reused": 0.0}, resumed=True)) == \
        CpuUse(69.0, frozenset())

    def modelled(job_id, *parts):
        return JobCost(SimpleNamespace(job_id=job_id), [], [], JobEstimate(parts), 10, 0)

    costs = [modelled("a", Part("ae/m0", 100.0, COST_MODEL_SOURCE), Part("score", 20.0, COST_MODEL_SOURCE),
                      Part("eval", 40.0, COST_MODEL_SOURCE)),
             modelled("b", Part("joint", None, COST_MODEL_SOURCE)),  # unpriced: left out
             modelled("c", Part("joint", 30.0, COST_MODEL_SOURCE))]  # no CPU figure: left out
    uses = {"a": CpuUse(66.0, frozenset({"ae/m0"})), "b": CpuUse(5.0, frozenset())}
    pairs = cpu_against_model(uses, costs)
    assert pairs == {"a": (66.0, 60.0)}  # the loaded autoencoder's 100 s are not the job's
    text = model_check([modelled("a", Part("ae/m0", 1.0, COST_MODEL_SOURCE))], {"a": 160.0}, pairs)
    assert text == "finished jobs against the cost model: CPU time of the 1 job(s) that logged all of it: " \
                   "1m06s of CPU, 1m00s estimated (×1.10)"


def test_the_cost_model_prices_every_stage_and_evaluation_of_polymnist10_quick():
    """A fresh user's dry run of the main suite has no unknown part (each stage kind of every row is in
    COST_MODEL: the -C rows' energy model and the -T rows' contrastive encoders included)."""
    from mmbench.runner import data as run_data
    from mmbench.runner.plan import plan_jobs

    suite = get_suite("polymnist10")
    budget = suite.budget("quick")
    jobs = plan_jobs(suite, budget, run_data.classifier_plan(suite, budget, "h" * 16), provisional=True)
    costs = cost.job_costs(jobs, cost.Measurements.empty(), ("cpu", 1))
    unknown = [(c.job.label, p.name) for c in costs for p in c.estimate.parts if p.source == cost.UNKNOWN]
    assert len(costs) == 12 and unknown == []
    energy = next(p for c in costs if c.job.label == "sbm-vae-c" for p in c.estimate.parts if p.name == "energy")
    assert energy.seconds == pytest.approx(750 * 0.0163)  # quick's 750 steps at the reference's batch 64


def test_stages_the_artifact_store_holds_are_not_priced_as_training():
    """`mmbench run` prices only the jobs still to run, so a stage trained by an earlier, finished job is
    known only through the artifact store: with it stored, SBM-VAE-C costs its energy model, not the
    autoencoders and score net it loads (the dry run said 12 s while the run's own line said 1h07m)."""
    from mmbench.runner import data as run_data
    from mmbench.runner.plan import plan_jobs

    suite = get_suite("polymnist10")
    budget = suite.budget("quick")
    jobs = plan_jobs(suite, budget, run_data.classifier_plan(suite, budget, "h" * 16), provisional=True)
    (job,) = [j for j in jobs if j.label == "sbm-vae-c"]
    keys = {s.name: s.reuse_key for s in stage_costs(job)}

    def training(c: cost.JobCost) -> float:
        return sum(p.seconds for p in c.estimate.group(training=True))

    (alone,) = cost.job_costs([job], cost.Measurements.empty(), ("cpu", 1))
    (loaded,) = cost.job_costs([job], cost.Measurements.empty(), ("cpu", 1), stored=lambda key: key in keys.values())
    assert alone.shared == [] and training(alone) > 3600
    assert set(loaded.shared) == {name for name, key in keys.items() if key} and "energy" not in loaded.shared
    assert training(loaded) == pytest.approx(750 * 0.0163)


def test_a_runs_own_job_lines_count_the_stages_its_artifact_store_holds(tmp_path, monkeypatch):
    """The estimate `mmbench run` prints as a job starts (`[2/6] sbm-vae-c ... ~1h12m`) reads this home's
    artifact store, as the dry run does."""
    from mmbench.runner import data as run_data
    from mmbench.runner import run as run_mod
    from mmbench.runner.plan import plan_jobs

    monkeypatch.setenv("MMBENCH_HOME", str(tmp_path))
    suite = get_suite("polymnist10")
    budget = suite.budget("quick")
    jobs = plan_jobs(suite, budget, run_data.classifier_plan(suite, budget, "h" * 16), provisional=True)
    (job,) = [j for j in jobs if j.label == "sbm-vae-c"]
    paths.artifacts_dir().mkdir(parents=True)
    for stage in stage_costs(job):
        if stage.reuse_key:
            (paths.artifacts_dir() / f"{stage.reuse_key}.pt").write_bytes(b"stored by an earlier job")

    class NoFinishedRuns:
        def job_runs(self, *args):
            return []

    estimate = run_mod._estimates(NoFinishedRuns(), "e", [job], RunOptions(threads=1, device="cpu"))[job.job_id]
    assert [p.name for p in estimate.group(training=True)] == ["energy"]
