"""The built-in metrics: their keys (the one place key names are spelled) and registrations.

Torch-free: ``mmbench report`` and the harness list keys and directions without importing torch.
Conventions (docs/metrics.md): keys are ``<metric>/<kind>/<modality or statistic>``; subsets of
modalities are written as their names joined by ``.`` in model order; ``mean`` averages over targets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mmbench.metrics.base import (
    CLASSIFIER,
    CONDITIONAL_SAMPLES,
    FID_EXTRACTOR,
    SUBSTITUTE,
    TRANSFORMED,
    UNCONDITIONAL_SAMPLES,
    MetricSpec,
    attribute_modalities,
    image_modalities,
    register_metric,
)

CONDITIONAL, UNCONDITIONAL, ENCODE, LATENT_INFERENCE = "conditional", "unconditional", "encode", "latent_inference"


# --- subsets and queries ------------------------------------------------------------------------------
def subset_id(given: Iterable[str], order: Sequence[str]) -> str:
    """``m0.m2`` for the subset {m2, m0} of modalities ordered ``m0, m1, m2``."""
    chosen = set(given)
    return ".".join(m for m in order if m in chosen)


def loo_given(names: Sequence[str], target: str) -> tuple[str, ...]:
    """Every modality except ``target`` (leave-one-out conditioning)."""
    return tuple(m for m in names if m != target)


def curve_queries(names: Sequence[str]) -> list[tuple[str, int, tuple[str, ...], str]]:
    """The k-observed curves (Figs. 8, 9, 13): ``(curve, k, given, target)`` for k = 1..M-1.

    ``last_given``: the last modality given the *first* k; ``first_given``: the first modality given the
    *last* k. At k = M-1 both are leave-one-out queries.
    """
    m = len(names)
    last = [("last_given", k, tuple(names[:k]), names[-1]) for k in range(1, m)]
    first = [("first_given", k, tuple(names[m - k :]), names[0]) for k in range(1, m)]
    return last + first


Query = tuple[frozenset[str], frozenset[str]]


@dataclass(frozen=True)
class ConditionalGroup:
    """A named set of (given, targets) queries answered together, with an optional input transform."""

    name: str
    stream: str  # seed stream
    queries: tuple[Query, ...]
    transform: Callable[..., Any] | None = None  # (batch, labels) -> batch, e.g. an FGSM attack
    transform_id: dict[str, Any] | None = None  # what makes the transform's output (part of the key)
    latents: bool = False  # also store the latent behind each sample and encode({target}) of the truth
    rows: int | None = None  # answer for a class-stratified part of this many tuples (None = every tuple)


def merge_queries(pairs: Sequence[tuple[Sequence[str], str]], skip: set[tuple[frozenset[str], str]]) -> list[Query]:
    """Queries with the same given subset merged (targets united); pairs in ``skip`` left out; order kept."""
    merged: dict[frozenset[str], set[str]] = {}
    for given, target in pairs:
        key = frozenset(given)
        if (key, target) in skip:
            continue
        merged.setdefault(key, set()).add(target)
    return [(g, frozenset(t)) for g, t in merged.items()]


def answered(queries: Sequence[Query]) -> set[tuple[frozenset[str], str]]:
    return {(g, t) for g, ts in queries for t in ts}


def given_one_pairs(kinds: Mapping[str, str]) -> list[tuple[tuple[str, ...], str]]:
    """Table 1's "given one modality" queries (Wesego & Rooshenas 2024, CelebAMask-HQ): every modality given
    each single other one. Only on data with an attribute or mask modality and at least 3 modalities (with
    2, given one is leave-one-out); image-only data such as PolyMNIST asks none."""
    names = list(kinds)
    if len(names) < 3 or not attribute_modalities(kinds):
        return []
    return [((g,), t) for g in names for t in names if t != g]


Answers = Callable[[frozenset[str], str], bool]


def conditional_groups(
    names: Sequence[str], k_curves: bool, subsets: Sequence[Sequence[str]], loo_latents: bool = False,
    n_curves: int | None = None, kinds: Mapping[str, str] | None = None, answers: Answers | None = None,
) -> list[ConditionalGroup]:
    """The plan of clean conditional queries implied by the modalities, their kinds and the settings (not by
    the metrics). ``answers(given, target)``: the model's declaration (``MultimodalModel.answers``); queries
    it does not answer are left out, and a group left with none is dropped."""
    skip = set() if answers is None else {
        (frozenset(g), t) for g, t in _all_pairs(names, k_curves, subsets, kinds) if not answers(frozenset(g), t)
    }
    groups: list[ConditionalGroup] = []
    loo = merge_queries([(loo_given(names, m), m) for m in names], set(skip))
    if loo:
        groups.append(ConditionalGroup("loo", "conditional", tuple(loo), latents=loo_latents))
    done = answered(loo) | skip
    on_every_tuple = set(done)  # queries answered for every tuple (the curves may hold only n_curves)
    if k_curves:
        curves = merge_queries([(given, target) for _, _, given, target in curve_queries(names)], done)
        if curves:
            groups.append(ConditionalGroup("curves", "conditional-curves", tuple(curves), rows=n_curves))
            done |= answered(curves)
            on_every_tuple |= answered(curves) if n_curves is None else set()
    extra = merge_queries([(s, m) for s in subsets for m in names if m not in s], done)
    if extra:
        groups.append(ConditionalGroup("subsets", "conditional-subsets", tuple(extra)))
        on_every_tuple |= answered(extra)
    one = merge_queries(given_one_pairs(kinds or {}), on_every_tuple)
    if one:
        groups.append(ConditionalGroup("given_one", "conditional-given-one", tuple(one)))
    return groups


def _all_pairs(
    names: Sequence[str], k_curves: bool, subsets: Sequence[Sequence[str]], kinds: Mapping[str, str] | None
) -> list[tuple[Sequence[str], str]]:
    pairs: list[tuple[Sequence[str], str]] = [(loo_given(names, m), m) for m in names]
    if k_curves:
        pairs += [(given, target) for _, _, given, target in curve_queries(names)]
    pairs += [(s, m) for s in subsets for m in names if m not in s]
    return pairs + list(given_one_pairs(kinds or {}))


def planned_generation(
    names: Sequence[str], metrics: Iterable[str], settings: Any, n_tuples: int,
    kinds: Mapping[str, str] | None = None, answers: Answers | None = None, unconditional: bool = True,
) -> tuple[int, int]:
    """(conditional queries, unconditional samples) an evaluation of ``metrics`` generates for ``n_tuples``
    test tuples: a query is one given subset answered for one tuple (one sampler pass of a latent-diffusion
    model, whatever the number of targets). Counts the leave-one-out and FGSM passes, the k-curves (on
    ``n_curves`` tuples), the explicit subsets and, with ``kinds`` naming an attribute or mask modality among
    at least 3, the given-one queries; what the generation costs depends on the model. ``answers``: the
    model's ``MultimodalModel.answers`` (unanswered queries are not generated, and FGSM is skipped unless every
    leave-one-out query is answered); ``unconditional``: whether the model samples unconditionally."""
    from mmbench.metrics.base import declared

    samples = declared(list(metrics), "samples")
    conditional = 0
    if samples & {CONDITIONAL_SAMPLES, TRANSFORMED}:
        groups = conditional_groups(names, settings.k_curves, settings.subsets, n_curves=settings.n_curves,
                                    kinds=kinds, answers=answers)
        for group in groups:
            rows = n_tuples if group.rows is None else min(group.rows, n_tuples)
            conditional += len(group.queries) * rows
        every_loo = answers is None or all(answers(frozenset(loo_given(names, m)), m) for m in names)
        if TRANSFORMED in samples and every_loo:  # the leave-one-out group again, from attacked inputs
            conditional += len(groups[0].queries) * n_tuples
    return conditional, settings.n_unconditional if UNCONDITIONAL_SAMPLES in samples and unconditional else 0


def subset_targets(names: Sequence[str], kinds: Mapping[str, str], given: Sequence[str]) -> list[str]:
    """Image modalities not in an explicit given subset (the targets scored by coherence/given/...)."""
    return [m for m in image_modalities(kinds) if m not in given and m in names]


# --- keys ---------------------------------------------------------------------------------------------
def _per_target(prefix: str, targets: Sequence[str]) -> list[str]:
    return [f"{prefix}/{m}" for m in targets] + ([f"{prefix}/mean"] if targets else [])


def _curve_keys(metric: str, kinds: Mapping[str, str]) -> list[str]:
    names = list(kinds)
    return [f"{metric}/{curve}/k{k}" for curve, k, _, target in curve_queries(names) if kinds[target] == "image"]


def coherence_keys(kinds: Mapping[str, str], settings: Any) -> list[str]:
    names = list(kinds)
    keys = _per_target("coherence/loo", image_modalities(kinds))
    if settings.k_curves:
        keys += _curve_keys("coherence", kinds)
    for given in settings.subsets:
        keys += _per_target(f"coherence/given/{subset_id(given, names)}", subset_targets(names, kinds, given))
    return keys


def unconditional_coherence_keys(kinds: Mapping[str, str], settings: Any) -> list[str]:
    count = len(image_modalities(kinds))
    if count < 2:
        return []
    return [f"coherence/uncond/atleast_{k}" for k in range(2, count + 1)] + ["coherence/uncond/all_agree"]


def fid_keys(kinds: Mapping[str, str], settings: Any) -> list[str]:
    images = image_modalities(kinds)
    keys = _per_target("fid/loo", images)
    if settings.kid:
        keys += _per_target("kid/loo", images)
    if settings.k_curves:
        keys += _curve_keys("fid", kinds)
    return keys + given_one_keys("fid", kinds, images)


def unconditional_fid_keys(kinds: Mapping[str, str], settings: Any) -> list[str]:
    images = image_modalities(kinds)
    keys = _per_target("fid/uncond", images)
    if settings.kid:
        keys += _per_target("kid/uncond", images)
    return keys


COVERAGE_STATS = ("entropy_norm", "kl_uniform", "classes_covered")


def mode_coverage_keys(kinds: Mapping[str, str], settings: Any) -> list[str]:
    images = image_modalities(kinds)
    if not images:
        return []
    return [f"mode_coverage/{m}/{s}" for m in [*images, "mean"] for s in COVERAGE_STATS]


def fgsm_keys(kinds: Mapping[str, str], settings: Any) -> list[str]:
    images, attributes = image_modalities(kinds), attribute_modalities(kinds)
    if not images:  # nothing to attack: the metric is skipped
        return []
    keys = _per_target("fgsm/coherence/clean", images) + _per_target("fgsm/coherence/adv", images)
    keys += ["fgsm/coherence/drop_pct"]
    keys += ["fgsm/substitute_acc/clean", "fgsm/substitute_acc/adv", "fgsm/eval_acc/clean", "fgsm/eval_acc/adv"]
    if attributes:
        keys += _per_target("fgsm/f1/clean", attributes) + _per_target("fgsm/f1/adv", attributes)
        keys += ["fgsm/f1/drop_pct"]
    return keys


def latent_cosine_keys(kinds: Mapping[str, str], settings: Any) -> list[str]:
    return _per_target("latent_cosine", list(kinds))


def given_one_keys(metric: str, kinds: Mapping[str, str], targets: Sequence[str]) -> list[str]:
    """``<metric>/given/<given>/<target>`` of the given-one queries whose target is in ``targets``."""
    return [f"{metric}/given/{g[0]}/{t}" for g, t in given_one_pairs(kinds) if t in targets]


def f1_keys(kinds: Mapping[str, str], settings: Any) -> list[str]:
    attributes = attribute_modalities(kinds)
    return _per_target("f1/loo", attributes) + given_one_keys("f1", kinds, attributes)


# --- registrations ------------------------------------------------------------------------------------
_M = "mmbench.metrics"
register_metric(MetricSpec(
    "coherence", "conditional coherence: leave-one-out per target, k-observed curves, explicit subsets",
    "Shi et al. 2019; Wesego & Rooshenas 2024 Table 5, Figs. 9, 13, 14",
    frozenset({CONDITIONAL}), f"{_M}.coherence:compute_coherence", coherence_keys,
    (("coherence/*", True),), samples=frozenset({CONDITIONAL_SAMPLES}), resources=frozenset({CLASSIFIER}),
))
register_metric(MetricSpec(
    "unconditional_coherence", "share of unconditional samples with at least k agreeing modalities",
    "Shi et al. 2019; Wesego & Rooshenas 2024 Fig. 5",
    frozenset({UNCONDITIONAL}), f"{_M}.coherence:compute_unconditional_coherence", unconditional_coherence_keys,
    (("coherence/uncond/*", True),), samples=frozenset({UNCONDITIONAL_SAMPLES}), resources=frozenset({CLASSIFIER}),
))
register_metric(MetricSpec(
    "fid", "conditional FID (and KID) per target: leave-one-out and k-observed curves",
    "Heusel et al. 2017 (FID), Binkowski et al. 2018 (KID); torch-fidelity 0.4.0",
    frozenset({CONDITIONAL}), f"{_M}.fid:compute_fid", fid_keys,
    (("fid/*", False), ("kid/*", False)), samples=frozenset({CONDITIONAL_SAMPLES}), resources=frozenset({FID_EXTRACTOR}),
))
register_metric(MetricSpec(
    "unconditional_fid", "unconditional FID (and KID) per modality",
    "Heusel et al. 2017 (FID), Binkowski et al. 2018 (KID); torch-fidelity 0.4.0; Wesego & Rooshenas 2024 Fig. 6",
    frozenset({UNCONDITIONAL}), f"{_M}.fid:compute_unconditional_fid", unconditional_fid_keys,
    (("fid/uncond/*", False), ("kid/uncond/*", False)),
    samples=frozenset({UNCONDITIONAL_SAMPLES}), resources=frozenset({FID_EXTRACTOR}),
))
register_metric(MetricSpec(
    "mode_coverage", "classifier label counts of unconditional samples: entropy, KL to uniform, classes covered",
    "Wesego & Rooshenas 2024 A.5, Fig. 20",
    frozenset({UNCONDITIONAL}), f"{_M}.coverage:compute_mode_coverage", mode_coverage_keys,
    (("mode_coverage/*/entropy_norm", True), ("mode_coverage/*/kl_uniform", False),
     ("mode_coverage/*/classes_covered", True)),
    samples=frozenset({UNCONDITIONAL_SAMPLES}), resources=frozenset({CLASSIFIER}),
))
register_metric(MetricSpec(
    "fgsm", "black-box FGSM: leave-one-out generation from adversarial vs clean observed images",
    "Goodfellow et al. 2015 (FGSM); Papernot et al. 2017 (substitute); Wesego & Rooshenas 2024 §4.2.1, Table 3",
    frozenset({CONDITIONAL}), f"{_M}.fgsm:compute_fgsm", fgsm_keys,
    (("fgsm/*/drop_pct", False), ("fgsm/coherence/*", True), ("fgsm/f1/*", True),
     ("fgsm/substitute_acc/*", None), ("fgsm/eval_acc/*", None)),
    samples=frozenset({CONDITIONAL_SAMPLES, TRANSFORMED}), resources=frozenset({CLASSIFIER, SUBSTITUTE}),
))
register_metric(MetricSpec(
    "latent_cosine", "cosine between the latent inferred from the rest and the latent encoded from the truth",
    "Wesego & Rooshenas 2024 A.5.2, Table 7",
    frozenset({CONDITIONAL, ENCODE, LATENT_INFERENCE}), f"{_M}.latent:compute_latent_cosine", latent_cosine_keys,
    (("latent_cosine/*", True),), samples=frozenset({CONDITIONAL_SAMPLES}),
))
register_metric(MetricSpec(
    "f1", "sample-averaged F1 of generated attribute / mask modalities given the rest",
    "Wesego & Rooshenas 2024 Table 1 (sklearn f1_score average='samples')",
    frozenset({CONDITIONAL}), f"{_M}.f1:compute_f1", f1_keys,
    (("f1/*", True),), samples=frozenset({CONDITIONAL_SAMPLES}),
))
