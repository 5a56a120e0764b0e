"""``mmbench run``: resolve and validate → store → data → plan (:mod:`mmbench.runner.prepare`, shared with
``--dry-run``) → classifiers → skip finished → run the rest → summary.

The parent creates the suite's experiment (and a fresh SQLite store's tables) before any worker
starts, opens one parent run per invocation and one child run per job (linked by ``parent_run_id``),
and prints one line per job with its state and an ETA.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmbench import paths, tracking
from mmbench.records import Artifact, Kind, Metric, Tag, flag, scoring_references, version_tags
from mmbench.runner import data as data_mod
from mmbench.runner.cost import (
    JobEstimate,
    Measurements,
    artifact_store_has,
    describe,
    format_seconds,
    job_costs,
    where,
)
from mmbench.runner.job import (
    CLAIMED,
    SKIPPED,
    JobContext,
    JobOutcome,
    StopHook,
    cpu_threads,
    execute_job,
    job_claim,
    job_tags,
    register_stop_hook,
)
from mmbench.runner.parallel import check_scheduler, describe_backend, execute, job_threads
from mmbench.runner.plan import Job
from mmbench.runner.prepare import RunOptions, prepare, resolve
from mmbench.runner.provenance import git_commit, package_versions
from mmbench.suites.spec import Budget, Suite

Say = Callable[[str], None]
SMOKE_NOTICE = (
    "budget {budget!r} checks the pipeline and ranks nothing: tiny sizes, models far from trained, "
    "numbers meaningless for comparison."
)


@dataclass
class RunSummary:
    suite: str
    budget: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str  # "" when nothing was left to run (no parent run is opened)
    planned: list[Job]
    skipped: dict[str, str]  # job id -> run id of its finished run
    outcomes: list[JobOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[JobOutcome]:
        return [o for o in self.outcomes if o.status not in (tracking.FINISHED, SKIPPED)]

    @property
    def done_elsewhere(self) -> list[JobOutcome]:
        """Jobs another invocation on the same home finished while this one ran."""
        return [o for o in self.outcomes if o.status == SKIPPED]


def stop_file(suite: str) -> Path:
    """Touch this file to stop every running job of the suite at its next step (checkpointed)."""
    return paths.runs_dir() / suite / "STOP"


def run_suite(suite: Suite | str, options: RunOptions, say: Say = print,
              should_stop: StopHook | None = None, adjust: Callable[[list[Job]], list[Job]] | None = None) -> RunSummary:
    """Run a suite at a budget: every job not already FINISHED in the store; returns the summary.

    ``adjust``: turns the planned jobs into those to run, before any run is opened (``mmbench eval`` makes
    its job evaluate a checkpoint there, :mod:`mmbench.runner.evalonly`)."""
    suite, budget = resolve(suite, options)
    if options.backend == "dask" and options.scheduler:
        check_scheduler(options.scheduler)
    store = tracking.Store(options.tracking_uri)
    store.check()
    experiment_id = store.experiment_id(suite.name)
    assert experiment_id is not None
    if not budget.ranks:
        say(SMOKE_NOTICE.format(budget=budget.name))
    with cpu_threads(options.threads):
        data_mod.ensure_dataset(suite.dataset, say)
        jobs, classifier_tags = _plan_with_classifiers(suite, budget, options, say)
        jobs = adjust(jobs) if adjust is not None else jobs
    finished = store.finished_jobs(experiment_id, budget.name)
    todo = [j for j in jobs if j.job_id not in finished]
    skipped = {j.job_id: finished[j.job_id] for j in jobs if j.job_id in finished}
    say(f"{suite.name} v{suite.version} budget {budget.name}: {len(jobs)} jobs, {len(skipped)} already finished, "
        f"{len(todo)} to run ({describe_backend(options.backend, options.n_jobs, options.scheduler)}); "
        f"store {store.uri}")
    if todo:
        first = job_tags(todo[0], classifier_tags)
        _warn_other_references(store, experiment_id, budget, set(skipped.values()), first, say)
    if not todo:  # a rerun with nothing to do leaves the store as it was: no empty parent run
        summary = RunSummary(suite.name, budget.name, store.uri, experiment_id, "", jobs, skipped)
        _say_summary(summary, budget, say)
        return summary
    parent = _open_parent(store, experiment_id, suite, budget, options, classifier_tags, jobs)
    summary = RunSummary(suite.name, budget.name, store.uri, experiment_id, parent, jobs, skipped)
    summary.outcomes = _run_jobs(store, experiment_id, parent, todo, options, classifier_tags, say, should_stop)
    _close_parent(store, parent, summary)
    _say_summary(summary, budget, say)
    return summary


def _warn_other_references(store: tracking.Store, experiment_id: str, budget: Budget, finished: set[str],
                           tags: dict[str, str], say: Say) -> None:
    """Name the finished rows of the plan that were scored against other references than the jobs about to run
    (``tags``: the first such job's; :func:`scoring_references`: a classifier with other weights, rebuilt data):
    the report will not compare them."""
    runs = [r for r in store.job_runs(experiment_id, budget.name, tracking.FINISHED) if r.run_id in finished]
    for name, now in scoring_references(tags).items():
        rows = sorted({r.tags.get(Tag.VARIANT, r.run_id) for r in runs if scoring_references(r.tags).get(name) != now})
        if rows:
            say(f"warning: the jobs to run are scored against {name} {now}, but the finished rows {', '.join(rows)} "
                f"against another (or none recorded): the report will mark them as not comparable")


def _plan_with_classifiers(suite: Suite, budget: Budget, options: RunOptions, say: Say) -> tuple[list[Job], dict[str, str]]:
    plan = prepare(suite, budget, options, say)
    jobs, classifiers = plan.jobs, plan.classifiers
    _probe_fid_weights(jobs)
    hashes = data_mod.ensure_classifiers(suite, budget, classifiers, say, _classifier_device(options.device))
    _check_resources(jobs)
    tags = {
        Tag.DATASET: suite.dataset.name, Tag.DATASET_HASH: plan.dataset_hash,
        Tag.CLASSIFIER: classifiers.eval_name, Tag.CLASSIFIER_SHA256: hashes["eval"],
        Tag.SUBSTITUTE: classifiers.substitute_name, Tag.SUBSTITUTE_SHA256: hashes["substitute"],
    }
    weights = data_mod.classifier_weights(suite, classifiers)
    for role, tag in (("eval", Tag.CLASSIFIER_WEIGHTS), ("substitute", Tag.SUBSTITUTE_WEIGHTS)):
        if weights[role] is not None:
            tags[tag] = weights[role]
    tags[Tag.FID_WEIGHTS] = _fid_weights(dict(jobs[0].eval_settings), tags) if jobs else ""
    return jobs, tags


def _fid_weights(settings: dict[str, Any], tags: dict[str, str]) -> str:
    """Which weights the FID extractor uses: the eval classifier's, or the local Inception file's sha256."""
    from mmbench.hashing import sha256_file
    from mmbench.metrics.extractors import INCEPTION, resolve_inception_weights

    if settings.get("fid_extractor") == INCEPTION:
        path = resolve_inception_weights(settings.get("inception_weights"))
        return f"{path.name} sha256 {sha256_file(path)}"
    return f"{tags[Tag.CLASSIFIER]} sha256 {tags[Tag.CLASSIFIER_SHA256]}"


def _probe_fid_weights(jobs: list[Job]) -> None:
    """Load and try the Inception FID weights the jobs will use, before anything is trained (classifiers too)."""
    from mmbench.metrics.base import FID_EXTRACTOR, declared
    from mmbench.metrics.extractors import INCEPTION, probe_inception

    probed: set[str | None] = set()
    for job in jobs:
        settings = dict(job.eval_settings)
        wants_fid = FID_EXTRACTOR in declared(job.metrics, "resources")
        if wants_fid and settings.get("fid_extractor") == INCEPTION and settings.get("inception_weights") not in probed:
            probe_inception(settings.get("inception_weights"))
            probed.add(settings.get("inception_weights"))


def _check_resources(jobs: list[Job]) -> None:
    """Fail before training when a classifier or FID weights file the metrics need is missing."""
    from mmbench.metrics.pipeline import check_resources
    from mmbench.metrics.settings import EvalSettings

    for settings in {j.eval_settings for j in jobs}:
        check_resources(jobs[0].metrics, EvalSettings(**dict(settings)))


def _classifier_device(device: str) -> str:
    from mmbench.training.device import resolve_device

    return str(resolve_device(device))


def _open_parent(store: tracking.Store, experiment_id: str, suite: Suite, budget: Budget, options: RunOptions,
                 classifier_tags: dict[str, str], jobs: list[Job]) -> str:
    tags = {
        Tag.KIND: Kind.INVOCATION, Tag.SUITE: suite.name, Tag.SUITE_VERSION: suite.version, Tag.BUDGET: budget.name,
        Tag.RANKS: flag(budget.ranks), Tag.GIT_COMMIT: git_commit(), Tag.DEVICE: options.device,
        Tag.BACKEND: describe_backend(options.backend, options.n_jobs, options.scheduler),
        **classifier_tags, **version_tags(package_versions()),
    }
    name = f"{suite.name}-{budget.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_id = store.create_run(experiment_id, name, tags)
    store.log_json(run_id, [j.describe() for j in jobs], Artifact.PLAN)
    return run_id


def _run_jobs(store: tracking.Store, experiment_id: str, parent: str, todo: list[Job], options: RunOptions,
              shared: dict[str, str], say: Say, should_stop: StopHook | None) -> list[JobOutcome]:
    if not todo:
        return []
    stop = stop_file(todo[0].suite)
    if stop.exists():
        say(f"removing a stale stop file {stop}")
        stop.unlink()
    shared = {**shared, Tag.GIT_COMMIT: git_commit(), **version_tags(package_versions())}
    for run_id in store.reap_abandoned(experiment_id):
        say(f"run {run_id} was left RUNNING by a process that is gone: marked KILLED")
    previous = store.unfinished_attempts(experiment_id, todo[0].budget)
    tasks = [(job, previous.get(job.job_id)) for job in todo]
    invocation = uuid.uuid4().hex
    ctx = JobContext(
        invocation=invocation, tracking_uri=store.uri, experiment_id=experiment_id, parent_run_id=parent,
        device=options.device, quiet=options.quiet,
        threads=job_threads(options.threads, options.n_jobs, options.backend),
        stop_file=str(stop), tags=tuple(sorted(shared.items())),
    )
    progress = Progress(len(tasks), options.n_jobs, say, _estimates(store, experiment_id, todo, options))
    register_stop_hook(invocation, should_stop)
    try:
        outcomes = execute(tasks, ctx, options.backend, options.n_jobs, options.scheduler, progress.start, progress.done)
        outcomes = _wait_for_claimed(tasks, outcomes, ctx, progress, say)
    except BaseException:
        _abandon(store, experiment_id, parent)
        store.mark(parent, tracking.KILLED)
        raise
    finally:
        register_stop_hook(invocation, None)
    return outcomes


def _estimates(store: tracking.Store, experiment_id: str, todo: list[Job], options: RunOptions) -> dict[str, JobEstimate]:
    """Each job's own time estimate (:mod:`mmbench.runner.cost`): measured by the store's finished runs on
    this device and thread count, else the cost model; stages the artifact store holds are not priced."""
    measured = Measurements.from_runs(store.job_runs(experiment_id, None, tracking.FINISHED))
    placed = where(options.device, job_threads(options.threads, options.n_jobs, options.backend))
    return {c.job.job_id: c.estimate for c in job_costs(todo, measured, placed, artifact_store_has())}


def _wait_for_claimed(tasks: list[tuple[Job, str | None]], outcomes: list[JobOutcome], ctx: JobContext,
                      progress: Progress, say: Say) -> list[JobOutcome]:
    """Jobs another invocation was running: wait until each is released, then run it here unless it FINISHED."""
    previous = {job.job_id: (job, before) for job, before in tasks}
    settled = [o for o in outcomes if o.status != CLAIMED]
    waiting = [o for o in outcomes if o.status == CLAIMED]
    while waiting:
        job, before = previous[waiting.pop(0).job_id]
        job_claim(job).wait(on_wait=lambda owner, job=job: say(
            f"waiting for {job.title} (job {job.job_id}): another invocation is running it ({owner.describe()})"))
        progress.start(job)
        outcome = execute_job(job, ctx, before)
        progress.done(outcome)
        (waiting if outcome.status == CLAIMED else settled).append(outcome)
    return settled


def _abandon(store: tracking.Store, experiment_id: str, parent: str) -> None:
    """Mark this invocation's child runs that are still RUNNING as KILLED (their checkpoints stay)."""
    for run in store.running_children(experiment_id, parent):
        store.set_tags(run.run_id, {Tag.ERROR: "the invocation was interrupted"})
        store.mark(run.run_id, tracking.KILLED)


class Progress:
    """One line when a job starts and one when it ends, with the time left from each job's own estimate.

    ``[2/12] sbm-vae seed 0  started  (job 1a2b…)  ~1h20m (training 40m measured here, eval 40m cost model)``
    ``[3/12] sbm-vae seed 0  FINISHED  4m12s  (ETA ~20m)``: the ETA sums what is left of the running
    jobs' estimates (never below zero) and the estimates of those not started, over ``n_jobs`` workers.
    Thread-safe: parallel backends report starts from a watcher thread.
    """

    def __init__(self, total: int, n_jobs: int, say: Say, estimates: dict[str, JobEstimate] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.n_jobs, self.say, self.clock = total, max(1, n_jobs), say, clock
        self.estimates = estimates or {}
        self.running: dict[str, float] = {}  # job id -> when it started
        self.begun: set[str] = set()  # jobs that said they started (a job left to another invocation and run
        self.ended: set[str] = set()  # later by this one is counted once)
        self.lock = threading.Lock()

    def start(self, job: Job) -> None:
        with self.lock:
            if job.job_id in self.running or job.job_id in self.ended:
                return
            self.begun.add(job.job_id)
            self.running[job.job_id] = self.clock()
            est = self.estimates.get(job.job_id)
            self.say(f"[{len(self.begun)}/{self.total}] {job.title}  started  (job {job.job_id})"
                     + (f"  {describe(est)}" if est is not None else ""))

    def done(self, outcome: JobOutcome) -> None:
        with self.lock:
            self.running.pop(outcome.job_id, None)
            if outcome.status == CLAIMED:
                self.say(f"[-/{self.total}] {outcome.title}  {outcome.error} (another invocation): "
                         "left to it; waiting for it at the end")
                return
            if outcome.job_id in self.ended:
                return
            self.ended.add(outcome.job_id)
            left = self.eta()
            error = f"  {outcome.error}" if outcome.error else ""
            self.say(f"[{self.count}/{self.total}] {outcome.title}  {outcome.status}  {format_seconds(outcome.seconds)}"
                     f"{f'  (ETA {left})' if left else ''}{error}")

    @property
    def count(self) -> int:
        """Jobs ended (finished, failed or stopped), each counted once."""
        return len(self.ended)

    def eta(self) -> str:
        """Time left for the jobs not ended ("" when none is left)."""
        if self.count >= self.total:
            return ""
        now = self.clock()
        waiting = [j for j in self.estimates if j not in self.ended and j not in self.running]
        unknown = max(0, self.total - self.count - len(waiting) - len(self.running))  # jobs without an estimate
        seconds = 0.0
        for job_id in waiting + list(self.running):
            est = self.estimates.get(job_id)
            total = None if est is None else est.seconds
            if total is None:
                unknown += 1
                seconds += 0.0 if est is None else est.known_seconds
            else:
                seconds += max(0.0, total - (now - self.running[job_id])) if job_id in self.running else total
        seconds /= self.n_jobs
        if unknown:
            return f"≥ {format_seconds(seconds)}; {unknown} job(s) without an estimate"
        return f"~{format_seconds(seconds)}"


def _close_parent(store: tracking.Store, parent: str, summary: RunSummary) -> None:
    counts = {
        Metric.JOBS_PLANNED: len(summary.planned), Metric.JOBS_SKIPPED: len(summary.skipped),
        Metric.JOBS_FINISHED: sum(o.status == tracking.FINISHED for o in summary.outcomes),
        Metric.JOBS_FINISHED_ELSEWHERE: len(summary.done_elsewhere),
        Metric.JOBS_FAILED: len(summary.failed),
    }
    store.log_metrics(parent, [(k, float(v), 0) for k, v in counts.items()], int(time.time() * 1000))
    store.mark(parent, tracking.FAILED if summary.failed else tracking.FINISHED)


def _say_summary(summary: RunSummary, budget: Budget, say: Say) -> None:
    ok = sum(o.status == tracking.FINISHED for o in summary.outcomes)
    elsewhere = f", {len(summary.done_elsewhere)} finished by another invocation" if summary.done_elsewhere else ""
    say(f"done: {ok} finished, {len(summary.failed)} failed or stopped, {len(summary.skipped)} skipped "
        f"(already finished){elsewhere}; "
        + (f"parent run {summary.parent_run_id}" if summary.parent_run_id else "nothing to run, no parent run opened"))
    for outcome in summary.failed:
        say(f"  {outcome.status}: {outcome.title} (run {outcome.run_id}): {outcome.error}")
    if not budget.ranks:
        say(SMOKE_NOTICE.format(budget=budget.name))
    say(f"next: mmbench report --suite {summary.suite} --budget {summary.budget}"
        + (f" --tracking-uri {summary.tracking_uri}" if summary.tracking_uri != tracking.resolve_uri(None) else ""))
