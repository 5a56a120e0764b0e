"""The record layout: what mmbench writes to MLflow under which name, for the writer and the reader alike.

A suite is one experiment (``mmbench/<suite>``). An invocation of ``mmbench run`` is one parent run (tag
``kind=invocation``), every job one child run (``kind=job``) linked to it by MLflow's parent-run tag. The
runner (``runner/run.py``, ``runner/job.py``) writes runs with the names below; the run look-ups
(``tracking/lookup.py``) and the report (``report/``) read them back with the same names. Nothing else
spells a tag, param or artifact name. Torch- and mlflow-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmbench.config import flatten

EXPERIMENT_PREFIX = "mmbench/"


def experiment_name(suite: str) -> str:
    """The MLflow experiment holding every run of ``suite``."""
    return f"{EXPERIMENT_PREFIX}{suite}"


class Kind:
    """Values of :attr:`Tag.KIND`."""

    JOB = "job"
    INVOCATION = "invocation"


class Tag:
    """Run tag names (the experiment carries :attr:`SUITE` too)."""

    # who a run is (job and invocation runs)
    KIND = "kind"
    SUITE = "suite"
    SUITE_VERSION = "suite_version"
    BUDGET = "budget"
    RANKS = "ranks"  # "true" | "false": whether the budget's numbers rank models
    # a job's run
    MODEL = "model"
    VARIANT = "variant"  # the suite row's label
    SEED = "seed"
    JOB_ID = "job_id"
    CONFIG_HASH = "config_hash"
    ROW_SETTINGS = "row_settings"  # canonical JSON of Budget.row_settings when the job was planned
    DATA_ID = "data_id"
    NUM_MODALITIES = "num_modalities"
    FID_EXTRACTOR = "fid_extractor"
    REQUESTED_DEVICE = "requested_device"  # what was asked for (auto, cpu, cuda:0)
    DEVICE = "device"  # job: the device it ran on; invocation: the one asked for
    THREADS = "threads"  # job: torch's CPU threads it ran with
    COST_KEY = "cost_key"  # job: what fixes its time per step and per sample (mmbench.runner.cost.cost_key)
    RESUMED_FROM = "resumed_from"  # the run id of the attempt this one resumes
    STAGE_CODE = "stage_code_versions"  # JSON {stage: [the code (git commits) its steps were trained with]}
    EXTRA_ROW = "extra_row"  # "true": a row the user added to the suite's (mmbench.suites.extra_rows)
    EVALUATED_ONLY = "evaluated_only"  # "true": a checkpoint scored by `mmbench eval`, not trained by the job
    CHECKPOINT = "checkpoint"  # the file `mmbench eval` loaded (its sha256: provenance.checkpoint_sha256)
    IMPORTED_FROM = "imported_from"  # a copied run: its run id in the store it was exported from
    ERROR = "error"  # why a run failed or was stopped
    SKIPPED = "skipped"  # JSON {key: reason}; truncated when long (the artifact SKIPPED holds all of it)
    # provenance shared by an invocation and its jobs
    GIT_COMMIT = "git_commit"
    BACKEND = "backend"
    DATASET = "dataset"
    DATASET_HASH = "dataset_hash"
    CLASSIFIER = "classifier"
    CLASSIFIER_SHA256 = "classifier_sha256"  # of its file (whose meta holds times: a retrained copy differs)
    CLASSIFIER_WEIGHTS = "classifier_weights_sha256"  # of its weights alone (classifiers.store.weights_sha256)
    SUBSTITUTE = "substitute"
    SUBSTITUTE_SHA256 = "substitute_sha256"
    SUBSTITUTE_WEIGHTS = "substitute_weights_sha256"
    FID_WEIGHTS = "fid_weights"
    # the process that opened a RUNNING run (to tell an abandoned run from a live one)
    HOST = "mmbench.host"
    PID = "mmbench.pid"
    # MLflow's own
    PARENT_RUN = "mlflow.parentRunId"
    RUN_NAME = "mlflow.runName"
    MLFLOW_PREFIX = "mlflow."  # MLflow's own tags (run name, parent, user, source)

    VERSIONS_PREFIX = "versions."  # versions.<package> = its version
    PROVENANCE_PREFIX = "provenance."  # provenance.<what a metric used> = its identity (weights sha256, ...)


FID_BY_EVAL_CLASSIFIER = "mmbench-clf"  # the FID extractor that is the evaluation classifier's penultimate layer


def scoring_references(tags: Mapping[str, str]) -> dict[str, str]:
    """What a run's numbers were scored against, as far as its tags say: the test data (their hash), the evaluation
    classifier and the FGSM substitute (by the sha256 of their weights where the run recorded it, else of their
    file), the FID extractor and, when that is not the evaluation classifier, its weights. Runs that differ in
    one do not compare: another classifier reads the same samples differently, other data are another test."""
    refs = {"dataset_hash": tags.get(Tag.DATASET_HASH)}
    for role, weights, file in (("classifier", Tag.CLASSIFIER_WEIGHTS, Tag.CLASSIFIER_SHA256),
                                ("substitute", Tag.SUBSTITUTE_WEIGHTS, Tag.SUBSTITUTE_SHA256)):
        refs[role] = f"weights {tags[weights]}" if weights in tags else (f"file {tags[file]}" if file in tags else None)
    refs["fid_extractor"] = tags.get(Tag.FID_EXTRACTOR)
    if tags.get(Tag.FID_EXTRACTOR) != FID_BY_EVAL_CLASSIFIER:
        refs["fid_weights"] = tags.get(Tag.FID_WEIGHTS)
    return {name: value for name, value in refs.items() if value}


def version_tags(versions: Mapping[str, str]) -> dict[str, str]:
    """``{"versions.torch": "2.x", ...}`` from ``{"torch": "2.x", ...}``."""
    return {f"{Tag.VERSIONS_PREFIX}{name}": version for name, version in versions.items()}


def versions_of(tags: Mapping[str, str]) -> dict[str, str]:
    """The inverse of :func:`version_tags` on a run's tags."""
    n = len(Tag.VERSIONS_PREFIX)
    return {k[n:]: v for k, v in tags.items() if k.startswith(Tag.VERSIONS_PREFIX)}


