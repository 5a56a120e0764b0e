"""The runner: job ids, planning, validation, skip / resume / reuse, failures, and the dask backend.

Jobs run on the synthetic patterns with the ``dummy`` model or :class:`TinyAE` (a two-stage linear
autoencoder registered here, so training, checkpoints and stage reuse are exercised in seconds).
``tests/test_cli.py`` imports the helpers of this module.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from torch import nn

from mmbench import registry, tracking
from mmbench.config import src
from mmbench.contract import Capability, MultimodalModel, Stage, StageHParams
from mmbench.hashing import config_hash
from mmbench.runner import data as data_mod
from mmbench.runner import models as model_cache
from mmbench.runner.job import cpu_threads
from mmbench.runner.plan import plan_jobs
from mmbench.runner.run import RunOptions, format_seconds, run_suite
from mmbench.runner.validate import SuiteInvalid, validate_suite
from mmbench.suites import get_suite, register_suite, unregister_suite
from mmbench.suites.spec import Budget, DatasetSpec, Suite, Variant, overrides

# ------------------------------------------------------------------------------------- a tiny test model


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    latent: int = src(4, "test model")
    steps: int = src(12, "optimiser steps of each stage")
    explode: bool = src(False, "raise inside the loss: a job that fails")
    sample_noise: float = src(0.0, "used only when sampling: rows that differ here share trained stages")
    data_id: str = src("", "set by the harness to the data's identity")


TRAINING_CALLS: dict[str, int] = {}  # modality -> loss evaluations with gradients (optimiser steps)


class TinyAE(MultimodalModel):
    """One linear autoencoder per modality (a stage each); conditional = decode the mean given latent."""

    Config = TinyConfig
    capabilities = frozenset({Capability.CONDITIONAL})
    paper = "none: a test model for the harness"

    def __init__(self, modalities, config: TinyConfig) -> None:
        super().__init__(modalities, config)
        pixels = 3 * 28 * 28
        self.enc = nn.ModuleDict({m: nn.Linear(pixels, config.latent) for m in self.modalities})
        self.dec = nn.ModuleDict({m: nn.Linear(config.latent, pixels) for m in self.modalities})

    def stages(self) -> list[Stage]:
        seed = torch.initial_seed()
        return [
            Stage(
                f"ae/{m}", nn.ModuleDict({"e": self.enc[m], "d": self.dec[m]}), self._loss(m),
                StageHParams(steps=self.config.steps, batch_size=32, lr=1e-2, checkpoint_every=4),
                modalities=(m,),
                reuse_key=config_hash(
                    ["tiny", m, self.config.latent, self.config.steps, self.config.explode, self.config.data_id, seed]
                ),
            )
            for m in self.modalities
        ]

    def _loss(self, m: str):
        def loss(batch, labels):
            if self.config.explode:
                raise RuntimeError("boom: this test model always fails")
            if torch.is_grad_enabled():
                TRAINING_CALLS[m] = TRAINING_CALLS.get(m, 0) + 1
            x = batch[m].flatten(1)
            rec = torch.sigmoid(self.dec[m](self.enc[m](x)))
            return {"loss": ((rec - x) ** 2).mean()}

        return loss

    def _sample_conditional(self, batch, given, targets):
        self.last_nfe = 3  # reported like a score-based sampler's score evaluations per sample
        z = torch.stack([self.enc[g](batch[g].flatten(1)) for g in sorted(given)]).mean(0)
        z = z + self.config.sample_noise * torch.randn_like(z)
        return {t: torch.sigmoid(self.dec[t](z)).view(-1, 3, 28, 28) for t in sorted(targets)}


@pytest.fixture
def tiny_model():
    """Register TinyAE as ``tiny-ae`` for one test only (other tests iterate over the registered models)."""
    registry.register("tiny-ae", f"{__name__}:TinyAE", "harness test model: linear autoencoders (tests only)")
    model_cache.clear()
    yield "tiny-ae"
    registry.MODELS.unregister("tiny-ae")
    model_cache.clear()

# ------------------------------------------------------------------------------------- test suites

SYNTHETIC_SMOKE = get_suite("synthetic").budget("smoke")


def tiny_budget(**model_overrides) -> Budget:
    """The synthetic suite's smoke sizes (so the on-the-fly classifiers are shared) with explicit overrides."""
    return dataclasses.replace(
        SYNTHETIC_SMOKE, scale=type(SYNTHETIC_SMOKE.scale)(),
        model_overrides=tuple((m, overrides(o)) for m, o in model_overrides.items()),
    )


