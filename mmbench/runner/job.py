"""One job in a worker: build the model, train its stages, evaluate it, log everything to its child run.

Runs in the parent process, a loky process or a dask worker thread alike: it installs no signal
handlers (PITFALLS.md, dask) and stops between training steps when ``stop_file`` appears or the
in-process ``should_stop`` hook says so; the trainer then keeps a checkpoint and a rerun resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmbench import tracking
from mmbench.processes import raise_if_terminated
from mmbench.records import (
    CHECKPOINT_SHA256,
    Artifact,
    Kind,
    Metric,
    Param,
    Tag,
    artifact_folder,
    config_params,
    curve_metric,
    flag,
    provenance_tag,
    provenance_tags,
    stage_metric,
)
from mmbench.runner.attempts import AttemptClock, earlier_attempts
from mmbench.runner.claims import JobClaim
from mmbench.runner.plan import Job

StopHook = Callable[[], bool]
CLAIMED = "CLAIMED"  # another live process holds the job's claim: nothing was run (the invocation waits for it)
SKIPPED = "SKIPPED"  # found FINISHED once claimed (another invocation finished it meanwhile): nothing was run
_STOP_HOOKS: dict[str, StopHook] = {}  # in-process hooks by invocation id (sequential backend only)


@dataclass(frozen=True)
class JobContext:
    """What all jobs of one invocation share (plain, picklable)."""

    invocation: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    device: str
    quiet: bool
    threads: int | None  # torch CPU threads per job (None: torch's default)
    stop_file: str
    tags: tuple[tuple[str, str], ...]  # provenance shared by every job (git commit, versions, classifiers)


@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    title: str
    run_id: str
    status: str  # FINISHED | FAILED | KILLED
    seconds: float
    error: str = ""


def register_stop_hook(invocation: str, hook: StopHook | None) -> None:
    if hook is None:
        _STOP_HOOKS.pop(invocation, None)
    else:
        _STOP_HOOKS[invocation] = hook


def _should_stop(ctx: JobContext) -> Callable[[], bool]:
    hook = _STOP_HOOKS.get(ctx.invocation)
    stop_file = Path(ctx.stop_file)
    return lambda: stop_file.exists() or (hook is not None and hook())


def execute_job(job: Job, ctx: JobContext, previous_run: str | None = None) -> JobOutcome:
    """Open the job's child run, run the job end to end, close the run.

    Never raises for the job's own failure: it is recorded in its run (FAILED, or KILLED when stopped).
    ``previous_run``: the job's last unfinished attempt, recorded as ``resumed_from``. The job is run only
    under its claim: CLAIMED when another live process holds it, SKIPPED when it turns out FINISHED. Every
    closed run carries ``job/seconds``: the attempt's wall time from opening the run to closing it, and
    ``job/cpu_seconds``: the CPU time the process spent meanwhile (on a machine shared with other work, what
    the job would have taken alone with one thread; it counts other jobs only where a process runs several at
    once, as a multi-threaded dask worker does); an
    evaluated model that reports ``last_nfe`` (the score-based samplers) adds
    ``job/score_evaluations_per_sample``.
    """
    claim = job_claim(job)
    holder = claim.acquire(ctx.invocation)
    if holder is not None:
        return JobOutcome(job.job_id, job.title, "", CLAIMED, 0.0, f"being run by {holder.describe()}")
    try:
        return _execute_claimed(job, ctx, previous_run, claim.took_over is not None)
    finally:
        claim.release()


def job_claim(job: Job) -> JobClaim:
    """The job's claim (``runs/<suite>/.claims/<job id>.json``): one process at a time trains a job."""
    return JobClaim(Path(job.workdir).parent / ".claims", job.job_id)


