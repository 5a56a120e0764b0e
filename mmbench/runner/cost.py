"""What a job will cost in time, and how that estimate was obtained.

Every finished job records its measured cost (:mod:`mmbench.runner.job`): per trained stage the seconds
per optimiser step (``stage/<name>/seconds_per_step``), and the evaluation's seconds per generated sample
(``job/eval_seconds_per_sample``), with the run tagged by ``cost_key`` (the model and its config without
its training step counts: what fixes the time of one step), ``device`` and ``threads``. An estimate scales
those measurements by the steps and sample counts of the job to price:

    training   = Σ over the stages it trains   steps × measured seconds per step
    evaluation = (conditional queries + unconditional samples) × measured seconds per sample
    overhead   = the measured rest of a fresh job (data, building, saving, logging: ``job/overhead_seconds``)

A part that nothing in the store measured on the same device and thread count falls back to
:data:`COST_MODEL`, per-step figures measured on the project's 2-core CPU (``docs/harness.md``, "What a
``quick`` run costs"), and where neither applies it is unknown. Each part says which of the three it is.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mmbench.hashing import config_hash
from mmbench.progress import format_seconds
from mmbench.records import Metric, Tag, stage_metric
from mmbench.runner.plan import Job, StageCost, job_specs, stage_costs

MEASURED = "measured here"
COST_MODEL_SOURCE = "cost model"
UNKNOWN = "unknown"
SAMPLING_STEP_FIELDS = frozenset({"sampler_steps", "corrector_steps"})  # they price evaluation, not training
NOT_COST = frozenset({"seed", "data_id"})  # fields that change a job's identity but not its cost


def training_step_fields(config: dict[str, Any]) -> set[str]:
    """The config fields that count optimiser steps (``steps``, ``<stage>_steps``): they scale a job's cost
    but not the cost of one step."""
    return {k for k in config if (k == "steps" or k.endswith("_steps")) and k not in SAMPLING_STEP_FIELDS}


def cost_key(model: str, config: dict[str, Any], n_modalities: int) -> str:
    """What fixes the time of one training step and of one generated sample: the model, its config
    without its training step counts, seed and data identity, and the number of modalities."""
    priced = {k: v for k, v in config.items() if k not in training_step_fields(config) and k not in NOT_COST}
    return config_hash({"model": model, "config": priced, "modalities": n_modalities})


def job_cost_key(job: Job) -> str:
    return cost_key(job.model, job.config, len(job.data.modalities))


def evaluation_generation(job: Job) -> tuple[int | None, int]:
    """(conditional queries, unconditional samples) the job's evaluation generates (None: the whole test
    split, whose size is unknown)."""
    from mmbench.metrics.catalog import planned_generation
    from mmbench.metrics.settings import EvalSettings

    settings = EvalSettings(**dict(job.eval_settings))
    sizes = [n for n in (settings.n_conditional, job.data.n_test) if n is not None]
    n = min(sizes) if sizes else 1
    answers, samples_unconditionally = _model_answers(job)
    conditional, unconditional = planned_generation(job.data.modalities, job.metrics, settings, n, _kinds(job),
                                                    answers, samples_unconditionally)
    return (conditional if sizes else None), unconditional


def _model_answers(job: Job) -> tuple[Callable[[frozenset[str], str], bool] | None, bool]:
    """(the job's model's ``answers``, whether it samples unconditionally): None where it answers every
    query (the default ``MultimodalModel.answers``; only a model that overrides it is built)."""
    from mmbench.contract import Capability, MultimodalModel
    from mmbench.runner.models import model_class

    try:
        cls = model_class(job.model)
    except (KeyError, ImportError, AttributeError):
        return None, True
    capabilities = getattr(cls, "capabilities", frozenset(Capability))
    if Capability.CONDITIONAL not in capabilities:
        return (lambda given, target: False), Capability.UNCONDITIONAL in capabilities
    if getattr(cls, "answers", MultimodalModel.answers) is MultimodalModel.answers:
        return None, Capability.UNCONDITIONAL in capabilities
    from mmbench.registry import build

    return build(job.model, job.data.modalities, dict(job.overrides), job_specs(job)).answers, (
        Capability.UNCONDITIONAL in capabilities)


def _kinds(job: Job) -> dict[str, str]:
    """The kinds of the job's modalities (the given-one queries of paper Table 1 are asked only on data
    with attribute or mask modalities)."""
    from mmbench.runner.data import modality_kinds

    return modality_kinds(job.data)


# ------------------------------------------------------------------------------------ the cost model

@dataclass(frozen=True)
class Reference:
    """Seconds per optimiser step of one stage kind at a reference size (one CPU thread, this 2-core CPU)."""

    seconds_per_step: float
    batch_size: int = 64
    width: float | None = 0.25  # the conv channel multiplier the figure was measured at (None: no conv nets)
    modalities: int = 10
    modality_power: int = 1  # the step's cost grows as modalities**power (MMVAE's M² cross decodes: 2)
    source: str = ""


_H = 3600.0
# medians of bench_coherence's step clocks (records of 2026-11-30; one thread, the 2-core machine shared with one
# or two other jobs): unimodal VAE 0.106 s per step, default score UNet 0.521 s (the lean one 0.255), MVAE 2.02 s
_AE = Reference(0.106, modalities=1, source="unimodal VAE/RAE 0.106 s per step (bench_coherence clock median)")
_SCORE = Reference(0.521, width=None, source="score stage 0.521 s per UNet step at batch 64, dim 64 (clock median)")
# MLD's score net is an MLP (width 768 at quick), not the UNet: the median of its record's step clock (2026-12-02, lr
# 3e-4, 12,000 steps on quick's cached latents, one thread beside two to three jobs); the old row's 0.64 s ran at load 4
_MLD_SCORE = Reference(0.298, width=None, source="MLD score MLP 0.298 s per step at batch 64 (bench_coherence clock median)")
COST_MODEL: dict[tuple[str, str], Reference] = {
    # docs/harness.md, "What a quick run costs on this CPU" (polymnist10 quick: width 0.25, batch 64, 10 modalities)
    **{(m, "ae"): _AE for m in ("sbm-vae", "sbm-rae", "sbm-vae-c", "sbm-rae-c", "sbm-vae-t", "sbm-rae-t", "mld")},
    **{(m, "score"): _SCORE for m in ("sbm-vae", "sbm-rae", "sbm-vae-c", "sbm-rae-c", "sbm-vae-t", "sbm-rae-t")},
    ("mld", "score"): _MLD_SCORE,
    # the trainer's clock over 60 steps at polymnist10 quick's settings (2000 train tuples, one thread, the 2-core machine
    # shared with two other jobs; 2026-12-01): the -C rows' pairwise energy MLP (on cached latents, so no conv width)
    # and the -T rows' contrastive encoders (one per modality, at aux_width = width)
    **{(m, "energy"): Reference(0.0163, width=None, modality_power=0,
                                source="energy MLP 0.016 s per step at batch 64 (trainer clock)")
       for m in ("sbm-vae-c", "sbm-rae-c")},
    **{(m, "aux"): Reference(0.49, source="contrastive encoders 0.49 s per step at batch 64 (trainer clock)")
       for m in ("sbm-vae-t", "sbm-rae-t")},
    # the F1 floors count the train split in their stage's prepare and take no optimiser step
    **{(m, "frequency"): Reference(0.0, width=None, modality_power=0, source="counted, no optimiser steps")
       for m in ("majority", "marginal")},
    ("mvae", "joint"): Reference(2.02, source="MVAE 2.02 s per step (bench_coherence clock median)"),
    ("mopoe", "joint"): Reference(3.4 * _H / 6750, source="MoPoE 3.4 h per 6,750 steps"),
    ("mvtcae", "joint"): Reference(0.5 * _H / 1500, source="MVTCAE 0.5 h per 1,500 steps"),
    # the polymnist10 quick run's MMVAE row (job 61633275de4c1e9c, 2026-12-01, one thread beside one other job):
    # 9.47 s per step over its 800 (the earlier figure, 11 h per 3,000 steps, priced the row 30 % high)
    ("mmvae", "joint"): Reference(9.47, modality_power=2, source="MMVAE 9.47 s per step (quick run's trainer clock)"),
    ("mmvaeplus", "joint"): Reference(7 * _H / 3000, modality_power=2, source="MMVAE+ 7 h per 3,000 steps"),
    # 2026-12-01, celeba-twin (32 px image and mask): 200 steps in 18.7 s at width 0.125, batch 64, i.e.
    # 0.094 s per step, ×4 at width 0.25; one image encoder and one mask decoder whatever the modality count
    ("supervised", "supervised"): Reference(4 * 18.7 / 200, modalities=3, modality_power=0,
                                            source="supervised row 18.7 s per 200 steps at width 0.125 (twin)"),
}
# a PC-100 sample (200 score evaluations) of the default UNet dim 64: 526 ms (bench_sampler_quality, 2026-11-30)
SECONDS_PER_SCORE_EVALUATION = 0.526 / 200
# The lean score nets (SBMConfig.unet_level_attention / unet_block_mult, docs/sbm.md "Score-net cost"): CPU time
# relative to the default UNet, (per forward at sampling, per training step), from bench_unet_profile.py's table
# (dim 64, 10 modalities, one process, best of 5).
SCORE_NET_FACTORS: dict[tuple[bool, int], tuple[float, float]] = {
    (True, 2): (1.0, 1.0),
    (False, 2): (287 / 378, 383 / 456),
    (True, 1): (248 / 378, 320 / 456),
    (False, 1): (185 / 378, 250 / 456),
}


def score_net_factor(config: dict[str, Any], training: bool) -> float:
    """The cost of the config's score net relative to the default UNet's (1 for nets without the options)."""
    variant = (bool(config.get("unet_level_attention", True)), int(config.get("unet_block_mult", 2)))
    sampling, train = SCORE_NET_FACTORS.get(variant, (1.0, 1.0))
    return train if training else sampling
# a sample of a model that decodes in one pass (no score sampler): the polymnist10 quick run's evaluations of 16,800
# generated each, 2026-12-01 - MVAE 0.0080 s, MMVAE 0.0054 s (job/eval_seconds_per_sample); their mean. (The earlier
# figure, 1 h for five such models' 26,800 each, 0.027 s, priced these evaluations at 7m31s where they took 1m31s-2m15s.)
SECONDS_PER_DIRECT_SAMPLE = (0.0080 + 0.0054) / 2


def cost_model_step(job: Job, stage: StageCost) -> float | None:
    """Seconds per step of ``stage`` by :data:`COST_MODEL`, scaled linearly in batch size, quadratically
    in conv width and as the reference says in modalities; None where the table has no figure."""
    kind = stage.name.split("/", 1)[0]
    ref = COST_MODEL.get((job.model, kind))
    if ref is None:
        return None
    seconds = ref.seconds_per_step * stage.batch_size / ref.batch_size
    if kind == "score":
        seconds *= score_net_factor(job.config, training=True)
    width = job.config.get("width")
    if ref.width is not None and isinstance(width, (int, float)):
        seconds *= (width / ref.width) ** 2
    return seconds * (stage.modalities / ref.modalities) ** ref.modality_power


def cost_model_sample(job: Job) -> float | None:
    """Seconds per generated sample by the cost model: score evaluations × their cost for a score-based
    model (its sampler's count), the non-score models' average otherwise; None for a model the table
    does not know (a plugin model's sampling cost is its own)."""
    config = job.config
    if job.model not in {model for model, _ in COST_MODEL}:
        return None
    if "sampler" in config and "sampler_steps" in config:
        from latentdiff.sampling import nfe_of

        nfe = nfe_of(config["sampler"], config["sampler_steps"], config.get("corrector_steps", 1))
        return nfe * SECONDS_PER_SCORE_EVALUATION * score_net_factor(config, training=False)
    return SECONDS_PER_DIRECT_SAMPLE


# ------------------------------------------------------------------------------------ measurements

Where = tuple[str, int | None]  # (device, torch threads)
PER_STEP = "seconds_per_step"  # stage_metric(<stage>, PER_STEP): measured seconds per optimiser step


def stage_of(metric: str, what: str) -> str | None:
    """The stage name of a ``stage_metric(<stage>, what)`` key; None for any other key."""
    head, _, tail = metric.rpartition("/")
    name = head.partition("/")[2]
    return name if tail == what and name and stage_metric(name, what) == metric else None


@dataclass(frozen=True)
class Measurements:
    """Measured costs from a store's finished job runs: mean seconds per step per (cost key, stage,
    device, threads) and per generated sample per (cost key, device, threads)."""

    step: dict[tuple[str, str, str, int | None], float]
    sample: dict[tuple[str, str, int | None], float]
    overhead: dict[tuple[str, str, int | None], float]

    @classmethod
    def from_runs(cls, runs: Iterable[Any]) -> Measurements:
        steps: dict[tuple[str, str, str, int | None], list[float]] = defaultdict(list)
        samples: dict[tuple[str, str, int | None], list[float]] = defaultdict(list)
        overheads: dict[tuple[str, str, int | None], list[float]] = defaultdict(list)
        for run in runs:
            key, threads = run.tags.get(Tag.COST_KEY), _int(run.tags.get(Tag.THREADS))
            device = run.tags.get(Tag.DEVICE, "").split(":")[0]
            if not key:
                continue  # recorded before runs carried their cost key
            for name, value in run.metrics.items():
                stage = stage_of(name, PER_STEP)
                if stage is not None:
                    steps[(key, stage, device, threads)].append(value)
            if Metric.EVAL_SECONDS_PER_SAMPLE in run.metrics:
                samples[(key, device, threads)].append(run.metrics[Metric.EVAL_SECONDS_PER_SAMPLE])
            if Metric.OVERHEAD_SECONDS in run.metrics:
                overheads[(key, device, threads)].append(run.metrics[Metric.OVERHEAD_SECONDS])
        return cls(*({k: _mean(v) for k, v in d.items()} for d in (steps, samples, overheads)))

    def places(self, keys: set[str]) -> set[Where]:
        """The (device, threads) at which runs with one of these cost keys were measured."""
        found = {(d, t) for k, _, d, t in self.step if k in keys}
        return found | {(d, t) for k, d, t in self.sample if k in keys}

    @classmethod
    def empty(cls) -> Measurements:
        return cls({}, {}, {})


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


# ------------------------------------------------------------------------------------ estimates

@dataclass(frozen=True)
class Part:
    """One priced part of a job (a stage's training or the evaluation) and how it was priced."""

    name: str
    seconds: float | None
    source: str  # MEASURED | COST_MODEL_SOURCE | UNKNOWN


@dataclass(frozen=True)
class JobEstimate:
    parts: tuple[Part, ...]

    @property
    def seconds(self) -> float | None:
        """The whole job's estimate; None when any part is unknown."""
        if any(p.seconds is None for p in self.parts):
            return None
        return sum(p.seconds or 0.0 for p in self.parts)

    @property
    def known_seconds(self) -> float:
        return sum(p.seconds for p in self.parts if p.seconds is not None)

    def group(self, training: bool) -> list[Part]:
        """The training stages' parts, or the evaluation's (a job's overhead is in neither)."""
        return [p for p in self.parts if p.name not in ("eval", "overhead")] if training else [
            p for p in self.parts if p.name == "eval"]

    def sources(self, training: bool) -> str:
        """How the training parts (or the evaluation) were priced: one source, or the mix."""
        parts = self.group(training)
        kinds = sorted({p.source for p in parts}, key=(MEASURED, COST_MODEL_SOURCE, UNKNOWN).index)
        return " + ".join(kinds) if kinds else "nothing to train"


def where(device: str, threads: int | None) -> Where:
    """The (device type, torch threads) a job given ``threads`` (None: torch's default;
    :func:`mmbench.runner.parallel.job_threads`) runs at, as its runs are tagged."""
    import torch

    from mmbench.training.device import resolve_device

    return resolve_device(device).type, threads or torch.get_num_threads()


def estimate(job: Job, stages: Sequence[StageCost], shared: Sequence[str], generated: int | None,
             measured: Measurements, place: Where) -> JobEstimate:
    """Price a job: each stage it trains (``shared`` ones are trained by another job of the plan) and its
    evaluation of ``generated`` conditional queries + unconditional samples (None: the count is unknown)."""
    key, (device, threads) = job_cost_key(job), place
    parts = [_stage_part(job, s, key, measured, device, threads) for s in stages if s.name not in shared]
    overhead = measured.overhead.get((key, device, threads))
    if overhead is not None:  # data, building, saving, logging: measured only (the cost model's hours dwarf it)
        parts.append(Part("overhead", overhead, MEASURED))
    per_sample = measured.sample.get((key, device, threads))
    if generated is None:
        parts.append(Part("eval", None, UNKNOWN))
    elif per_sample is not None:
        parts.append(Part("eval", generated * per_sample, MEASURED))
    elif device == "cpu" and (modelled := cost_model_sample(job)) is not None:  # the table is this CPU's
        parts.append(Part("eval", generated * modelled, COST_MODEL_SOURCE))
    else:
        parts.append(Part("eval", None, UNKNOWN))
    return JobEstimate(tuple(parts))


def _stage_part(job: Job, stage: StageCost, key: str, measured: Measurements, device: str,
                threads: int | None) -> Part:
    per_step = measured.step.get((key, stage.name, device, threads))
    if per_step is not None:
        return Part(stage.name, stage.steps * per_step, MEASURED)
    modelled = cost_model_step(job, stage) if device == "cpu" else None  # the table is this CPU's
    if modelled is not None:
        return Part(stage.name, stage.steps * modelled, COST_MODEL_SOURCE)
    return Part(stage.name, None, UNKNOWN)


@dataclass(frozen=True)
class JobCost:
    job: Job
    stages: list[StageCost]
    shared: list[str]  # names of stages another job of this plan already trains
    estimate: JobEstimate  # time per stage and for the evaluation, each with how it was obtained
    conditional: int | None  # conditional queries the evaluation generates (None: the whole test split, size unknown)
    unconditional: int  # unconditional samples the evaluation generates

    @property
    def seconds(self) -> float | None:
        """The job's estimated time; None when some part of it is unknown."""
        return self.estimate.seconds


def job_costs(jobs: list[Job], measured: Measurements, place: Where,
              stored: Callable[[str], bool] = lambda key: False) -> list[JobCost]:
    """Each job's stages (those an earlier job of ``jobs`` trains, or that ``stored`` says the artifact store
    holds, count as shared: loaded, not trained), generation and time."""
    seen: set[str] = set()
    out = []
    for job in jobs:
        stages = [] if job.checkpoint else stage_costs(job)  # `mmbench eval` trains nothing
        shared = [s.name for s in stages if s.reuse_key and (s.reuse_key in seen or stored(s.reuse_key))]
        seen.update(s.reuse_key for s in stages if s.reuse_key)
        conditional, unconditional = evaluation_generation(job)
        generated = None if conditional is None else conditional + unconditional
        priced = estimate(job, stages, shared, generated, measured, place)
        out.append(JobCost(job, stages, shared, priced, conditional, unconditional))
    return out


def artifact_store_has() -> Callable[[str], bool]:
    """Whether this home's artifact store holds a stage, by its reuse key (for :func:`job_costs`)."""
    from mmbench import paths
    from mmbench.training.artifacts import ArtifactStore

    return ArtifactStore(paths.artifacts_dir()).has


def describe(est: JobEstimate) -> str:
    """``~9h42m (training 3h02m cost model, eval 6h40m cost model)``; a part or total that is partly
    unknown reads ``≥ …``, one wholly unknown ``unknown``."""
    total = est.seconds
    when = f"~{format_seconds(total)}" if total is not None else (
        f"≥ {format_seconds(est.known_seconds)}" if est.known_seconds > 0 else "time unknown")
    overhead = sum(p.seconds or 0.0 for p in est.parts if p.name == "overhead")
    rest = f", overhead {format_seconds(overhead)} {MEASURED}" if overhead else ""
    return f"{when} (training {_group(est, True)}, eval {_group(est, False)}{rest})"


def _group(est: JobEstimate, training: bool) -> str:
    parts = est.group(training)
    if not parts:
        return "nothing to train"
    known = [p.seconds for p in parts if p.seconds is not None]
    if not known:
        return UNKNOWN
    bound = "" if len(known) == len(parts) else "≥ "
    return f"{bound}{format_seconds(sum(known))} {est.sources(training)}"
