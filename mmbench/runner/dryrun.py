"""``mmbench run --dry-run``: the plan and its estimated cost, without training or writing anything.

Cost is counted in optimiser steps and training images (stages shared through ``reuse_key`` count
once), in what the evaluation generates (conditional queries and unconditional samples: an SBM
model's evaluation cost is its sampler passes), and in time: per job and in total, from the step and
sample times earlier runs measured in the store, else the documented cost model
(:mod:`mmbench.runner.cost`), each estimate saying which.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mmbench import tracking
from mmbench.records import Tag
from mmbench.runner import cost as cost_mod
from mmbench.runner.attempts import total_cpu_seconds
from mmbench.runner.cost import JobCost, Measurements, evaluation_generation, format_seconds, job_costs
from mmbench.runner.parallel import job_threads
from mmbench.runner.plan import Job
from mmbench.runner.prepare import RunOptions, prepare, resolve
from mmbench.suites.spec import Suite

Say = Callable[[str], None]
__all__ = ["CpuUse", "JobCost", "cpu_against_model", "cpu_use", "dry_run", "evaluation_generation", "job_costs", "stage_summary", "store_facts"]


def _plan_costs(jobs: list[Job], finished: set[str], measured: Measurements, where: cost_mod.Where) -> list[JobCost]:
    """The jobs' costs in plan order: those to run count the stages the artifact store holds as shared (loaded,
    not trained); finished jobs are priced as they ran (their own stages trained), for the check below."""
    todo = job_costs([j for j in jobs if j.job_id not in finished], measured, where, cost_mod.artifact_store_has())
    done = job_costs([j for j in jobs if j.job_id in finished], measured, where)
    by_id = {c.job.job_id: c for c in todo + done}
    return [by_id[j.job_id] for j in jobs]


def dry_run(suite: Suite | str, options: RunOptions, say: Say = print) -> list[JobCost]:
    """Print the jobs a run would execute (or skip) and what they cost; returns the costs."""
    suite, budget = resolve(suite, options)
    plan = prepare(suite, budget, options, say, provisional_ok=True)
    finished, measured, cpu = store_facts(options.tracking_uri, suite.name, budget.name)
    where = cost_mod.where(options.device, job_threads(options.threads, options.n_jobs, options.backend))
    costs = _plan_costs(plan.jobs, finished, measured, where)
    model_costs = job_costs(plan.jobs, Measurements.empty(), where)
    modelled = {c.job.job_id: c.estimate.seconds for c in model_costs}
    say(f"{suite.name} v{suite.version}, budget {budget.name} ({budget.status}): {len(plan.jobs)} jobs; "
        f"classifiers {plan.classifiers.eval_name}, {plan.classifiers.substitute_name}; "
        f"times for {where[0]}, {where[1]} torch thread(s) per job")
    for cost in costs:
        _say_job(cost, finished, say, modelled.get(cost.job.job_id))
    _say_total([c for c in costs if c.job.job_id not in finished], options.n_jobs, say)
    checked = model_check([c for c in costs if c.job.job_id in finished], modelled, cpu_against_model(cpu, model_costs))
    if checked is not None:
        say(checked)
    _say_other_places(costs, measured, where, say)
    return costs


def _say_other_places(costs: list[JobCost], measured: Measurements, where: cost_mod.Where, say: Say) -> None:
    """Name the devices and thread counts at which these models were measured, when not the plan's."""
    others = measured.places({cost_mod.job_cost_key(c.job) for c in costs}) - {where}
    if others:
        listed = ", ".join(f"{device} with {threads} thread(s)" for device, threads in sorted(others, key=str))
        say(f"measurements of these models also exist for {listed}: a plan with that --device/--threads "
            "(and --n-jobs) is priced from them")


def store_facts(uri: str | None, suite: str, budget: str) -> tuple[set[str], Measurements, dict[str, float]]:
    """Finished job ids at this budget, the costs measured by the suite's finished runs (any budget), and the
    CPU time of the finished jobs at this budget that logged all of theirs (:func:`total_cpu_seconds`), if the
    store exists. Never creates the store or the experiment."""
    store = tracking.Store(uri)
    db = tracking.sqlite_path(store.uri)
    if db is not None and not db.exists():
        return set(), Measurements.empty(), {}
    try:
        tracking.check_reachable(store.uri, write=False)  # a dry run writes nothing
        experiment = store.experiment_id(suite, create=False)
    except tracking.TrackingError:
        return set(), Measurements.empty(), {}
    if experiment is None:
        return set(), Measurements.empty(), {}
    runs = store.job_runs(experiment, None, status=tracking.FINISHED)
    latest = store.finished_jobs(experiment, budget)  # job id -> its latest finished run
    cpu = {job: use for run in runs
           if latest.get(job := run.tags.get(Tag.JOB_ID, "")) == run.run_id and (use := cpu_use(run)) is not None}
    return set(latest), Measurements.from_runs(runs), cpu


@dataclass(frozen=True)
class CpuUse:
    """A finished job's CPU time over all its attempts, and the stages its run loaded instead of training."""

    seconds: float
    loaded: frozenset[str]


def cpu_use(run: tracking.RunRecord) -> CpuUse | None:
    """The run's :class:`CpuUse`, or None when its CPU time is not known in full, or when it resumed and loaded a
    stage (trained by an earlier attempt, whose CPU it counts, or by another job, whose it does not: unknown)."""
    resumed = Tag.RESUMED_FROM in run.tags
    seconds = total_cpu_seconds(run.metrics, resumed)
    loaded = frozenset(name for key, value in run.metrics.items()
                       if value and (name := cost_mod.stage_of(key, "reused")) is not None)
    return None if seconds is None or (resumed and loaded) else CpuUse(seconds, loaded)


