"""``mmbench run --dry-run``: the plan and its estimated cost, without training or writing anything.

Cost is counted in optimiser steps and training images (stages shared through ``reuse_key`` count
once), and in what the evaluation generates (conditional queries and unconditional samples: an SBM
model's evaluation cost is its sampler passes); training time is estimated only from throughput measured
by earlier runs of the same model in the store.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from mmbench import tracking
from mmbench.runner.plan import Job, StageCost, stage_costs
from mmbench.runner.prepare import RunOptions, prepare, resolve
from mmbench.runner.run import format_seconds
from mmbench.suites.spec import Suite

Say = Callable[[str], None]


@dataclass(frozen=True)
class JobCost:
    job: Job
    stages: list[StageCost]
    shared: list[str]  # names of stages another job of this plan already trains
    seconds: float | None  # None: no measured throughput for some stage
    conditional: int | None  # conditional queries the evaluation generates (None: the whole test split, size unknown)
    unconditional: int  # unconditional samples the evaluation generates


def dry_run(suite: Suite | str, options: RunOptions, say: Say = print) -> list[JobCost]:
    """Print the jobs a run would execute (or skip) and what they cost; returns the costs."""
    suite, budget = resolve(suite, options)
    plan = prepare(suite, budget, options, say, provisional_ok=True)
    finished, rates = _store_facts(options.tracking_uri, suite.name, budget.name)
    costs = _costs(plan.jobs, rates)
    say(f"{suite.name} v{suite.version}, budget {budget.name} ({budget.status}): {len(plan.jobs)} jobs; "
        f"classifiers {plan.classifiers.eval_name}, {plan.classifiers.substitute_name}")
    for cost in costs:
        _say_job(cost, finished, say)
    _say_total([c for c in costs if c.job.job_id not in finished], say)
    return costs


def _store_facts(uri: str | None, suite: str, budget: str) -> tuple[set[str], dict[tuple[str, str], float]]:
    """Finished job ids and samples/s measured per (model, stage) at this budget, if the store exists.

    Never creates the store or the experiment.
    """
    store = tracking.Store(uri)
    db = tracking.sqlite_path(store.uri)
    if db is not None and not db.exists():
        return set(), {}
    try:
        tracking.check_reachable(store.uri, write=False)  # a dry run writes nothing
        experiment = store.experiment_id(suite, create=False)
    except tracking.TrackingError:
        return set(), {}
    if experiment is None:
        return set(), {}
    rates: dict[tuple[str, str], list[float]] = defaultdict(list)
    for run in store.job_runs(experiment, budget, status=tracking.FINISHED):  # same budget: same sizes
        for key, value in run.metrics.items():
            if key.startswith("stage/") and key.endswith("/samples_per_second"):
                rates[(run.tags.get("model", ""), key[len("stage/") : -len("/samples_per_second")])].append(value)
    mean_rates = {k: sum(v) / len(v) for k, v in rates.items()}
    return set(store.finished_jobs(experiment, budget)), mean_rates


def _costs(jobs: list[Job], rates: dict[tuple[str, str], float]) -> list[JobCost]:
    seen: set[str] = set()
    out = []
    for job in jobs:
        stages = stage_costs(job)
        shared = [s.name for s in stages if s.reuse_key and s.reuse_key in seen]
        seen.update(s.reuse_key for s in stages if s.reuse_key)
        seconds: float | None = 0.0
        for s in stages:
            if s.name in shared:
                continue
            rate = rates.get((job.model, s.name))
            seconds = None if rate is None or seconds is None else seconds + s.steps * s.batch_size / rate
        out.append(JobCost(job, stages, shared, seconds, *evaluation_generation(job)))
    return out


def evaluation_generation(job: Job) -> tuple[int | None, int]:
    """(conditional queries, unconditional samples) the job's evaluation generates."""
    from mmbench.metrics.catalog import planned_generation
    from mmbench.metrics.settings import EvalSettings

    settings = EvalSettings(**dict(job.eval_settings))
    sizes = [n for n in (settings.n_conditional, job.data.n_test) if n is not None]
    conditional, unconditional = planned_generation(job.data.modalities, job.metrics, settings, min(sizes) if sizes else 1)
    return (conditional if sizes else None), unconditional


def stage_summary(cost: JobCost) -> str:
    """Stages in order, those alike grouped: ``ae/m0..m9 (10) 3000×256 shared, score 3000×256``."""
    groups: list[tuple[str, list[str], str]] = []  # (prefix, members, "steps×batch[ shared]")
    for s in cost.stages:
        prefix, _, member = s.name.rpartition("/")
        what = f"{s.steps}×{s.batch_size}" + (" (shared)" if s.name in cost.shared else "")
        if prefix and groups and groups[-1][0] == prefix and groups[-1][2] == what:
            groups[-1][1].append(member)
        else:
            groups.append((prefix, [member], what))
    parts = []
    for prefix, members, what in groups:
        if not prefix:
            parts.append(f"{members[0]} {what}")
        elif len(members) == 1:
            parts.append(f"{prefix}/{members[0]} {what}")
        else:
            parts.append(f"{prefix}/{members[0]}..{members[-1]} ({len(members)}) {what}")
    return ", ".join(parts) or "no training stages"


def _say_job(cost: JobCost, finished: set[str], say: Say) -> None:
    job = cost.job
    state = "skip (finished)" if job.job_id in finished else "run"
    stages = stage_summary(cost)
    when = f"~{format_seconds(cost.seconds)}" if cost.seconds is not None else "time unknown"
    say(f"  {job.job_id}  {job.title:<28} {state:<16} {len(job.data.modalities)} modalities; {stages}; {when}; "
        f"eval {_generation(cost.conditional, cost.unconditional)}")


def _generation(conditional: int | None, unconditional: int) -> str:
    queries = "the whole test split's" if conditional is None else f"{conditional:,}"
    return f"{queries} conditional queries + {unconditional:,} unconditional samples"


def _say_total(costs: list[JobCost], say: Say) -> None:
    steps = sum(s.steps for c in costs for s in c.stages if s.name not in c.shared)
    images = sum(s.image_passes for c in costs for s in c.stages if s.name not in c.shared)
    known = [c.seconds for c in costs if c.seconds is not None]
    line = f"to run: {len(costs)} jobs, {steps:,} optimiser steps, {images:,} training images"
    if costs and len(known) == len(costs):
        line += f", ~{format_seconds(sum(known))} of training (measured throughput; evaluation not included)"
    else:
        line += f"; time: measured throughput for {len(known)}/{len(costs)} jobs (an earlier run of a model measures it)"
    say(line)
    if costs:
        known_conditional = [c.conditional for c in costs if c.conditional is not None]
        total = sum(known_conditional) if len(known_conditional) == len(costs) else None
        say(f"evaluation generates {_generation(total, sum(c.unconditional for c in costs))} "
            "(an SBM model's cost is its sampler passes: one per conditional query, N predictor steps each)")
