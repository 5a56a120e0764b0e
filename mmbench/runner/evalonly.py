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
from mmbench.runner.extra import add_rows, extra_variant
from mmbench.runner.plan import Job
from mmbench.runner.prepare import RunOptions
from mmbench.suites.spec import Budget, Suite, Variant

Say = Callable[[str], None]
SHOWN_KEYS = 3  # keys named in a mismatch message


class CheckpointError(ValueError):
    """A checkpoint cannot be evaluated as given; the message names the problem and the fix."""


def checkpoint_file(path: Path) -> Path:
    """The checkpoint's absolute path; a one-line error when it is not a readable file."""
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        where = "is a folder" if path.is_dir() else "does not exist"
        raise CheckpointError(f"checkpoint {path} {where}; pass the file written by "
                              "torch.save(model.state_dict(), PATH) or a job's model.pt")
    return path


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
    model = registry.build(job.model, job.data.modalities, dict(job.overrides), _specs(job))
    load_weights(model, Path(job.checkpoint), job.checkpoint_sha256, job.budget)


def _specs(job: Job) -> dict[str, Any] | None:
    """The kind and shape of each of the job's modalities, as its data source declares them (as the job's
    own build sees them in the loaded data); None where the source does not name them all."""
    from mmbench.data.registry import get_source

    declared = {s.name: s for s in get_source(job.data.kind, job.data.name, len(job.data.modalities)).modality_specs()}
    return {m: declared[m] for m in job.data.modalities} if all(m in declared for m in job.data.modalities) else None


def load_weights(model: Any, path: Path, sha256: str = "", budget: str = "") -> None:
    """Load a checkpoint's ``state_dict`` into ``model`` (strict: same keys, same shapes); ``sha256``: the
    digest the file must still have."""
    if sha256 and sha256_file(path) != sha256:
        raise CheckpointError(f"checkpoint {path} changed since it was planned (sha256 differs); run the command again")
    state = state_dict_of(read_checkpoint(path), path)
    problems = mismatches(model.state_dict(), state)
    if problems:
        at = f" at budget {budget!r}" if budget else ""
        raise CheckpointError(
            f"checkpoint {path} does not fit {type(model).__name__} as this suite builds it{at}: "
            f"{'; '.join(problems)}. Save model.state_dict() of the model built with the same config (sizes "
            "follow the budget's scale: pass the --budget it was trained at)"
        )
    model.load_state_dict(state, strict=True)


def read_checkpoint(path: Path) -> Any:
    import torch

    from mmbench import integrity

    try:
        if integrity.sidecar(path).exists():
            return integrity.load_torch(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (any unreadable file gets the same advice)
        raise CheckpointError(f"checkpoint {path} cannot be read as a torch file ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); save it with "
                              "torch.save(model.state_dict(), PATH)") from None


def state_dict_of(payload: Any, path: Path) -> dict[str, Any]:
    """The state_dict inside a checkpoint: the file itself, or a job's ``model.pt`` payload's."""
    import torch

    if isinstance(payload, Mapping) and "state_dict" in payload and "config_hash" in payload:
        payload = payload["state_dict"]  # mmbench.persist.save_model
    elif isinstance(payload, Mapping) and "module" in payload and "step" in payload:
        raise CheckpointError(f"checkpoint {path} is one training stage's checkpoint; pass the job's model.pt "
                              "(beside its stage checkpoints) or a whole model's state_dict")
    if not isinstance(payload, Mapping) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"checkpoint {path} holds no state_dict (a mapping of names to tensors); save it "
                              "with torch.save(model.state_dict(), PATH)")
    return dict(payload)


def mismatches(expected: Mapping[str, Any], got: Mapping[str, Any]) -> list[str]:
    """Missing keys, unexpected keys and shape differences, each with at most SHOWN_KEYS names."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = [f"{k} {tuple(got[k].shape)} vs {tuple(expected[k].shape)}" for k in sorted(set(expected) & set(got))
              if tuple(got[k].shape) != tuple(expected[k].shape)]
    return [f"{len(keys)} {what} ({_few(keys)})" for what, keys in
            (("missing keys", missing), ("unexpected keys", unexpected), ("shapes differ", shapes)) if keys]


def _few(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN_KEYS])
    return shown + (f", … {len(items) - SHOWN_KEYS} more" if len(items) > SHOWN_KEYS else "")