def cpu_against_model(cpu: dict[str, CpuUse], model_costs: list[JobCost]) -> dict[str, tuple[float, float]]:
    """job id -> (its CPU time, the cost model's estimate of the stages it trained and its evaluation), for the
    finished jobs whose CPU time is known and which the cost model prices in full."""
    out = {}
    for cost in model_costs:
        use = cpu.get(cost.job.job_id)
        parts = [p for p in cost.estimate.parts if use is not None and p.name not in use.loaded]
        if use is not None and parts and all(p.seconds is not None for p in parts):
            out[cost.job.job_id] = (use.seconds, sum(p.seconds or 0.0 for p in parts))
    return out


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


def _say_job(cost: JobCost, finished: set[str], say: Say, modelled: float | None = None) -> None:
    job = cost.job
    done = job.job_id in finished
    state = "skip (finished)" if done else "run"
    stages = stage_summary(cost)
    against = ""
    if done and modelled and (seconds := _measured_seconds(cost)) is not None:
        against = f" against the cost model's {format_seconds(modelled)} (×{seconds / modelled:.2f})"
    say(f"  {job.job_id}  {job.title:<28} {state:<16} {len(job.data.modalities)} modalities; {stages}; "
        f"{cost_mod.describe(cost.estimate)}{against}; eval {_generation(cost.conditional, cost.unconditional)}")


def _measured_seconds(cost: JobCost) -> float | None:
    """A finished job's time from its own measurements (every part measured), else None."""
    parts = cost.estimate.parts
    if not parts or any(p.source != cost_mod.MEASURED for p in parts):
        return None
    return cost.estimate.seconds


def model_check(finished: list[JobCost], modelled: dict[str, float | None],
                cpu: dict[str, tuple[float, float]] | None = None) -> str | None:
    """How the cost model's estimates compare with what the finished jobs measured, over the jobs with both:
    ``finished jobs against the cost model: 2 jobs, 2h05m measured, 1h58m estimated (×1.06; per job ×0.98–×1.12)``,
    then the same for CPU time (``cpu``: job id -> (CPU seconds, estimate), :func:`cpu_against_model`): the cost
    model prices a job on a core of its own, and wall time also counts other work sharing the machine.
    None when no finished job has either."""
    wall = [(s, m) for c in finished
            if (s := _measured_seconds(c)) is not None and (m := modelled.get(c.job.job_id))]
    used = [pair for c in finished if (pair := (cpu or {}).get(c.job.job_id)) is not None and pair[1] > 0]
    parts = [f"{len(wall)} job(s), {_comparison(wall, 'measured')}"] if wall else []
    if used:
        parts.append(f"CPU time of the {len(used)} job(s) that logged all of it: {_comparison(used, 'of CPU')}")
    return f"finished jobs against the cost model: {'; '.join(parts)}" if parts else None


def _comparison(pairs: list[tuple[float, float]], what: str) -> str:
    """``2h05m measured, 1h58m estimated (×1.06; per job ×0.98–×1.12)`` over (measured, estimated) pairs."""
    measured, estimated = sum(s for s, _ in pairs), sum(m for _, m in pairs)
    ratios = sorted(s / m for s, m in pairs)
    spread = f"; per job ×{ratios[0]:.2f}–×{ratios[-1]:.2f}" if len(ratios) > 1 else ""
    return f"{format_seconds(measured)} {what}, {format_seconds(estimated)} estimated (×{measured / estimated:.2f}{spread})"


def _generation(conditional: int | None, unconditional: int) -> str:
    queries = "the whole test split's" if conditional is None else f"{conditional:,}"
    return f"{queries} conditional queries + {unconditional:,} unconditional samples"


def _say_total(costs: list[JobCost], n_jobs: int, say: Say) -> None:
    steps = sum(s.steps for c in costs for s in c.stages if s.name not in c.shared)
    images = sum(s.image_passes for c in costs for s in c.stages if s.name not in c.shared)
    say(f"to run: {len(costs)} jobs, {steps:,} optimiser steps, {images:,} training images")
    if costs:
        known_conditional = [c.conditional for c in costs if c.conditional is not None]
        total = sum(known_conditional) if len(known_conditional) == len(costs) else None
        say(f"evaluation generates {_generation(total, sum(c.unconditional for c in costs))} "
            "(an SBM model's cost is its sampler passes: one per conditional query, one sampler run each)")
        say(_time_total(costs, n_jobs))


def _time_total(costs: list[JobCost], n_jobs: int) -> str:
    """``time: ~25h00m of compute (~12h30m of wall time with 2 jobs); 3 jobs measured here, 9 by the cost model``."""
    parts = [p for c in costs for p in c.estimate.parts]
    counts = {src: sum(p.source == src for p in parts) for src in (cost_mod.MEASURED, cost_mod.COST_MODEL_SOURCE, cost_mod.UNKNOWN)}
    how = ", ".join(f"{n} by {src}" if src == cost_mod.COST_MODEL_SOURCE else f"{n} {src}"
                    for src, n in counts.items() if n)
    known = sum(c.estimate.known_seconds for c in costs)
    bound = "~" if counts[cost_mod.UNKNOWN] == 0 else "at least "
    wall = f" ({bound}{format_seconds(known / n_jobs)} of wall time with {n_jobs} jobs)" if n_jobs > 1 else ""
    return f"time: {bound}{format_seconds(known)} of compute{wall}; stages and evaluations priced: {how}"