def provenance_tags(provenance: Mapping[str, str]) -> dict[str, str]:
    """A metric run's provenance strings as tags: ``provenance.<key>``."""
    return {provenance_tag(k): v for k, v in provenance.items()}


def provenance_tag(key: str) -> str:
    return f"{Tag.PROVENANCE_PREFIX}{key}"


CHECKPOINT_SHA256 = "checkpoint_sha256"  # provenance key: sha256 of the weights an evaluated-only run loaded


def flag(value: bool) -> str:
    """How a boolean is written in a tag (``"true"`` / ``"false"``)."""
    return str(value).lower()


class Param:
    """Param names of a job's run: the flattened configs under three sections, and four plain ones."""

    MODEL_SECTION = "model"  # model/<config field>: the model's resolved config
    EVAL_SECTION = "eval"  # eval/<setting>: the evaluation settings
    DATA_SECTION = "data"  # data/<field>: the data reference (sizes, hashes)
    SEED = "seed"
    MODEL_NAME = "model_name"
    VARIANT = "variant"
    BUDGET = "budget"


def config_params(model: Mapping[str, Any], eval_settings: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """``model/<field>``, ``eval/<setting>`` and ``data/<field>`` params (nested fields joined by ``/``)."""
    return flatten({Param.MODEL_SECTION: model, Param.EVAL_SECTION: eval_settings, Param.DATA_SECTION: data})


def model_param(field: str) -> str:
    """The param holding a model config field (``model/sampler``)."""
    return f"{Param.MODEL_SECTION}/{field}"


def data_param(field: str) -> str:
    """The param holding a data reference field (``data/modalities``)."""
    return f"{Param.DATA_SECTION}/{field}"


class Artifact:
    """Artifact paths of a run."""

    CONFIG = "config.json"  # a job's description (the plan's Job, config included)
    PLAN = "plan.json"  # an invocation's jobs
    SKIPPED = "skipped.json"  # a job's {metric key: why it has no value}
    METRIC_KEYS = "metric_keys.json"  # a job's {metric key: higher is better (true/false/null)}
    TRACEBACK = "traceback.txt"  # a failed job's traceback
    SAMPLES = "samples"  # folder of sample grids (.png, .pdf)
    TABLES = "tables"  # folder of metric tables (.csv)
    EVAL = "eval"  # folder of every other evaluation file


def artifact_folder(path: Path) -> str:
    """The folder a metric's output file is logged under, by its suffix."""
    suffix = path.suffix.lower()
    return {".png": Artifact.SAMPLES, ".pdf": Artifact.SAMPLES, ".csv": Artifact.TABLES}.get(suffix, Artifact.EVAL)


def artifact_path(folder: str, name: str) -> str:
    """``<folder>/<name>``: where a file logged under ``folder`` is read back."""
    return f"{folder}/{name}"


class Metric:
    """Metric names the runner writes besides the evaluation's keys (those are spelled in metrics/catalog.py)."""

    JOB_SECONDS = "job/seconds"  # an attempt's wall time, opening to closing its run
    JOB_CPU_SECONDS = "job/cpu_seconds"  # the CPU time its process spent in that span (every thread of it)
    SCORE_EVALUATIONS = "job/score_evaluations_per_sample"  # score-based samplers' evaluations per sample
    EVAL_SECONDS = "job/eval_seconds"  # the evaluation's wall time
    EVAL_SECONDS_PER_SAMPLE = "job/eval_seconds_per_sample"  # over the conditional queries + unconditional samples
    OVERHEAD_SECONDS = "job/overhead_seconds"  # a fresh job's wall time outside its stages and evaluation
    ATTEMPTS = "job/attempts"  # the attempts the job took, this one included (mmbench.runner.attempts)
    EARLIER_SECONDS = "job/earlier_attempts_seconds"  # the wall time of its earlier attempts, killed ones included
    EARLIER_CPU_SECONDS = "job/earlier_attempts_cpu_seconds"  # and their CPU time
    WALL_CLOCK = (JOB_SECONDS, JOB_CPU_SECONDS, EVAL_SECONDS, EVAL_SECONDS_PER_SAMPLE, OVERHEAD_SECONDS,
                  ATTEMPTS, EARLIER_SECONDS, EARLIER_CPU_SECONDS)  # differ run to run
    JOBS_PLANNED = "jobs/planned"  # invocation counts
    JOBS_SKIPPED = "jobs/skipped"
    JOBS_FINISHED = "jobs/finished"
    JOBS_FINISHED_ELSEWHERE = "jobs/finished_elsewhere"
    JOBS_FAILED = "jobs/failed"
    # training curves and costs, not results (the report leaves them out)
    TRAINING_PREFIXES = ("train/", "val/", "stage/", "job/")


def stage_metric(stage: str, what: str) -> str:
    """A training stage's cost: ``stage/<stage>/<seconds | reused | samples_per_second | seconds_per_step>``."""
    return f"stage/{stage}/{what}"


def curve_metric(stage: str, key: str) -> str:
    """A trainer curve key ``train/loss`` of stage ``unimodal/m0`` as ``train/unimodal/m0/loss``."""
    split, _, rest = key.partition("/")
    return f"{split}/{stage}/{rest}" if rest else f"{stage}/{key}"


def is_training_metric(key: str) -> bool:
    return key.startswith(Metric.TRAINING_PREFIXES)
