"""Coherence: does the generated modality carry the label of the tuple it was generated from?

Conditional coherence (Shi et al. 2019, ``iffsid/mmvae``; Wesego & Rooshenas 2024 Table 5, Figs. 9, 13,
14, ``rooshenasgroup/sbmae``): the evaluation classifier labels each generated target and the share that
matches the tuple's label is reported. Unconditional coherence (Fig. 5): the share of joint samples in
which at least k modalities receive the same label, k = 2..M ("all agree" = k = M).
"""

from __future__ import annotations

import numpy as np

from mmbench.metrics.base import MetricOutput, MetricSkipped
from mmbench.metrics.catalog import curve_queries, loo_given, subset_id, subset_targets
from mmbench.metrics.context import EvalContext


def coherence(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Share of predictions equal to the labels."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or predictions.ndim != 1 or len(labels) == 0:
        raise ValueError(f"need two equal, non-empty 1-d arrays, got {predictions.shape} and {labels.shape}")
    return float(np.mean(predictions == labels))


def largest_agreement(predictions: np.ndarray) -> np.ndarray:
    """Per sample (row), the number of modalities (columns) sharing the most frequent label."""
    predictions = np.asarray(predictions)
    if predictions.ndim != 2:
        raise ValueError(f"expected (samples, modalities) predictions, got shape {predictions.shape}")
    sorted_rows = np.sort(predictions, axis=1)
    best = np.ones(len(predictions), dtype=np.int64)
    run = np.ones(len(predictions), dtype=np.int64)
    for j in range(1, predictions.shape[1]):
        same = sorted_rows[:, j] == sorted_rows[:, j - 1]
        run = np.where(same, run + 1, 1)
        best = np.maximum(best, run)
    return best


def agreement_shares(predictions: np.ndarray) -> dict[int, float]:
    """``{k: share of samples with at least k modalities agreeing}`` for k = 2..M."""
    best = largest_agreement(predictions)
    return {k: float(np.mean(best >= k)) for k in range(2, predictions.shape[1] + 1)}


def _mean(out: MetricOutput, prefix: str, targets: list[str]) -> None:
    if all(f"{prefix}/{m}" in out.values for m in targets):
        out.values[f"{prefix}/mean"] = float(np.mean([out.values[f"{prefix}/{m}"] for m in targets]))
    else:
        why = sorted({out.skipped[f"{prefix}/{m}"] for m in targets if f"{prefix}/{m}" in out.skipped})
        out.skipped[f"{prefix}/mean"] = "the mean needs every target's value; " + "; ".join(why)


def compute_coherence(ctx: EvalContext) -> MetricOutput:
    """Leave-one-out per image target (+ mean), k-observed curves, explicit subsets."""
    out, rows = MetricOutput(), []

    def score(key: str, given, target, tuples=None) -> None:  # type: ignore[no-untyped-def]
        reason = ctx.unanswered(given, target)
        if reason:  # the model does not answer this query (MultimodalModel.answers)
            out.skipped[key] = reason
            return
        predictions, labels = ctx.scored(given, target, tuples)
        out.values[key] = coherence(predictions, labels)
        rows.append((subset_id(given, ctx.names), target, len(given), len(labels), out.values[key]))

    for m in ctx.images:
        score(f"coherence/loo/{m}", loo_given(ctx.names, m), m)
    if ctx.images:
        _mean(out, "coherence/loo", ctx.images)
    if ctx.settings.k_curves:
        curve_rows = ctx.cache.curve_rows()
        for curve, k, given, target in curve_queries(ctx.names):
            if ctx.kinds[target] == "image":
                score(f"coherence/{curve}/k{k}", given, target, curve_rows)
        out.provenance["coherence/curves/n"] = str(len(curve_rows))
    for given in ctx.settings.subsets:
        prefix = f"coherence/given/{subset_id(given, ctx.names)}"
        targets = subset_targets(ctx.names, ctx.kinds, given)
        for m in targets:
            score(f"{prefix}/{m}", given, m)
        if targets:
            _mean(out, prefix, targets)
    out.artifacts["coherence_conditional.csv"] = ctx.write_csv(
        "coherence_conditional.csv", ["given", "target", "num_given", "n", "coherence"], rows
    )
    out.provenance["coherence/n"] = str(len(ctx.labels))
    return out


def compute_unconditional_coherence(ctx: EvalContext) -> MetricOutput:
    """Shares of unconditional samples with at least k agreeing image modalities (and all agreeing)."""
    if len(ctx.images) < 2:
        raise MetricSkipped(f"needs at least 2 image modalities, the data has {ctx.images}")
    predictions = np.stack([ctx.unconditional_predictions(m) for m in ctx.images], axis=1)
    shares = agreement_shares(predictions)
    out = MetricOutput()
    for k, share in shares.items():
        out.values[f"coherence/uncond/atleast_{k}"] = share
    out.values["coherence/uncond/all_agree"] = shares[len(ctx.images)]
    out.artifacts["coherence_unconditional.csv"] = ctx.write_csv(
        "coherence_unconditional.csv", ["at_least_k", "share"], sorted(shares.items())
    )
    out.provenance["coherence/uncond/n"] = str(len(predictions))
    return out
