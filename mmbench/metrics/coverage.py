"""Mode coverage (Wesego & Rooshenas 2024 A.5, Fig. 20): which classes do unconditional samples show?

The evaluation classifier labels every unconditional sample of each modality; from the label counts we
report the normalised entropy H(p)/log K (1 = uniform), KL(p ‖ uniform) = log K − H(p) in nats (0 =
uniform) and the number of classes seen at least once. The counts themselves are a CSV artifact.
"""

from __future__ import annotations

import numpy as np

from mmbench.metrics.base import MetricOutput, MetricSkipped
from mmbench.metrics.catalog import COVERAGE_STATS
from mmbench.metrics.context import EvalContext


def coverage_stats(counts: np.ndarray) -> dict[str, float]:
    """Normalised entropy, KL to uniform (nats) and classes covered of a label-count vector (K >= 2)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or len(counts) < 2 or counts.sum() <= 0 or (counts < 0).any():
        raise ValueError(f"need non-negative counts over at least 2 classes with a positive total, got {counts}")
    p = counts / counts.sum()
    nonzero = p[p > 0]
    entropy = float(-(nonzero * np.log(nonzero)).sum())
    log_k = float(np.log(len(counts)))
    return {
        "entropy_norm": entropy / log_k,
        "kl_uniform": max(log_k - entropy, 0.0),
        "classes_covered": float((counts > 0).sum()),
    }


def compute_mode_coverage(ctx: EvalContext) -> MetricOutput:
    if not ctx.images:
        raise MetricSkipped("mode coverage needs an image modality; the data has none")
    out, rows = MetricOutput(), []
    k = ctx.num_classes
    per_modality = []
    for m in ctx.images:
        counts = np.bincount(ctx.unconditional_predictions(m), minlength=k)
        stats = coverage_stats(counts)
        per_modality.append(stats)
        for name in COVERAGE_STATS:
            out.values[f"mode_coverage/{m}/{name}"] = stats[name]
        rows.append((m, *counts.tolist()))
    for name in COVERAGE_STATS:
        out.values[f"mode_coverage/mean/{name}"] = float(np.mean([s[name] for s in per_modality]))
    header = ["modality", *[f"class_{c}" for c in range(k)]]
    out.artifacts["mode_coverage_counts.csv"] = ctx.write_csv("mode_coverage_counts.csv", header, rows)
    out.provenance["mode_coverage/n"] = str(ctx.settings.n_unconditional)
    return out
