"""Planning: a suite at a budget becomes jobs (row × seed), each identified by the hash of its resolved config.

A job's id hashes everything that determines its numbers: suite name and version, budget, row label,
model name, the model's resolved config, seed, the data's identity and the eval settings (HELM-style
run specs: equal ids mean equal work, so a finished id is never run twice).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmbench import paths
from mmbench.hashing import canonical_json, config_hash
from mmbench.runner.data import ClassifierPlan, DataRef, data_ref, with_observed_share
from mmbench.scaling import scale_overrides
from mmbench.suites.spec import Budget, Suite, Variant


@dataclass(frozen=True)
class Job:
    """One unit of work: train one row's model at one seed, evaluate it, log it (plain, picklable)."""

    job_id: str
    suite: str
    suite_version: str
    budget: str
    label: str
    model: str
    seed: int
    data: DataRef
    overrides: tuple[tuple[str, Any], ...]  # what registry.build receives (budget + row + data_id)
    config_json: str  # the model's resolved config (canonical JSON)
    config_hash: str
    eval_settings: tuple[tuple[str, Any], ...]  # EvalSettings fields except device
    metrics: tuple[str, ...]
    ranks: bool
    workdir: str
    extra_row: bool = False  # a row the user added to the suite's (mmbench.suites.extra_rows)
    checkpoint: str = ""  # evaluate these weights instead of training (`mmbench eval`); "" trains
    checkpoint_sha256: str = ""
    row_settings: str = ""  # canonical JSON of what the budget set for the row (Budget.row_settings); not hashed


    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.config_json)

    @property
    def title(self) -> str:
        return f"{self.label} seed {self.seed}"

    def describe(self) -> dict[str, Any]:
        """Everything about the job as JSON-able data (the ``config.json`` artifact)."""
        out = dataclasses.asdict(self)
        out["config"] = self.config
        out.pop("config_json")
        out["overrides"] = dict(self.overrides)
        out["eval_settings"] = dict(self.eval_settings)
        return out


def modalities_of(suite: Suite, variant: Variant) -> tuple[str, ...]:
    names = suite.dataset.modalities
    return names[: variant.num_modalities] if variant.num_modalities else names


HARNESS_FIELDS = ("data_id", "seed")  # config fields the harness fills in when a model's Config has them


def model_overrides(budget: Budget, variant: Variant, data_id: str | None, seed: int | None,
                    config_cls: type) -> dict[str, Any]:
    """The budget's scale as the model's Config maps it, the budget's explicit overrides for the model,
    then the row's, then the harness fields the Config declares.

    ``data_id`` (the identity of the train data) and ``seed`` (the job's seed) let a model put both
    into its stages' reuse keys.
    """
    merged = {
        **scale_overrides(config_cls, budget.scale, variant.model), **budget.overrides_of(variant.model),
        **variant.overrides_at(budget.name),
    }
    fields = {f.name for f in dataclasses.fields(config_cls)}
    values = {"data_id": data_id, "seed": seed}
    for name in HARNESS_FIELDS:
        if name in fields and values[name] is not None:
            merged[name] = values[name]
    return merged


def resolved_config(model: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The model's full config after the registry's per-name defaults and ``overrides`` (imports the model)."""
    from mmbench.config import to_dict
    from mmbench.registry import model_config

    return to_dict(model_config(model, overrides))


def eval_settings(suite: Suite, budget: Budget, classifiers: ClassifierPlan, seed: int) -> dict[str, Any]:
    """EvalSettings fields of a job (device is chosen at run time and is not part of the job's identity)."""
    from mmbench.metrics.settings import EvalSettings

    fields = dataclasses.asdict(EvalSettings())
    fields.update({"classifier": classifiers.eval_name, "substitute": classifiers.substitute_name, "seed": seed})
    fields.update(dict(budget.eval_overrides))
    fields.pop("device")
    return fields


def job_identity(suite: Suite, budget: Budget, variant: Variant, config: dict[str, Any], seed: int,
                 data: DataRef, settings: dict[str, Any]) -> str:
    return config_hash({
        "suite": suite.name, "version": suite.version, "budget": budget.name, "label": variant.label,
        "model": variant.model, "config": config, "seed": seed, "data": data.identity(),
        "eval": settings, "metrics": list(suite.metrics),
    })


def plan_jobs(
    suite: Suite, budget: Budget, classifiers: ClassifierPlan, models: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None, runs_root: Path | None = None, provisional: bool = False,
) -> list[Job]:
    """Every (row, seed) job of a suite at a budget, in row order then seed order.

    ``provisional``: plan even when the dataset is not built yet (``--dry-run``); the ids then change
    once it is built, because they hash the data's content.
    """
    from mmbench.runner.data import DataMissing, placeholder_ref
    from mmbench.runner.models import model_class

    root = runs_root or paths.runs_dir()
    jobs = []
    for variant in suite.select(tuple(models) if models else None):
        modalities = modalities_of(suite, variant)
        try:
            complete = data_ref(suite.dataset, budget, modalities)
        except DataMissing:
            if not provisional:
                raise
            complete = placeholder_ref(suite.dataset, budget, modalities)
        config_cls = model_class(variant.model).Config
        for seed in seeds if seeds is not None else budget.seeds:
            data = with_observed_share(complete, variant.observed_share, int(seed))
            overrides = model_overrides(budget, variant, data.data_id, int(seed), config_cls)
            config = resolved_config(variant.model, overrides)
            settings = eval_settings(suite, budget, classifiers, seed)
            job_id = job_identity(suite, budget, variant, config, seed, data, settings)
            jobs.append(Job(
                job_id=job_id, suite=suite.name, suite_version=suite.version, budget=budget.name,
                label=variant.label, model=variant.model, seed=int(seed), data=data,
                overrides=tuple(sorted(overrides.items())), config_json=canonical_json(config),
                config_hash=config_hash(config), eval_settings=tuple(sorted(settings.items())),
                metrics=suite.metrics, ranks=budget.ranks, workdir=str(root / suite.name / job_id),
                extra_row=variant.extra, row_settings=canonical_json(budget.row_settings(variant)),
            ))
    return jobs


# -------------------------------------------------------------------------------------------------- cost


@dataclass(frozen=True)
class StageCost:
    name: str
    steps: int
    batch_size: int
    modalities: int
    reuse_key: str | None = None  # stages with equal keys are trained once and shared

    @property
    def image_passes(self) -> int:
        """Training images pushed through the stage (steps × batch × modalities it touches)."""
        return self.steps * self.batch_size * self.modalities


def stage_costs(job: Job) -> list[StageCost]:
    """The training stages of a job's model (builds the model on CPU; trains nothing)."""
    from mmbench.registry import build

    model = build(job.model, job.data.modalities, dict(job.overrides), job_specs(job))
    m = len(job.data.modalities)
    return [
        StageCost(s.name, s.hparams.steps, s.hparams.batch_size, len(s.modalities) if s.modalities else m, s.reuse_key)
        for s in model.stages()
    ]


def job_specs(job: Job) -> dict[str, Any] | None:
    """The job's modality specs (kinds and shapes) from its data source; None (PolyMNIST images) where the
    source does not know them."""
    from mmbench.runner.data import declared_specs

    return declared_specs(job.data)