def _execute_claimed(job: Job, ctx: JobContext, previous_run: str | None, took_over: bool) -> JobOutcome:
    from mmbench.training.trainer import TrainingStopped

    store = tracking.Store(ctx.tracking_uri)
    start = Clock.start()
    done = store.finished_run(ctx.experiment_id, job.job_id)
    if done is not None:
        return JobOutcome(job.job_id, job.title, done, SKIPPED, 0.0, f"finished by another invocation (run {done})")
    if took_over:  # the previous owner died: close its run so it does not show RUNNING forever
        reaped = store.reap_abandoned(ctx.experiment_id)
        previous_run = next((r for r in reaped if store.run(r).tags.get(Tag.JOB_ID) == job.job_id), previous_run)
    run_id = open_child(store, ctx, job, previous_run)
    try:
        with AttemptClock(Path(job.workdir), run_id, previous_run):
            _run(job, ctx, store, run_id)
            raise_if_terminated()  # a SIGTERM whose interrupt Python dropped still stops the job here
    except TrainingStopped as exc:
        return _fail(store, run_id, job, start, tracking.KILLED, f"stopped: {exc}")
    except KeyboardInterrupt:
        _fail(store, run_id, job, start, tracking.KILLED, "interrupted (KeyboardInterrupt)")
        raise
    except Exception as exc:  # noqa: BLE001 (a failing job is recorded, the others go on)
        _log_traceback(store, run_id)
        return _fail(store, run_id, job, start, tracking.FAILED, f"{type(exc).__name__}: {exc}")
    seconds = _log_wall_time(store, run_id, start)
    _log_overhead(store, run_id, seconds)
    _log_earlier_attempts(store, run_id, Path(job.workdir), previous_run)
    store.mark(run_id, tracking.FINISHED)
    return JobOutcome(job.job_id, job.title, run_id, tracking.FINISHED, seconds)


@dataclass(frozen=True)
class Clock:
    """Wall and process CPU time at an attempt's start."""

    wall: float
    cpu: float

    @classmethod
    def start(cls) -> Clock:
        return cls(time.perf_counter(), time.process_time())


def _log_wall_time(store: tracking.Store, run_id: str, start: Clock) -> float:
    seconds = time.perf_counter() - start.wall
    cpu = time.process_time() - start.cpu
    store.log_metrics(run_id, [(Metric.JOB_SECONDS, seconds, 0), (Metric.JOB_CPU_SECONDS, cpu, 0)], _now_ms())
    return seconds


def _log_earlier_attempts(store: tracking.Store, run_id: str, workdir: Path, previous: str | None) -> None:
    """``job/attempts`` and the wall and CPU time of the attempts this one follows (the chain of resumed runs),
    from the job's ``attempts.json`` (an attempt killed outright counts up to its last heartbeat); nothing
    when one of them was not recorded (made before the file existed): unknown, not zero."""
    earlier = earlier_attempts(workdir, previous)
    if earlier is None:
        return
    store.log_metrics(run_id, [(Metric.ATTEMPTS, float(len(earlier) + 1), 0),
                               (Metric.EARLIER_SECONDS, sum(a.wall for a in earlier), 0),
                               (Metric.EARLIER_CPU_SECONDS, sum(a.cpu for a in earlier), 0)], _now_ms())


def _log_overhead(store: tracking.Store, run_id: str, seconds: float) -> None:
    """``job/overhead_seconds``: the finished job's wall time outside its trained stages and its evaluation
    (loading data, building and saving the model, logging), when all of them were timed in this attempt."""
    metrics = store.run(run_id).metrics
    if Metric.EVAL_SECONDS_PER_SAMPLE not in metrics or any(
        k.startswith("stage/") and k.endswith("/reused") and v for k, v in metrics.items()
    ):
        return  # a reused stage or a cached evaluation: not what a fresh job spends
    stages = sum(v for k, v in metrics.items() if k.startswith("stage/") and k.endswith("/seconds"))
    overhead = max(0.0, seconds - stages - metrics[Metric.EVAL_SECONDS])
    store.log_metrics(run_id, [(Metric.OVERHEAD_SECONDS, overhead, 0)], _now_ms())


