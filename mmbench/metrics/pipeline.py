"""The metric pipeline: one trained model -> generate once (sample cache) -> every metric -> flat keys.

``evaluate`` skips (with a reason, never a zero) every metric whose capabilities the model lacks or that
does not apply to the data, generates the samples the others declare (the clean conditional queries as one
plan of sampler passes, the unconditional samples), runs them on one shared
:class:`~mmbench.metrics.context.EvalContext`, checks that each produced exactly its ``expected_keys``, and
returns numbers, skip reasons, artifacts and provenance. Metrics never call the tracker. Importing this
module does not import torch.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmbench.metrics import catalog  # noqa: F401  (registers the built-in metrics)
from mmbench.metrics.base import (
    CLASSIFIER,
    CONDITIONAL_SAMPLES,
    FID_EXTRACTOR,
    METRICS,
    SUBSTITUTE,
    UNCONDITIONAL_SAMPLES,
    MetricOutput,
    MetricSkipped,
    declared,
    expected_keys,
    get_metric,
    normalise_modalities,
)
from mmbench.metrics.base import higher_is_better as _higher_is_better
from mmbench.metrics.settings import EvalResult, EvalSettings

if TYPE_CHECKING:
    from mmbench.contract import Capability, MultimodalModel
    from mmbench.data.dataset import MultimodalDataset
    from mmbench.metrics.context import EvalContext

__all__ = [
    "EvalResult", "EvalSettings", "evaluate", "expected_keys", "higher_is_better", "metric_names",
    "metric_needs", "check_resources", "dataset_kinds",
]

def metric_names() -> list[str]:
    """Every registered metric name, in registration order."""
    return list(METRICS)


def metric_needs(name: str) -> frozenset[Capability]:
    """The model capabilities a metric needs."""
    from mmbench.contract import Capability

    return frozenset(Capability(v) for v in get_metric(name).needs)


def higher_is_better(key: str) -> bool | None:
    """Whether a larger value of a produced key is better (``None`` for diagnostics and unknown keys)."""
    return _higher_is_better(key)


def dataset_kinds(data: Any, modalities: Sequence[str]) -> dict[str, str]:
    """``{modality: kind}``: a dataset may declare ``modality_kinds``; otherwise every modality is an image."""
    kinds: Mapping[str, str] = getattr(data, "modality_kinds", None) or {}
    return normalise_modalities({m: kinds.get(m, "image") for m in modalities})


def check_resources(metrics: Sequence[str], settings: EvalSettings) -> None:
    """Fail early (before training) when a classifier or FID weights file that ``metrics`` need is missing."""
    from classifiers.store import load_classifier
    from mmbench.metrics.extractors import INCEPTION, resolve_inception_weights

    resources = declared(metrics, "resources")
    fid_from_classifier = FID_EXTRACTOR in resources and settings.fid_extractor != INCEPTION
    if CLASSIFIER in resources or fid_from_classifier:
        load_classifier(settings.classifier)
    if SUBSTITUTE in resources:
        load_classifier(settings.substitute)
    if FID_EXTRACTOR in resources and settings.fid_extractor == INCEPTION:
        resolve_inception_weights(settings.inception_weights)


def _check_subsets(settings: EvalSettings, names: Sequence[str]) -> None:
    for given in settings.subsets:
        unknown = set(given) - set(names)
        if unknown or not given or set(given) >= set(names):
            raise ValueError(
                f"EvalSettings.subsets entry {given!r} must be a non-empty proper subset of {list(names)}"
                + (f"; unknown: {sorted(unknown)}" if unknown else "")
            )


def _printer(enabled: bool):
    if not enabled:
        return None
    return lambda message: print(f"[eval] {message}", file=sys.stderr, flush=True)


class _SampleCounts:
    """The sample cache's generation counts as ``[eval] <metric>: generating 1200/5000 samples, ~2m10s left``
    lines (:class:`mmbench.progress.CountLines`), labelled with the metric being computed, or with every
    metric sharing the samples while they are generated up front."""

    def __init__(self, say) -> None:  # type: ignore[no-untyped-def]
        from mmbench import progress

        self.lines = progress.CountLines(say, progress.COUNT_INTERVAL_S)  # read now: tests shorten it
        self.label = "samples"

    def __call__(self, what: str, done: int, total: int) -> None:
        self.lines(self.label, done, total, what)


def _capability_gap(model: MultimodalModel, name: str) -> str | None:
    missing = sorted(c.value for c in metric_needs(name) if not model.has(c))
    if missing:
        return f"{type(model).__name__} lacks capabilities {missing} that {name!r} needs"
    return None


def _run_metric(ctx: EvalContext, name: str, expected: list[str]) -> MetricOutput:
    """Run one metric and check it produced exactly its expected keys; non-finite numbers become skips."""
    out = get_metric(name).load()(ctx)
    produced = set(out.values) | set(out.skipped)
    if produced != set(expected):
        raise RuntimeError(
            f"metric {name!r} produced keys that differ from expected_keys: "
            f"missing {sorted(set(expected) - produced)}, unexpected {sorted(produced - set(expected))}"
        )
    for key, value in list(out.values.items()):
        if not math.isfinite(value):
            del out.values[key]
            out.skipped[key] = f"the computed value is {value} (not finite)"
        else:
            out.values[key] = float(value)
    return out


def _grids(ctx: EvalContext) -> dict[str, Path]:
    """Sample grids of the groups that were generated: real vs leave-one-out rows, unconditional rows."""
    from mmbench.metrics.catalog import loo_given
    from mmbench.metrics.grids import write_grid

    size, out = ctx.settings.grid_size, {}
    if size == 0 or not ctx.images:
        return out
    if "loo" in ctx.cache.keys:
        rows = []
        for m in [m for m in ctx.images if not ctx.unanswered(loo_given(ctx.names, m), m)]:
            rows += [ctx.data.images[m][:size], ctx.cache.conditional(loo_given(ctx.names, m), m)[:size]]
        if rows:
            out["samples_loo.png"] = write_grid(ctx.artifact_path("samples_loo.png"), rows)
    if "uncond" in ctx.cache.keys:
        rows = [ctx.cache.unconditional(m)[:size] for m in ctx.images]
        out["samples_uncond.png"] = write_grid(ctx.artifact_path("samples_uncond.png"), rows)
        if ctx.attributes:
            out[JOINT_SAMPLES] = _joint_samples(ctx, size)
    return out


JOINT_SAMPLES = "samples_uncond_joint.npz"


def _joint_samples(ctx: EvalContext, size: int) -> Path:
    """The first ``size`` unconditional joint draws, every modality (uint8), for the image / mask /
    attribute rows of Wesego & Rooshenas 2024 Fig. 10 (``mmbench.report.fig10``); with the attribute
    names where the data records them."""
    import io

    import numpy as np

    from mmbench import atomic

    arrays = {f"modality__{m}": np.asarray(ctx.cache.unconditional(m)[:size]) for m in ctx.names}
    arrays["kinds"] = np.asarray([f"{m}={k}" for m, k in ctx.kinds.items()])
    names = attribute_names(ctx.data)
    if names:
        arrays["attribute_names"] = np.asarray(names)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path = ctx.artifact_path(JOINT_SAMPLES)
    atomic.write_bytes(path, buffer.getvalue())
    return path


def attribute_names(data: MultimodalDataset) -> list[str]:
    """The names of the data's attributes where known: those its stored manifest records (CelebAMask-HQ's
    kept 18, the twin's 12), else the twin's for in-memory twin data; [] otherwise."""
    from mmbench.data.store import DatasetError, read_manifest, resolve_dataset

    try:
        recorded = read_manifest(resolve_dataset(data.name.split(".")[0])).get("attribute_names")
    except (DatasetError, OSError, ValueError):
        recorded = None
    if recorded:
        return [str(name) for name in recorded]
    if data.name.startswith("celeba-twin"):
        from mmbench.data.celebatwin import ATTRIBUTES

        return list(ATTRIBUTES)
    return []


def _generate(ctx: EvalContext, samples: frozenset[str], counts: _SampleCounts | None = None,
              metrics: Sequence[str] = ()) -> None:
    """Generate what the metrics declared before any runs: with the plan, every clean conditional query as
    one plan of sampler passes (the transformed leave-one-out replays its passes when FGSM asks)."""

    def label(kind: str) -> None:  # progress lines name every metric that uses the samples
        if counts is not None:
            counts.label = ", ".join(m for m in metrics if kind in declared([m], "samples")) or "samples"

    if CONDITIONAL_SAMPLES in samples and ctx.settings.generation_plan and ctx.cache.groups:
        label(CONDITIONAL_SAMPLES)
        group = next(iter(ctx.cache.groups.values()))
        ctx.cache.conditional(sorted(group.queries[0][0]), sorted(group.queries[0][1])[0])
    if UNCONDITIONAL_SAMPLES in samples and ctx.names:
        label(UNCONDITIONAL_SAMPLES)
        ctx.cache.unconditional(ctx.names[0])


def _provenance(ctx: EvalContext, test: MultimodalDataset) -> dict[str, str]:
    s = ctx.settings
    out = {
        "eval/dataset": test.name, "eval/data_hash": test.data_hash or ctx.cache.data_hash,
        "eval/n_conditional": str(len(ctx.data)), "eval/n_unconditional": str(s.n_unconditional),
        "eval/n_real_unconditional": str(len(ctx.real_unconditional)), "eval/seed": str(s.seed),
        "eval/model_hash": ctx.cache.model_hash, "eval/fid_extractor": s.fid_extractor,
    }
    out.update({f"eval/sample_cache/{g}": key for g, key in ctx.cache.keys.items()})
    out.update({f"seconds/samples/{g}": f"{t:.3f}" for g, t in ctx.cache.seconds.items()})
    out.update({f"eval/sampler_calls/{g}": str(n) for g, n in ctx.cache.passes.items()})
    out["eval/generation"] = (
        f"plan of {ctx.settings.generation_batch}-sample passes"
        + ("" if ctx.model.packs_requests else ", one model call per query in each pass")
        if ctx.settings.generation_plan else f"per group, {ctx.settings.batch_size} tuples per call"
    )
    return out


def evaluate(
    model: MultimodalModel,
    test: MultimodalDataset,
    metrics: Sequence[str],
    settings: EvalSettings,
    workdir: Path,
    progress: bool = False,
) -> EvalResult:
    """Score one trained model on ``test`` with ``metrics`` (names from :func:`metric_names`)."""
    from mmbench.metrics.context import EvalContext

    names = list(model.modalities)
    kinds = dataset_kinds(test, names)
    _check_subsets(settings, names)
    requested = list(dict.fromkeys(get_metric(m).name for m in metrics))
    test = test.select_modalities(names)
    data = test.subset(settings.n_conditional) if settings.n_conditional else test
    real_unconditional = test.subset(min(settings.n_unconditional, len(test)))
    resources = declared(requested, "resources")
    share = FID_EXTRACTOR in resources and CLASSIFIER in resources
    ctx = EvalContext(model, data, real_unconditional, kinds, settings, Path(workdir), _printer(progress), share)
    counts = _SampleCounts(ctx.say) if progress else None
    ctx.cache.counter = counts
    values: dict[str, float] = {}
    skipped: dict[str, str] = {}
    artifacts: dict[str, Path] = {}
    provenance: dict[str, str] = {}
    gaps = {name: gap for name in requested if (gap := _capability_gap(model, name))}
    skipped.update(gaps)
    runnable = [name for name in requested if name not in gaps]
    _generate(ctx, declared(runnable, "samples"), counts, runnable)
    for name in runnable:
        if counts is not None:
            counts.label = name
        ctx.say(f"{name} ...")
        start = time.perf_counter()
        try:
            out = _run_metric(ctx, name, expected_keys(name, kinds, settings))
        except MetricSkipped as reason:
            skipped[name] = str(reason)
            continue
        provenance[f"seconds/{name}"] = f"{time.perf_counter() - start:.3f}"
        ctx.say(f"{name} done in {provenance[f'seconds/{name}']} s")
        values.update(out.values)
        skipped.update(out.skipped)
        artifacts.update(out.artifacts)
        provenance.update(out.provenance)
    artifacts.update(_grids(ctx))
    provenance.update(ctx.provenance)
    provenance.update(_provenance(ctx, test))
    return EvalResult(values, skipped, artifacts, provenance)
