"""FID and KID on torch-fidelity 0.4.0's features -> statistics (``toshas/torch-fidelity``).

FID: Heusel et al. 2017 (TTUR). Statistics by ``fid_features_to_statistics``; the Fréchet distance's
tr((Σ₁Σ₂)^½) as Σ √eig(AΣ₁A) with A = Σ₂^½ (a symmetric matrix with the same eigenvalues as Σ₁Σ₂, so
``eigvalsh`` replaces ``fid_statistics_to_metric``'s general ``eigvals``: the same number, ≈ 8× faster
at 512-d, and A of the real set is computed once per modality; the tests compare both).
KID: Binkowski et al. 2018, unbiased MMD² with the cubic polynomial kernel, averaged over random subsets
(``kid_features_to_metric``). Generated images of each target are compared with the real images of the
same modality and split. Real statistics are cached under ``mmbench.paths.cache_dir()/fid_stats`` by
dataset, split content hash, modality, extractor, extractor weights hash and N (torch-fidelity's own cache
is keyed by name only), with a sha256 sidecar: a cached file that fails verification (or has no sidecar)
is moved aside and the statistics are computed again (``mmbench.integrity``).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mmbench import integrity, paths
from mmbench.hashing import sha256_array
from mmbench.metrics.base import MetricOutput
from mmbench.metrics.catalog import curve_queries, given_one_pairs, loo_given, subset_id
from mmbench.metrics.context import EvalContext

Statistics = dict[str, np.ndarray]


def statistics(features: np.ndarray) -> Statistics:
    """Mean and covariance of features (float64), by torch-fidelity's ``fid_features_to_statistics``."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"FID statistics need at least 2 feature rows (N, D), got shape {features.shape}")
    return fid_features_to_statistics(torch.from_numpy(features))


def covariance_sqrt(sigma: np.ndarray) -> np.ndarray:
    """The symmetric PSD square root of a covariance (eigenvalues below 0 from round-off count as 0)."""
    eigenvalues, vectors = np.linalg.eigh(sigma)
    return (vectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ vectors.T


def frechet_distance(stats_1: Statistics, stats_2: Statistics, sigma_2_sqrt: np.ndarray | None = None) -> float:
    """FID between two Gaussians: ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr((Σ₁Σ₂)^½).

    ``sigma_2_sqrt``: ``covariance_sqrt(stats_2["sigma"])`` when the caller has it (the real set's).
    """
    mu_1, sigma_1, mu_2, sigma_2 = stats_1["mu"], stats_1["sigma"], stats_2["mu"], stats_2["sigma"]
    if mu_1.shape != mu_2.shape or sigma_1.shape != sigma_2.shape:
        raise ValueError(f"FID statistics of different feature sizes: {mu_1.shape} and {mu_2.shape}")
    root = covariance_sqrt(sigma_2) if sigma_2_sqrt is None else sigma_2_sqrt
    eigenvalues = np.linalg.eigvalsh(root @ sigma_1 @ root)
    trace_covmean = float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())
    diff = mu_1 - mu_2
    return float(diff @ diff + np.trace(sigma_1) + np.trace(sigma_2) - 2.0 * trace_covmean)


def fid_from_features(features_1: np.ndarray, features_2: np.ndarray) -> float:
    return frechet_distance(statistics(features_1), statistics(features_2))


