"""F1 of generated attribute and mask modalities (Wesego & Rooshenas 2024 Table 1, CelebAMask-HQ).

sklearn's ``f1_score(average="samples")``: F1 per sample over its labels, averaged over samples.
Attributes are thresholded at 0.5; masks are rounded and flattened per sample (PROTOCOL.md §3).
A sample with no positive label in both truth and prediction scores 0 (sklearn's default, made explicit).
"""

from __future__ import annotations

import numpy as np

from mmbench.metrics.base import MetricOutput, MetricSkipped
from mmbench.metrics.catalog import given_one_pairs, loo_given
from mmbench.metrics.context import EvalContext

THRESHOLD = 0.5


def binarise(values: np.ndarray, kind: str) -> np.ndarray:
    """``(N, ...)`` values in [0, 1] -> ``(N, L)`` 0/1 labels: attributes ``> 0.5``, masks rounded."""
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    if kind == "attributes":
        return (values > THRESHOLD).astype(np.int64)
    if kind == "mask":
        return np.rint(values).clip(0, 1).astype(np.int64)
    raise ValueError(f"F1 is defined for 'attributes' and 'mask' modalities, not {kind!r}")


def f1_samples(truth: np.ndarray, generated: np.ndarray, kind: str = "attributes") -> float:
    """Sample-averaged F1 (sklearn ``average='samples'``) of generated vs true values in [0, 1]."""
    from sklearn.metrics import f1_score

    truth, generated = np.asarray(truth), np.asarray(generated)
    if truth.shape != generated.shape or len(truth) == 0:
        raise ValueError(f"truth and generated must have the same non-empty shape, got {truth.shape} and {generated.shape}")
    return float(f1_score(binarise(truth, kind), binarise(generated, kind), average="samples", zero_division=0))


def as_unit(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, dtype=np.float64) / 255.0


def compute_f1(ctx: EvalContext) -> MetricOutput:
    """F1 of each attribute / mask modality generated from all the others (``f1/loo``) and, on data with
    at least 3 modalities, from each single other one (``f1/given/<given>/<target>``, paper Table 1).
    A query the model does not answer (``MultimodalModel.answers``) is recorded as skipped, with why."""
    if not ctx.attributes:
        raise MetricSkipped(
            f"no attribute or mask modality in {ctx.data.name!r} (modalities {ctx.names} are images); "
            "F1 applies to attribute data such as CelebA"
        )
    out, rows = MetricOutput(), []

    def score(key: str, given: tuple[str, ...], target: str) -> None:
        reason = ctx.unanswered(given, target)
        if reason:
            out.skipped[key] = reason
            return
        generated = ctx.cache.conditional(given, target)
        truth = ctx.data.images[target][ctx.cache.rows(given, target)]
        out.values[key] = f1_samples(as_unit(truth), as_unit(generated), ctx.kinds[target])
        rows.append(("+".join(given), target, ctx.kinds[target], out.values[key]))

    for m in ctx.attributes:
        score(f"f1/loo/{m}", loo_given(ctx.names, m), m)
    loo = [out.values.get(f"f1/loo/{m}") for m in ctx.attributes]
    if None in loo:
        out.skipped["f1/loo/mean"] = "the mean needs every target's F1; " + "; ".join(sorted(set(out.skipped.values())))
    else:
        out.values["f1/loo/mean"] = float(np.mean(loo))
    for given, target in given_one_pairs(ctx.kinds):
        if target in ctx.attributes:
            score(f"f1/given/{given[0]}/{target}", given, target)
    out.artifacts["f1.csv"] = ctx.write_csv("f1.csv", ["given", "target", "kind", "f1"], rows)
    return out
