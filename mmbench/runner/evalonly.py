"""``mmbench eval``: score weights trained elsewhere as one run of a suite, without training.

The checkpoint is a ``state_dict`` the user saved (``torch.save(model.state_dict(), path)``) or a job's
``model.pt`` written by mmbench (:func:`mmbench.persist.save_model`). The run is planned like a ``mmbench
run`` job of the model at the budget and seed (same data, classifiers, eval settings and record layout),
as an extra row labelled ``<row>-checkpoint`` (``<model>-checkpoint`` for a model the suite has no row of), so
a trained row is never replaced by an evaluated one in the report; its job id adds the checkpoint's sha256, and the
run carries ``evaluated_only=true``, the checkpoint's path and ``provenance.checkpoint_sha256``. The
weights are loaded and checked against the model before any run is opened.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mmbench.hashing import config_hash, sha256_file
from mmbench.runner.plan import Job, job_specs
from mmbench.runner.prepare import RunOptions
from mmbench.runner.weights import CheckpointError, checkpoint_file, load_weights, read_checkpoint
from mmbench.suites.extra_rows import add_rows, extra_variant
from mmbench.suites.spec import Budget, Suite, Variant

Say = Callable[[str], None]
def eval_row(suite: Suite, model: str) -> Variant:
    """The row an evaluated checkpoint is recorded as: the suite's row of that label or model, else an extra
    row of the registered model, relabelled ``<label>-checkpoint``."""
    rows = [v for v in suite.variants if v.label == model] or [v for v in suite.variants if v.model == model]
    if len(rows) > 1:
        labels = ", ".join(v.label for v in rows)
        raise CheckpointError(f"model {model!r} has {len(rows)} rows in suite {suite.name!r} ({labels}); "
                              "pass one of those labels as --model")
    if not rows:
        from mmbench import registry

        registry.entry(model)  # KeyError with the known names when unknown
        rows = [extra_variant(model)]
    return dataclasses.replace(rows[0], label=f"{rows[0].label}-checkpoint", extra=True)


def eval_options(suite: Suite, budget: Budget, model: str, seed: int, base: RunOptions) -> tuple[Suite, RunOptions]:
    """The suite with the evaluated row and the options that plan exactly its one job."""
    row = eval_row(suite, model)
    if row.label in {v.label for v in suite.variants}:
        raise CheckpointError(f"suite {suite.name!r} already has a row {row.label!r}; register the model under "
                              "another name")
    options = dataclasses.replace(base, budget=budget, models=(row.label,), seeds=(seed,))
    return add_rows(suite, [row]), options


def evaluate_checkpoint(suite: Suite, budget: Budget, model: str, checkpoint: Path, seed: int, base: RunOptions,
                        say: Say = print) -> Any:
    """Evaluate ``checkpoint`` as ``model`` on ``suite`` at ``budget`` and ``seed``: one FINISHED (or FAILED)
    run in the suite's store; returns the run's summary (:class:`mmbench.runner.run.RunSummary`)."""
    from mmbench.runner.run import run_suite

    path = checkpoint_file(checkpoint)
    spec, options = eval_options(suite, budget, model, seed, base)
    digest = sha256_file(path)

    def adjust(jobs: list[Job]) -> list[Job]:
        out = [checkpoint_job(job, path, digest) for job in jobs]
        for job in out:
            check_fits(job)
        return out

    say(f"evaluating {path} (sha256 {digest[:12]}…) as {options.models[0]} without training")
    return run_suite(spec, options, say, adjust=adjust)


def checkpoint_job(job: Job, path: Path, digest: str) -> Job:
    """``job`` made to evaluate the weights at ``path``: its id adds the checkpoint's sha256."""
    job_id = config_hash({"job": job.job_id, "checkpoint_sha256": digest})
    return dataclasses.replace(job, job_id=job_id, workdir=str(Path(job.workdir).parent / job_id),
                               checkpoint=str(path), checkpoint_sha256=digest)


def check_fits(job: Job) -> None:
    """Build the job's model on the CPU and load the checkpoint into it (raises CheckpointError)."""
    from mmbench import registry

    payload = read_checkpoint(Path(job.checkpoint))
    saved = payload.get("name") if isinstance(payload, Mapping) and "config_hash" in payload else None
    if saved is not None and saved != job.model:
        raise CheckpointError(f"checkpoint {job.checkpoint} is a job's model.pt of model {saved!r}, not "
                              f"{job.model!r}; pass --model {saved}")
    model = registry.build(job.model, job.data.modalities, dict(job.overrides), job_specs(job))
    load_weights(model, Path(job.checkpoint), job.checkpoint_sha256, job.budget)