def open_child(store: tracking.Store, ctx: JobContext, job: Job, previous_run: str | None) -> str:
    """The job's child run (RUNNING, linked to the parent by id): tags, params and its config artifact."""
    tags = {**job_tags(job, dict(ctx.tags)), Tag.REQUESTED_DEVICE: ctx.device}
    if previous_run:
        tags[Tag.RESUMED_FROM] = previous_run
    run_id = store.create_run(ctx.experiment_id, job.title.replace(" ", "-"), tags, parent_run_id=ctx.parent_run_id)
    params = config_params(job.config, dict(job.eval_settings), dataclasses.asdict(job.data))
    params.update({Param.SEED: job.seed, Param.MODEL_NAME: job.model, Param.VARIANT: job.label, Param.BUDGET: job.budget})
    store.log_params(run_id, params)
    store.log_json(run_id, job.describe(), Artifact.CONFIG)
    return run_id


def job_tags(job: Job, shared: dict[str, str]) -> dict[str, Any]:
    """Tags of a job's run: who it is, what it ran on, and the invocation's shared provenance."""
    settings = dict(job.eval_settings)
    return {
        Tag.KIND: Kind.JOB, Tag.SUITE: job.suite, Tag.SUITE_VERSION: job.suite_version, Tag.BUDGET: job.budget,
        Tag.MODEL: job.model, Tag.VARIANT: job.label, Tag.SEED: str(job.seed), Tag.JOB_ID: job.job_id,
        Tag.CONFIG_HASH: job.config_hash, Tag.DATA_ID: job.data.data_id,
        Tag.NUM_MODALITIES: str(len(job.data.modalities)), Tag.RANKS: flag(job.ranks),
        Tag.FID_EXTRACTOR: settings.get("fid_extractor", ""),
        **_origin_tags(job),
        **shared,
    }


def _origin_tags(job: Job) -> dict[str, str]:
    """The budget's settings for the row; an extra row's flag; an evaluated-only run's flag, checkpoint path and its sha256 (as provenance)."""
    tags = {Tag.EXTRA_ROW: flag(True)} if job.extra_row else {}
    if job.row_settings:
        tags[Tag.ROW_SETTINGS] = job.row_settings
    if job.checkpoint:
        tags.update({Tag.EVALUATED_ONLY: flag(True), Tag.CHECKPOINT: job.checkpoint,
                     provenance_tag(CHECKPOINT_SHA256): job.checkpoint_sha256})
    return tags


def _fail(store: tracking.Store, run_id: str, job: Job, start: Clock, status: str, error: str) -> JobOutcome:
    store.set_tags(run_id, {Tag.ERROR: error})
    seconds = _log_wall_time(store, run_id, start)
    store.mark(run_id, status)
    return JobOutcome(job.job_id, job.title, run_id, status, seconds, error)