def tiny_suite(name: str, rows: tuple[Variant, ...], metrics: tuple[str, ...] = ("coherence",),
               budget: Budget | None = None, **kwargs) -> Suite:
    suite = Suite(
        name=name, version="t1", description="a test suite", dataset=DatasetSpec("synthetic", "patterns3", 3),
        variants=rows, metrics=metrics, budgets=(budget or tiny_budget(),), default_budget="smoke", **kwargs,
    )
    return register_suite(suite, replace=True)


@lru_cache(maxsize=1)
def _trained_classifiers() -> Path:
    """Train the synthetic smoke budget's classifiers once per pytest run (as `mmbench run` would)."""
    import os
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="mmbench-test-classifiers-"))
    previous = os.environ.get("MMBENCH_HOME")
    os.environ["MMBENCH_HOME"] = str(folder)
    try:
        suite = get_suite("synthetic")
        ref = data_mod.data_ref(suite.dataset, SYNTHETIC_SMOKE, suite.dataset.modalities)
        plan = data_mod.classifier_plan(suite, SYNTHETIC_SMOKE, ref.dataset_hash)
        with cpu_threads(1):
            data_mod.ensure_classifiers(suite, SYNTHETIC_SMOKE, plan, lambda _: None, "cpu")
    finally:
        if previous is None:
            os.environ.pop("MMBENCH_HOME", None)
        else:
            os.environ["MMBENCH_HOME"] = previous
    return folder / "classifiers"


def seed_classifiers(home: Path) -> None:
    """Copy the pytest run's trained synthetic classifiers into ``home`` (skips training them per test)."""
    shutil.copytree(_trained_classifiers(), Path(home) / "classifiers", dirs_exist_ok=True)


def store_uri(home: Path) -> str:
    return f"sqlite:///{Path(home) / 'store.db'}"


# ------------------------------------------------------------------------------------------ planning


def test_job_ids_hash_the_resolved_config(tiny_model):
    suite = tiny_suite("t-ids", (Variant("a", "tiny-ae"), Variant("b", "tiny-ae", overrides(sample_noise=0.5))))
    budget = suite.budget("smoke")
    plan = data_mod.classifier_plan(suite, budget, "h" * 16)
    first = plan_jobs(suite, budget, plan, seeds=(0, 1))
    again = plan_jobs(suite, budget, plan, seeds=(0, 1))
    assert [j.job_id for j in first] == [j.job_id for j in again]  # deterministic
    assert len({j.job_id for j in first}) == 4  # rows x seeds all distinct
    a0, a1, b0 = first[0], first[1], first[2]
    assert (a0.label, a0.seed, a1.seed, b0.label) == ("a", 0, 1, "b")
    assert a0.config["sample_noise"] == 0.0 and b0.config["sample_noise"] == 0.5
    # the harness sets data_id, and it is the data's identity
    assert a0.config["data_id"] == a0.data.data_id != ""
    # eval settings are part of the identity; the device is not
    other = dataclasses.replace(budget, eval_overrides=overrides(dict(budget.eval_overrides), n_conditional=30))
    suite2 = tiny_suite("t-ids", suite.variants, budget=other)
    changed = plan_jobs(suite2, other, plan, seeds=(0,))
    assert changed[0].job_id != a0.job_id
    assert "device" not in dict(a0.eval_settings)
    assert dict(a0.eval_settings)["seed"] == 0 and dict(a1.eval_settings)["seed"] == 1
    # each job carries what the budget set for its row, which the report compares with today's budget
    assert json.loads(a0.row_settings)["model"] == {} and json.loads(b0.row_settings)["model"] == {"sample_noise": 0.5}
    assert json.loads(changed[0].row_settings)["eval"]["n_conditional"] == 30
    unregister_suite("t-ids")


def test_a_change_of_the_budget_is_named_by_its_first_differing_setting():
    from mmbench.report.collect import settings_difference

    budget = get_suite("synthetic").budget("smoke")
    row = Variant("a", "tiny-ae", overrides(sample_noise=0.5))
    before = budget.row_settings(row)
    assert settings_difference(json.loads(json.dumps(before)), budget.row_settings(row)) is None
    assert budget.scale.steps is not None
    rescaled = dataclasses.replace(budget, scale=dataclasses.replace(budget.scale, steps=budget.scale.steps + 3))
    assert settings_difference(before, rescaled.row_settings(row)) == (
        f"scale/steps: {budget.scale.steps} in the run, {budget.scale.steps + 3} now")
    assert settings_difference(before, budget.row_settings(Variant("a", "tiny-ae"))) == (
        "model/sample_noise: 0.5 in the run, unset now")


