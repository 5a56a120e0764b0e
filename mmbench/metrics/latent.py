"""Latent cosine similarity (Wesego & Rooshenas 2024 A.5.2, Table 7).

For each modality m and test tuple: the cosine between the latent the model infers for m from all other
modalities (``model.infer_latent(batch, rest, m)``) and the latent it encodes from the true m
(``model.encode(batch, {m})``); averaged over the test set, then over modalities. What the two latents
are depends on the model family (docs/metrics.md).
"""

from __future__ import annotations

import numpy as np

from mmbench.metrics.base import MetricOutput
from mmbench.metrics.context import EvalContext

EPS = 1e-12


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``(N, D)`` arrays (a zero row has cosine 0)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two (N, D) arrays of the same shape, got {a.shape} and {b.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, EPS)


def compute_latent_cosine(ctx: EvalContext) -> MetricOutput:
    out, rows = MetricOutput(), []
    for m in ctx.names:
        inferred, encoded = ctx.cache.latents(m)
        if inferred.shape != encoded.shape:
            raise ValueError(
                f"{type(ctx.model).__name__}: infer_latent(rest -> {m}) gives latents of shape {inferred.shape[1:]} "
                f"but encode({{{m}}}) gives {encoded.shape[1:]}; they must live in the same space"
            )
        value = float(cosine_rows(inferred, encoded).mean())
        out.values[f"latent_cosine/{m}"] = value
        rows.append((m, inferred.shape[1], value))
    out.values["latent_cosine/mean"] = float(np.mean([out.values[f"latent_cosine/{m}"] for m in ctx.names]))
    out.artifacts["latent_cosine.csv"] = ctx.write_csv("latent_cosine.csv", ["modality", "latent_dim", "cosine"], rows)
    return out