def _log_traceback(store: tracking.Store, run_id: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Artifact.TRACEBACK
        path.write_text(traceback.format_exc())
        store.log_artifact(run_id, path)


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """torch's CPU threads and the native BLAS/OpenMP pools (numpy, scipy) set to ``n`` inside (None:
    unchanged); restored after, for in-process jobs. Both matter for the numbers, not only the speed: a float
    reduction split over a different number of threads sums in a different order (FID's covariances move in
    their last bits between 1 and 2 OpenBLAS threads), so a job's numbers are a function of its ``--threads``,
    not of the environment it was started from."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    if n is None or n <= 0:
        yield
        return
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)


def _run(job: Job, ctx: JobContext, store: tracking.Store, run_id: str) -> None:
    with cpu_threads(ctx.threads):
        _run_job(job, ctx, store, run_id)


def _run_job(job: Job, ctx: JobContext, store: tracking.Store, run_id: str) -> None:
    import torch

    from mmbench.runner.cost import job_cost_key
    from mmbench.runner.data import load_splits
    from mmbench.seeding import seed_everything
    from mmbench.training.device import resolve_device

    device = resolve_device(ctx.device)
    # where the job's measured step and sample times hold (mmbench.runner.cost matches estimates on these)
    store.set_tags(run_id, {Tag.DEVICE: str(device), Tag.THREADS: str(torch.get_num_threads()),
                            Tag.COST_KEY: job_cost_key(job)})
    seed_everything(job.seed)
    train, val, test = load_splits(job.data)
    model = _build(job, train)
    if job.checkpoint:  # `mmbench eval`: the weights are given, nothing is trained
        from mmbench.runner.weights import load_weights

        load_weights(model, Path(job.checkpoint), job.checkpoint_sha256)
        model.to(device)
    else:
        _train(job, ctx, store, run_id, model, train, val, device)
    _evaluate(job, ctx, store, run_id, model, test, device)
    nfe = getattr(model, "last_nfe", None)  # score evaluations of the last sampler pass, per sample
    if nfe is not None:
        store.log_metrics(run_id, [(Metric.SCORE_EVALUATIONS, float(nfe), 0)], _now_ms())


def _build(job: Job, train: Any) -> Any:
    """The job's model, its networks sized and typed by the train data's modalities (kind and shape)."""
    from mmbench import registry
    from mmbench.config import to_dict
    from mmbench.hashing import config_hash
    from mmbench.nets.modality import specs_of

    model = registry.build(job.model, job.data.modalities, dict(job.overrides), specs_of(train))
    got = config_hash(to_dict(model.config))
    if got != job.config_hash:
        raise RuntimeError(
            f"{job.model} builds to config {got} here but was planned as {job.config_hash}: the model's "
            "Config changed between planning and running (mixed code versions on the workers?)"
        )
    return model


def _train(job: Job, ctx: JobContext, store: tracking.Store, run_id: str, model: Any, train: Any, val: Any,
           device: Any) -> None:
    from mmbench import paths
    from mmbench.persist import save_model
    from mmbench.runner.cost import PER_STEP
    from mmbench.runner.provenance import git_commit
    from mmbench.training.artifacts import ArtifactStore
    from mmbench.training.trainer import TrainerOptions, train_model

    buffer = tracking.MetricBuffer(store, run_id)
    options = TrainerOptions(
        workdir=Path(job.workdir), config_hash=job.job_id, seed=job.seed, device=device, quiet=ctx.quiet,
        callback=lambda stage, step, values: buffer.add(curve_keys(stage, values), step),
        artifacts=ArtifactStore(paths.artifacts_dir()), should_stop=_should_stop(ctx), model_name=job.label,
        progress_label=job.title.replace(" ", "-"),  # `sbm-vae-seed-0:score: …`: parallel jobs' lines apart
        code_version=git_commit(),
    )
    try:
        reports = train_model(model, train, val, options)
    finally:
        buffer.flush()
    stage_values: dict[str, float] = {}
    for r in reports:
        stage_values[stage_metric(r.name, "seconds")] = r.seconds
        stage_values[stage_metric(r.name, "reused")] = float(r.reused)
        if r.samples_per_second is not None:
            stage_values[stage_metric(r.name, "samples_per_second")] = r.samples_per_second
        if r.seconds_per_step is not None:
            stage_values[stage_metric(r.name, PER_STEP)] = r.seconds_per_step
    store.log_metrics(run_id, [(k, v, 0) for k, v in stage_values.items()], _now_ms())
    store.set_tags(run_id, {Tag.STAGE_CODE: json.dumps({r.name: list(r.code_versions) for r in reports})})
    save_model(model, Path(job.workdir) / "model.pt", job.model, {"job_id": job.job_id, "seed": job.seed})


def curve_keys(stage: str, values: dict[str, float]) -> dict[str, float]:
    """Trainer keys ``train/loss`` of stage ``unimodal/m0`` become ``train/unimodal/m0/loss``."""
    return {curve_metric(stage, key): value for key, value in values.items()}


def _evaluate(job: Job, ctx: JobContext, store: tracking.Store, run_id: str, model: Any, test: Any,
              device: Any) -> None:
    from mmbench.metrics.pipeline import evaluate
    from mmbench.metrics.settings import EvalSettings
    from mmbench.runner.cost import evaluation_generation

    settings = EvalSettings(**dict(job.eval_settings), device=str(device))
    workdir = Path(job.workdir) / "eval"
    cached = workdir.exists() and any(workdir.iterdir())  # a resumed evaluation reuses cached samples
    start = time.perf_counter()
    result = evaluate(model, test, job.metrics, settings, workdir, progress=not ctx.quiet)
    _log_eval_time(store, run_id, time.perf_counter() - start, None if cached else evaluation_generation(job))
    log_evaluation(store, run_id, job, settings, result)


def log_evaluation(store: tracking.Store, run_id: str, job: Job, settings: Any, result: Any) -> None:
    """A job's evaluation (an :class:`~mmbench.metrics.settings.EvalResult`) in its run: the values as
    metrics, every expected key without a value with its reason (tag and artifact), the keys' directions,
    the provenance as tags and the metric files as artifacts."""
    skipped = missing_keys(job, settings, result.values, result.skipped)
    store.log_metrics(run_id, [(k, v, 0) for k, v in sorted(result.values.items())], _now_ms())
    store.set_tags(run_id, provenance_tags(result.provenance))
    store.set_tags(run_id, {Tag.SKIPPED: json.dumps(skipped, sort_keys=True) if skipped else "{}"})
    store.log_json(run_id, skipped, Artifact.SKIPPED)
    store.log_json(run_id, directions(list(result.values) + list(skipped)), Artifact.METRIC_KEYS)
    for path in sorted(Path(p) for p in result.artifacts.values()):
        if path.exists():
            store.log_artifact(run_id, path, artifact_folder(path))


def _log_eval_time(store: tracking.Store, run_id: str, seconds: float, generated: tuple[int | None, int] | None) -> None:
    """``job/eval_seconds``, and ``job/eval_seconds_per_sample`` over the conditional queries and
    unconditional samples the evaluation generated (not when it started from cached samples: fewer were)."""
    values = [(Metric.EVAL_SECONDS, seconds, 0)]
    if generated is not None and generated[0] is not None and sum(generated) > 0:
        values.append((Metric.EVAL_SECONDS_PER_SAMPLE, seconds / (generated[0] + generated[1]), 0))
    store.log_metrics(run_id, values, _now_ms())


def missing_keys(job: Job, settings: Any, values: dict[str, float], skipped: dict[str, str]) -> dict[str, str]:
    """Every expected key without a value, with its reason (a skipped metric's reason covers its keys).

    Runs of different models then carry the same key set: a value, or a reason it is missing; never 0.
    """
    from mmbench.runner.catalog import expected_keys
    from mmbench.runner.data import modality_kinds

    out: dict[str, str] = {}
    kinds = modality_kinds(job.data)  # masks and attributes have F1 keys, not coherence or FID ones
    for metric in job.metrics:
        for key in expected_keys(metric, kinds, settings):
            if key in values:
                continue
            out[key] = skipped.get(key) or skipped.get(metric) or "the metric produced no value for this key"
    for key, reason in skipped.items():
        if key not in job.metrics and key not in values:
            out.setdefault(key, reason)
    return out


def directions(keys: list[str]) -> dict[str, bool | None]:
    from mmbench.runner.catalog import higher_is_better

    return {k: higher_is_better(k) for k in sorted(set(keys))}


def _now_ms() -> int:
    return int(time.time() * 1000)