def test_select_rows_and_unknown_names():
    suite = get_suite("synthetic")
    assert [v.label for v in suite.select(("dummy",))] == ["dummy"]
    with pytest.raises(KeyError, match="Did you mean 'dummy'"):
        suite.select(("dumy",))
    with pytest.raises(KeyError, match="Did you mean 'smoke'"):
        suite.budget("smoek")
    with pytest.raises(KeyError, match="Did you mean 'synthetic'"):
        get_suite("synthetc")


def test_synthetic_data_identity_is_content_and_size():
    suite = get_suite("synthetic")
    small = data_mod.data_ref(suite.dataset, SYNTHETIC_SMOKE, suite.dataset.modalities)
    again = data_mod.data_ref(suite.dataset, SYNTHETIC_SMOKE, suite.dataset.modalities)
    bigger = data_mod.data_ref(suite.dataset, dataclasses.replace(SYNTHETIC_SMOKE, n_train=300), suite.dataset.modalities)
    two = data_mod.data_ref(suite.dataset, SYNTHETIC_SMOKE, suite.dataset.modalities[:2])
    assert small == again
    assert len({small.data_id, bigger.data_id, two.data_id}) == 3
    train, val, test = data_mod.load_splits(two)
    assert (len(train), len(val), len(test)) == (256, 32, 48)
    assert train.modalities == ("m0", "m1")


# ----------------------------------------------------------------------------------------- validation


def test_validate_accepts_the_synthetic_dummy_row():
    report = validate_suite(get_suite("synthetic"), ["smoke"], ["dummy"])
    assert report.ok, report.errors


def test_validate_reports_every_problem(tiny_model):
    bad_budget = dataclasses.replace(
        tiny_budget(**{"tiny-ae": {"latnet": 8}}, dummy={"latent_dim": 8}),
        eval_overrides=overrides(n_conditionl=10),
    )
    suite = tiny_suite(
        "t-bad",
        (Variant("ok", "tiny-ae"), Variant("typo", "dumy"), Variant("d", "dummy")),
        metrics=("coherence", "unconditional_coherence", "coherense"),
        budget=bad_budget, figures=("fig9", "fig99"), tables=("conditonal",),
    )
    report = validate_suite(suite)
    text = "\n".join(report.errors)
    assert "unknown model 'dumy'. Did you mean 'dummy'?" in text
    assert "unknown metric 'coherense'. Did you mean 'coherence'?" in text
    assert "'unconditional_coherence' needs unconditional, which model 'tiny-ae'" in text
    assert "unknown config field 'latnet'" in text and "Did you mean 'latent'?" in text
    assert "unknown eval setting 'n_conditionl'" in text
    assert "figure 'fig99' is unknown" in text and "table 'conditonal' is unknown" in text
    assert "Did you mean 'conditional'?" in text
    assert not any("row 'd'" in e for e in report.errors)  # the dummy row with a valid override is fine
    unregister_suite("t-bad")


def test_optional_metric_is_a_note_not_an_error(tiny_model):
    suite = tiny_suite("t-opt", (Variant("ok", "tiny-ae"),), metrics=("coherence", "latent_cosine"),
                       optional_metrics=frozenset({"latent_cosine"}))
    report = validate_suite(suite)
    assert report.ok, report.errors
    assert any("latent_cosine will be skipped for ok" in n for n in report.notes)
    unregister_suite("t-opt")


def test_overrides_for_models_without_a_row_are_notes_unless_unregistered(tiny_model):
    """A budget shared by several suites may size models one suite has no row for; a typo is an error."""
    budget = tiny_budget(mvtcae={"steps": 5}, mvtcea={"steps": 5})
    suite = tiny_suite("t-unused", (Variant("ok", "tiny-ae"),), budget=budget)
    report = validate_suite(suite)
    assert any("overrides for 'mvtcae' unused" in n for n in report.notes)
    assert any("'mvtcea', which is not a registered model. Did you mean 'mvtcae'?" in e for e in report.errors)
    assert not any("'mvtcae'," in e for e in report.errors)
    noted = dataclasses.replace(tiny_budget(), model_notes=(("mopoe", "capped"), ("mopo", "typo")))
    report = validate_suite(tiny_suite("t-unused", (Variant("ok", "tiny-ae"),), budget=noted))
    assert any("a note for 'mopoe' unused" in n for n in report.notes)
    assert any("a note for 'mopo', which is not a registered model. Did you mean 'mopoe'?" in e for e in report.errors)
    unregister_suite("t-unused")