def kid_from_features(
    features_1: np.ndarray, features_2: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """(mean, std) of unbiased KID over ``subsets`` random subsets of size ``min(subset_size, N1, N2)``."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    size = min(subset_size, len(features_1), len(features_2))
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(features_1)} and {len(features_2)}")
    f1 = torch.from_numpy(np.asarray(features_1, dtype=np.float64))
    f2 = torch.from_numpy(np.asarray(features_2, dtype=np.float64))
    out = kid_features_to_metric(f1, f2, kid_subsets=subsets, kid_subset_size=size, rng_seed=seed, verbose=False)
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD])


@dataclass(frozen=True)
class RealStatistics:
    stats: Statistics
    features: np.ndarray  # float32, for KID
    path: Path
    sigma_sqrt: np.ndarray  # covariance_sqrt(stats["sigma"]), shared by every generated set scored against it


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:60] or "data"


def real_statistics(ctx: EvalContext, images: np.ndarray, dataset: str, modality: str) -> RealStatistics:
    """Features and statistics of real uint8 images, cached on disk by everything they depend on."""
    identity = ctx.extractor_identity
    content = sha256_array(np.asarray(images))[:16]
    name = f"{_safe(dataset)}-{content}-{modality}-{identity.name}-{identity.weights_sha256[:16]}-n{len(images)}.npz"
    path = paths.cache_dir() / "fid_stats" / name
    cached = integrity.load_or_recover(path, _load_statistics, "FID statistics", "computing them again")
    if cached is not None:
        return cached
    features = ctx.features(("real", content, modality), images)
    stats = statistics(features)
    root = covariance_sqrt(stats["sigma"])
    buffer = io.BytesIO()
    np.savez(buffer, mu=stats["mu"], sigma=stats["sigma"], sigma_sqrt=root, features=features.astype(np.float32))
    integrity.write_bytes(path, buffer.getvalue())
    return RealStatistics(stats, features, path, root)


def _load_statistics(path: Path) -> RealStatistics:
    """Cached real statistics, from bytes checked against their recorded sha256 (``mmbench.integrity``)."""
    with np.load(io.BytesIO(integrity.read_bytes(path))) as stored:
        stats = {"mu": stored["mu"], "sigma": stored["sigma"]}
        # files written before the square root was stored compute it (the same number)
        root = stored["sigma_sqrt"] if "sigma_sqrt" in stored.files else covariance_sqrt(stats["sigma"])
        return RealStatistics(stats, stored["features"], path, root)


def _score(ctx: EvalContext, out: MetricOutput, key: str, generated: np.ndarray, real: RealStatistics, kid: bool) -> tuple:
    stats = statistics(generated)
    fid = frechet_distance(stats, real.stats, real.sigma_sqrt)
    out.values[f"fid/{key}"] = fid
    kid_mean = kid_std = ""
    if kid:
        s = ctx.settings
        kid_mean, kid_std = kid_from_features(generated, real.features, s.kid_subsets, s.kid_subset_size, s.seed)
        out.values[f"kid/{key}"] = kid_mean
    return fid, kid_mean, kid_std


def _means(out: MetricOutput, prefixes: list[str], targets: list[str]) -> None:
    for prefix in prefixes:
        if all(f"{prefix}/{m}" in out.values for m in targets):
            out.values[f"{prefix}/mean"] = float(np.mean([out.values[f"{prefix}/{m}"] for m in targets]))
        elif targets:
            why = sorted({out.skipped[f"{prefix}/{m}"] for m in targets if f"{prefix}/{m}" in out.skipped})
            out.skipped[f"{prefix}/mean"] = "the mean needs every target's value; " + "; ".join(why)


def _unanswered(ctx: EvalContext, out: MetricOutput, keys: list[str], given, target: str) -> bool:  # type: ignore[no-untyped-def]
    """Record ``keys`` as skipped when the model does not answer the query (``MultimodalModel.answers``)."""
    reason = ctx.unanswered(given, target)
    for key in keys if reason else []:
        out.skipped[key] = reason
    return reason is not None


def compute_fid(ctx: EvalContext) -> MetricOutput:
    """Conditional FID/KID per image target given the rest, and FID of the k-observed curves."""
    out, rows, kid = MetricOutput(), [], ctx.settings.kid
    n = len(ctx.data)
    real = _RealSets(ctx)  # computed for the targets the model answers (none: no extractor is loaded)

    for m in ctx.images:
        given = loo_given(ctx.names, m)
        if _unanswered(ctx, out, [f"fid/loo/{m}"] + ([f"kid/loo/{m}"] if kid else []), given, m):
            continue
        fid, kid_mean, kid_std = _score(ctx, out, f"loo/{m}", ctx.conditional_features(given, m), real[m], kid)
        rows.append(("loo", subset_id(given, ctx.names), m, len(given), n, n, fid, kid_mean, kid_std))
    _means(out, ["fid/loo", "kid/loo"] if kid else ["fid/loo"], ctx.images)
    if ctx.settings.k_curves:
        curve_rows = ctx.cache.curve_rows()
        for curve, k, given, target in curve_queries(ctx.names):
            if ctx.kinds[target] == "image" and not _unanswered(ctx, out, [f"fid/{curve}/k{k}"], given, target):
                features = ctx.conditional_features(given, target, curve_rows)
                fid, _, _ = _score(ctx, out, f"{curve}/k{k}", features, real[target], False)
                rows.append((curve, subset_id(given, ctx.names), target, k, len(features), n, fid, "", ""))
        out.provenance["fid/curves/n_generated"] = str(len(curve_rows))
    for given, target in given_one_pairs(ctx.kinds):  # paper Table 1: the image given one other modality
        key = f"given/{given[0]}/{target}"
        if ctx.kinds[target] == "image" and not _unanswered(ctx, out, [f"fid/{key}"], given, target):
            features = ctx.conditional_features(given, target)
            fid, _, _ = _score(ctx, out, key, features, real[target], False)
            rows.append(("given_one", given[0], target, 1, len(features), n, fid, "", ""))
    header = ["kind", "given", "target", "num_given", "n_generated", "n_real", "fid", "kid", "kid_std"]
    out.artifacts["fid_conditional.csv"] = ctx.write_csv("fid_conditional.csv", header, rows)
    out.provenance.update({"fid/n_generated": str(n), "fid/n_real": str(n)})
    return out


class _RealSets(dict):
    """``{modality: RealStatistics}`` of the evaluation tuples, each computed when first asked."""

    def __init__(self, ctx: EvalContext) -> None:
        super().__init__()
        self.ctx = ctx

    def __missing__(self, modality: str) -> RealStatistics:
        data = self.ctx.data
        self[modality] = real_statistics(self.ctx, data.images[modality], data.name, modality)
        return self[modality]


def compute_unconditional_fid(ctx: EvalContext) -> MetricOutput:
    """Unconditional FID/KID per image modality against the real images of the test split."""
    out, rows, kid = MetricOutput(), [], ctx.settings.kid
    real_set = ctx.real_unconditional
    for m in ctx.images:
        samples = ctx.cache.unconditional(m)
        real = real_statistics(ctx, real_set.images[m], real_set.name, m)
        fid, kid_mean, kid_std = _score(ctx, out, f"uncond/{m}", ctx.features(("unconditional", m), samples), real, kid)
        rows.append((m, len(samples), len(real_set), fid, kid_mean, kid_std))
    _means(out, ["fid/uncond", "kid/uncond"] if kid else ["fid/uncond"], ctx.images)
    header = ["modality", "n_generated", "n_real", "fid", "kid", "kid_std"]
    out.artifacts["fid_unconditional.csv"] = ctx.write_csv("fid_unconditional.csv", header, rows)
    out.provenance.update(
        {"fid/uncond/n_generated": str(ctx.settings.n_unconditional), "fid/uncond/n_real": str(len(real_set))}
    )
    return out