def test_budget_without_a_scaler_is_invalid(tiny_model):
    budget = dataclasses.replace(SYNTHETIC_SMOKE)  # a non-empty scale; tiny-ae has no scaler
    suite = tiny_suite("t-scale", (Variant("ok", "tiny-ae"),), budget=budget)
    report = validate_suite(suite)
    assert any("no scaler for model 'tiny-ae'" in e for e in report.errors)
    unregister_suite("t-scale")


def test_every_builtin_suite_is_structurally_sound():
    from mmbench.suites import suite_names

    for name in suite_names():
        suite = get_suite(name)
        assert suite.version and suite.budgets and suite.variants
        assert {b.name for b in suite.budgets} >= {"smoke", "quick"}
        assert not suite.budget("smoke").ranks


# ------------------------------------------------------------------------- running: skip, resume, fail


def _run(suite: str, home: Path, should_stop=None, **options):
    lines: list[str] = []
    options.setdefault("threads", 1)  # one torch thread: far faster than two on a busy shared CPU
    summary = run_suite(suite, RunOptions(tracking_uri=store_uri(home), quiet=True, device="cpu", **options),
                        lines.append, should_stop)
    return summary, lines


def test_interrupted_job_resumes_and_finished_jobs_are_skipped(_isolated_home, tiny_model, monkeypatch):
    import mmbench.runner.provenance

    monkeypatch.setattr(mmbench.runner.provenance, "git_commit", lambda root=None: "c1")
    seed_classifiers(_isolated_home)
    tiny_suite("t-resume", (Variant("ae", "tiny-ae"),))
    calls = {"n": 0}

    def stop_in_second_stage() -> bool:  # stage ae/m0 runs 12 steps; stop at step 5 of ae/m1
        calls["n"] += 1
        return calls["n"] > 12 + 5

    summary, lines = _run("t-resume", _isolated_home, should_stop=stop_in_second_stage)
    assert [o.status for o in summary.outcomes] == ["KILLED"]
    assert len(summary.failed) == 1
    killed = summary.outcomes[0].run_id
    store = tracking.Store(store_uri(_isolated_home))
    assert store.run(killed).tags["error"].startswith("stopped:")
    assert store.run(killed).metrics["job/seconds"] == pytest.approx(summary.outcomes[0].seconds)

    # the stopped attempt left its time beside the checkpoints; add one killed outright (it logged nothing)
    (attempts_file,) = _isolated_home.rglob("attempts.json")
    recorded = json.loads(attempts_file.read_text())
    assert [a["run_id"] for a in recorded] == [killed]
    assert recorded[0]["wall"] == pytest.approx(store.run(killed).metrics["job/seconds"], abs=0.5)
    assert recorded[0]["previous"] is None  # the job's first attempt
    recorded[0]["previous"] = "gone"  # as if it had resumed one killed outright
    attempts_file.write_text(json.dumps([*recorded, {"run_id": "gone", "wall": 1000.0, "cpu": 400.0, "previous": None}]))

    TRAINING_CALLS.clear()
    monkeypatch.setattr(mmbench.runner.provenance, "git_commit", lambda root=None: "c2")  # the code changed
    resumed, _ = _run("t-resume", _isolated_home)
    (outcome,) = resumed.outcomes
    assert outcome.status == "FINISHED" and not resumed.failed
    run = store.run(outcome.run_id)
    assert run.tags["resumed_from"] == killed
    assert run.metrics["job/attempts"] == 3.0
    assert run.metrics["job/earlier_attempts_seconds"] == pytest.approx(1000.0 + recorded[0]["wall"])
    assert run.metrics["job/earlier_attempts_cpu_seconds"] == pytest.approx(400.0 + recorded[0]["cpu"])
    assert run.tags["mlflow.parentRunId"] == resumed.parent_run_id
    assert run.metrics["stage/ae/m0/reused"] == 1.0  # finished before the stop: loaded, not retrained
    assert run.metrics["stage/ae/m1/reused"] == 0.0
    # m0 was done: loaded; m1 stopped after 5 of 12 steps: only the other 7 trained; m2 never started
    assert TRAINING_CALLS == {"m1": 12 - 5, "m2": 12}
    # each stage says which code trained its steps (the run's own git_commit tag names only the last)
    assert json.loads(run.tags["stage_code_versions"]) == {"ae/m0": ["c1"], "ae/m1": ["c1", "c2"], "ae/m2": ["c2"]}
    assert [s for s, _ in store.metric_history(outcome.run_id, "train/ae/m1/loss")] == [12]
    assert "coherence/loo/mean" in run.metrics
    # the attempt's wall time: what the outcome reports, and at least its training stages' time
    stages = sum(v for k, v in run.metrics.items() if k.startswith("stage/") and k.endswith("/seconds"))
    assert run.metrics["job/seconds"] == pytest.approx(outcome.seconds) and run.metrics["job/seconds"] >= stages > 0
    assert run.metrics["job/score_evaluations_per_sample"] == 3.0

    invocations = _invocation_runs(store, resumed.experiment_id)
    start = time.perf_counter()
    again, lines = _run("t-resume", _isolated_home)
    assert again.outcomes == [] and list(again.skipped.values()) == [outcome.run_id]
    assert time.perf_counter() - start < 30
    assert any("1 already finished, 0 to run" in line for line in lines)
    # nothing to do: no empty parent run is added to the store
    assert again.parent_run_id == "" and _invocation_runs(store, resumed.experiment_id) == invocations
    assert any("nothing to run, no parent run opened" in line for line in lines)
    unregister_suite("t-resume")


def _invocation_runs(store: tracking.Store, experiment_id: str) -> list[str]:
    from mmbench.records import Kind, Tag

    return sorted(r.run_id for r in store.runs(experiment_id) if r.tags.get(Tag.KIND) == Kind.INVOCATION)


def test_failing_job_is_recorded_and_others_go_on_and_stages_are_shared(_isolated_home, tiny_model):
    seed_classifiers(_isolated_home)
    tiny_suite("t-fail", (
        Variant("ae", "tiny-ae"),
        Variant("ae-noisy", "tiny-ae", overrides(sample_noise=0.1)),  # same training: stages reused
        Variant("bad", "tiny-ae", overrides(explode=True)),
    ))
    summary, lines = _run("t-fail", _isolated_home)
    status = {o.title: o.status for o in summary.outcomes}
    assert status == {"ae seed 0": "FINISHED", "ae-noisy seed 0": "FINISHED", "bad seed 0": "FAILED"}
    store = tracking.Store(store_uri(_isolated_home))
    bad = next(o for o in summary.outcomes if o.title == "bad seed 0")
    assert "boom" in store.run(bad.run_id).tags["error"]
    assert "traceback.txt" in store.artifact_names(bad.run_id)
    assert store.run(bad.run_id).metrics["job/seconds"] == pytest.approx(bad.seconds)
    assert "job/score_evaluations_per_sample" not in store.run(bad.run_id).metrics  # it never sampled
    noisy = next(o for o in summary.outcomes if o.title == "ae-noisy seed 0")
    metrics = store.run(noisy.run_id).metrics
    assert metrics["stage/ae/m0/reused"] == metrics["stage/ae/m1/reused"] == 1.0
    assert any("FAILED" in line and "boom" in line for line in lines)
    assert store.run(summary.parent_run_id).status == "FAILED"
    # a rerun skips the finished jobs, not the failed one: it runs (and fails) again, from its failed attempt;
    # a finished row scored by a classifier with other weights is named before the jobs run; one whose classifier
    # file differs with the same weights (a retrained copy: the file's meta holds times) is not
    ae = next(o for o in summary.outcomes if o.title == "ae seed 0")
    assert not any("warning" in line for line in lines), lines
    assert store.run(ae.run_id).tags["classifier_weights_sha256"] == store.run(noisy.run_id).tags["classifier_weights_sha256"]
    store.set_tags(ae.run_id, {"classifier_weights_sha256": "other"})
    store.set_tags(noisy.run_id, {"classifier_sha256": "a retrained copy"})
    rerun, lines = _run("t-fail", _isolated_home)
    assert any("3 jobs, 2 already finished, 1 to run" in line for line in lines), lines
    (warning,) = [line for line in lines if line.startswith("warning:")]
    assert "scored against classifier weights" in warning and "the finished rows ae against another" in warning
    assert [(o.title, o.status) for o in rerun.outcomes] == [("bad seed 0", "FAILED")]
    assert rerun.outcomes[0].run_id != bad.run_id
    assert set(rerun.skipped) == {o.job_id for o in summary.outcomes if o.status == "FINISHED"}
    unregister_suite("t-fail")


def test_run_refuses_an_invalid_selection(_isolated_home, tiny_model):
    tiny_suite("t-inv", (Variant("typo", "dumy"), Variant("ok", "tiny-ae")))
    with pytest.raises(SuiteInvalid, match="Did you mean 'dummy'"):
        _run("t-inv", _isolated_home)
    unregister_suite("t-inv")


@pytest.mark.parametrize("backend", ["loky", "dask"])
def test_parallel_backends_run_two_jobs(_isolated_home, backend):
    if backend == "dask":
        pytest.importorskip("dask.distributed")  # a LocalCluster(n_workers=2, threads_per_worker=1, processes=True)
    seed_classifiers(_isolated_home)
    # workers import the registry fresh: a built-in model (dummy); jobs carry their metrics, not the suite
    tiny_suite("t-par", (Variant("dummy", "dummy"),))
    summary, lines = _run("t-par", _isolated_home, seeds=(0, 1), backend=backend, n_jobs=2)
    assert sorted(o.status for o in summary.outcomes) == ["FINISHED", "FINISHED"]
    store = tracking.Store(store_uri(_isolated_home))
    runs = [store.run(o.run_id) for o in summary.outcomes]
    assert {r.tags["mlflow.parentRunId"] for r in runs} == {summary.parent_run_id}
    assert sorted(r.tags["seed"] for r in runs) == ["0", "1"]
    assert all("coherence/loo/mean" in r.metrics for r in runs)
    expected = "dask LocalCluster (2 single-threaded workers)" if backend == "dask" else "loky (2 processes)"
    assert any(expected in line for line in lines)
    unregister_suite("t-par")


def test_format_seconds():
    assert [format_seconds(s) for s in (5, 65, 3700)] == ["5s", "1m05s", "1h01m"]


def test_every_builtin_suite_validates_against_the_registered_models():
    """Catches a renamed Config field, a lost capability or a metric rename in any model or suite."""
    from mmbench.suites import suite_names

    for name in suite_names():
        if name.startswith("t-"):
            continue
        report = validate_suite(get_suite(name))
        assert report.ok, (name, report.errors)


def test_a_jobs_thread_count_bounds_torch_and_the_blas_pools_and_is_restored_after():
    """--threads governs numpy's BLAS as well as torch: a job's FID must not depend on the environment's
    OMP_NUM_THREADS (1 vs 2 OpenBLAS threads change covariance sums in their last bits)."""
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    with threadpool_limits(limits=2, user_api="blas"):
        torch_before, blas_before = torch.get_num_threads(), blas_threads()
        assert blas_before and max(blas_before) == 2
        with cpu_threads(1):
            assert torch.get_num_threads() == 1 and blas_threads() == [1] * len(blas_before)
        assert torch.get_num_threads() == torch_before and blas_threads() == blas_before
        with cpu_threads(None):
            assert blas_threads() == blas_before


def test_a_job_records_its_processes_cpu_time_beside_its_wall_time():
    """``job/cpu_seconds`` is the process's CPU time over the attempt, not its wall time: waiting adds to the
    wall time only (what a job on a shared machine would have taken alone)."""
    import time as clock

    from mmbench.records import Metric
    from mmbench.runner.job import Clock, _log_wall_time

    class Recorder:
        logged: dict[str, float] = {}

        def log_metrics(self, run_id, values, timestamp_ms):
            self.logged.update({key: value for key, value, _ in values})

    start, recorder = Clock.start(), Recorder()
    clock.sleep(1.0)  # waiting: wall time, no CPU (other threads of this process may add a little)
    busy_until = clock.process_time() + 0.2
    while clock.process_time() < busy_until:  # working: both
        pass
    seconds = _log_wall_time(recorder, "run", start)
    wall, cpu = recorder.logged[Metric.JOB_SECONDS], recorder.logged[Metric.JOB_CPU_SECONDS]
    assert wall == seconds and wall >= 1.2
    assert 0.2 <= cpu <= wall - 0.6
