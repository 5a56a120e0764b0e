"""The findings check: each qualitative claim of a paper, computed from the store at the report's budget.

Wesego & Rooshenas 2024 (TMLR) §4.1 make five claims about Extended PolyMNIST that a table alone does not
check (``../shared/PROTOCOL.md`` §4), and Table 1 one about CelebAMask-HQ (the contrastive rows' attribute
F1). Each is a :class:`Finding`: the claim, where the paper makes it, the metric keys it reads, the rule
that decides it in words, and a check that returns a :class:`Verdict` — ``holds``, ``does not hold`` or
``cannot be checked`` — with the numbers behind it and the (row, key) values it lacked. Rules (all on means
over seeds; no significance test: the evidence shows the gaps):

- a comparison between groups of rows uses the rows that have the values and lists the others; it cannot
  be checked while a group has no such row;
- values degenerate for their metric (``mmbench.report.degenerate``) are left out of comparisons, as they
  are never marked best;
- a k-curve (``<metric>/last_given/k{k}``, k = 1..M−1: the last modality given the first k, Figs. 8, 9)
  counts only when every k has a value.

A suite lists its findings by name (``Suite.findings``); :data:`FINDINGS` holds them. Claims are about the
ranked rows: a suite's ``unranked`` reference rows (the F1 floors) never enter a comparison.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mmbench.report.aggregate import Aggregate
from mmbench.suites.protocol import SBM_MODELS

HOLDS, FAILS, UNCHECKED = "holds", "does not hold", "cannot be checked"
FLAT_RELATIVE_RANGE = 0.15  # "flat": (max − min) / min of a row's FID over k = 1..M−1 at most this
FEW_OBSERVED = 3  # "few observed modalities": k = 1..3
GUIDED_SUFFIX = "-c"  # sbm-vae-c is sbm-vae with coherence guidance

CONTRASTIVE_SUFFIX = "-t"  # sbm-vae-t: SBM-VAE conditioned on the contrastive embedding
REFERENCE_MODELS = ("supervised",)  # Table 1's reference row: a classifier, not a generative model
ATTRIBUTES_GIVEN_IMAGE = "f1/given/image/attributes"
UNCOND_ALL_AGREE = "coherence/uncond/all_agree"
LOO_COHERENCE = "coherence/loo/mean"
FID_CURVE = "fid/last_given/k{k}"
COHERENCE_CURVE = "coherence/last_given/k{k}"


@dataclass(frozen=True)
class Verdict:
    status: str  # HOLDS | FAILS | UNCHECKED
    evidence: str  # the numbers behind the verdict
    missing: tuple[str, ...] = ()  # "row key: why" for every value the check looked for and lacked
    absent_rows: tuple[str, ...] = ()  # rows it looked at that have no finished run (see Missing rows)


@dataclass(frozen=True)
class Finding:
    name: str
    claim: str
    reference: str
    keys: tuple[str, ...]  # the metric keys read ({k}: the number of observed modalities)
    rule: str  # how the verdict is decided, in words
    check: Callable[[Aggregate], Verdict]


@dataclass
class _Reader:
    """Reads means from the aggregate and remembers which values were missing, and why."""

    agg: Aggregate
    missing: list[str] = field(default_factory=list)
    absent_rows: dict[str, None] = field(default_factory=dict)  # ordered set

    def value(self, row: str, key: str) -> float | None:
        cell = self.agg.cell(row, key)
        if not cell.present:
            self.missing.append(f"{row} {key}: {cell.reason}")
            if self.agg.collected.missing_row(row) is not None:
                self.absent_rows[row] = None
            return None
        return cell.mean

    def values(self, rows: Sequence[str], key: str, comparable: bool = True) -> dict[str, float]:
        """``row -> mean`` of the rows that have ``key`` (without degenerate values when ``comparable``)."""
        out = {}
        for row in rows:
            value = self.value(row, key)
            if value is not None and not (comparable and self.agg.degenerate(row, key)):
                out[row] = value
        return out

    def curve(self, row: str, pattern: str, ks: Sequence[int]) -> list[float] | None:
        """The row's values at every k, or None (recording what lacked) when any is missing."""
        points = [self.value(row, pattern.format(k=k)) for k in ks]
        return None if any(p is None for p in points) else points  # type: ignore[misc]

    def verdict(self, status: str, evidence: str) -> Verdict:
        return Verdict(status, evidence, tuple(self.missing), tuple(self.absent_rows))


# --- row groups -------------------------------------------------------------------------------------------
def _model(agg: Aggregate, row: str) -> str:
    return agg.collected.model_of(row)


def ranked_rows(agg: Aggregate) -> list[str]:
    """The rows claims are about: every row but the suite's unranked reference rows (the F1 floors)."""
    return [r for r in agg.rows if r not in agg.collected.suite.unranked]


def sbm_rows(agg: Aggregate) -> list[str]:
    return [r for r in ranked_rows(agg) if _model(agg, r) in SBM_MODELS]


def baseline_rows(agg: Aggregate) -> list[str]:
    return [r for r in ranked_rows(agg) if _model(agg, r) not in SBM_MODELS]


def _ks(agg: Aggregate, row: str) -> list[int]:
    return list(range(1, agg.collected.num_modalities(row)))


def _degenerate_note(agg: Aggregate, rows: Sequence[str], key: str) -> str:
    flagged = [r for r in rows if agg.degenerate(r, key)]
    return f"; left out as degenerate (collapsed samples): {', '.join(flagged)}" if flagged else ""


def _listing(values: dict[str, float], digits: int = 3) -> str:
    return ", ".join(f"{row} {value:.{digits}f}" for row, value in values.items())


# --- the checks -----------------------------------------------------------------------------------------
def check_sbm_best_unconditional(agg: Aggregate) -> Verdict:
    reader = _Reader(agg)
    sbm, base = reader.values(sbm_rows(agg), UNCOND_ALL_AGREE), reader.values(baseline_rows(agg), UNCOND_ALL_AGREE)
    note = _degenerate_note(agg, agg.rows, UNCOND_ALL_AGREE)
    if not sbm or not base:
        lacking = "SBM" if not sbm else "baseline"
        return reader.verdict(UNCHECKED, f"no {lacking} row has a comparable {UNCOND_ALL_AGREE}{note}")
    best_sbm, best_base = max(sbm, key=sbm.__getitem__), max(base, key=base.__getitem__)
    status = HOLDS if sbm[best_sbm] > base[best_base] else FAILS
    return reader.verdict(status, f"best SBM {best_sbm} {sbm[best_sbm]:.3f} vs best baseline {best_base} "
                                  f"{base[best_base]:.3f} (SBM: {_listing(sbm)}; baselines: {_listing(base)}){note}")


def _relative_range(points: Sequence[float]) -> float:
    """(max − min) / min; infinite when the minimum is not positive (no FID is 0 in practice)."""
    low = min(points)
    return (max(points) - low) / low if low > 0 else float("inf")


def check_sbm_fid_flat(agg: Aggregate) -> Verdict:
    reader = _Reader(agg)
    ranges = {}
    for row in sbm_rows(agg):
        points = reader.curve(row, FID_CURVE, _ks(agg, row))
        if points is not None:
            ranges[row] = (_relative_range(points), min(points), max(points))
    if not ranges:
        return reader.verdict(UNCHECKED, f"no SBM row has every point of {FID_CURVE}")
    status = HOLDS if all(r <= FLAT_RELATIVE_RANGE for r, _, _ in ranges.values()) else FAILS
    context = _Reader(agg)  # baselines' curves: context only, their absence does not block the verdict
    base = {row: _relative_range(p) for row in baseline_rows(agg)
            if (p := context.curve(row, FID_CURVE, _ks(agg, row))) is not None}
    evidence = "relative range (max − min) / min over k: " + ", ".join(
        f"{row} {r:.1%} ({lo:.2f}–{hi:.2f})" for row, (r, lo, hi) in ranges.items())
    evidence += f"; threshold {FLAT_RELATIVE_RANGE:.0%}"
    if base:
        evidence += "; baselines: " + ", ".join(f"{row} {r:.1%}" for row, r in base.items())
    return reader.verdict(status, evidence)


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` against ``xs``."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def check_sbm_coherence_rises(agg: Aggregate) -> Verdict:
    reader = _Reader(agg)
    slopes = {}
    for row in sbm_rows(agg):
        ks = _ks(agg, row)
        points = reader.curve(row, COHERENCE_CURVE, ks)
        if points is not None and len(ks) >= 2:
            slopes[row] = (_slope(ks, points), points[0], points[-1], ks[-1])
    if not slopes:
        return reader.verdict(UNCHECKED, f"no SBM row has every point of {COHERENCE_CURVE} (k = 1..M−1, M ≥ 3)")
    status = HOLDS if all(s > 0 for s, *_ in slopes.values()) else FAILS
    return reader.verdict(status, "least-squares slope per observed modality: " + ", ".join(
        f"{row} {s:+.4f} ({first:.3f} at k=1 → {last:.3f} at k={k})" for row, (s, first, last, k) in slopes.items()))


def guided_pairs(agg: Aggregate) -> list[tuple[str, str]]:
    """(guided row, its unguided row): an SBM row whose model ends in ``-c`` and the row of the model without."""
    by_model = {_model(agg, r): r for r in agg.rows}
    return [(by_model[m], by_model[m[: -len(GUIDED_SUFFIX)]]) for m in by_model
            if m in SBM_MODELS and m.endswith(GUIDED_SUFFIX) and m[: -len(GUIDED_SUFFIX)] in by_model]


def check_guidance_lifts_few_observed(agg: Aggregate) -> Verdict:
    reader = _Reader(agg)
    lifts: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
    pairs = guided_pairs(agg)
    for guided, plain in pairs:
        ks = _ks(agg, guided)[:FEW_OBSERVED]
        with_c, without = reader.curve(guided, COHERENCE_CURVE, ks), reader.curve(plain, COHERENCE_CURVE, ks)
        if with_c is not None and without is not None and ks:
            lifts[(guided, plain)] = (ks, [a - b for a, b in zip(with_c, without, strict=True)])
    if not lifts:
        what = "no guided/unguided pair of SBM rows in the suite" if not pairs else "no pair has both curves"
        return reader.verdict(UNCHECKED, f"{what} at k = 1..{FEW_OBSERVED} ({COHERENCE_CURVE})")
    means = {pair: sum(d) / len(d) for pair, (_, d) in lifts.items()}
    status = HOLDS if all(m > 0 for m in means.values()) else FAILS
    return reader.verdict(status, "guided − unguided coherence of the last modality given the first k: " + "; ".join(
        f"{g} − {p} at k = {', '.join(map(str, ks))}: {', '.join(f'{d:+.3f}' for d in diffs)} "
        f"(mean {means[(g, p)]:+.3f})" for (g, p), (ks, diffs) in lifts.items()) + _budget_notes(agg, [g for g, _ in lifts]))


def _budget_notes(agg: Aggregate, rows: Sequence[str]) -> str:
    """The budget's remarks on the models of ``rows`` (e.g. that a guided row's energy learnt nothing at this
    budget), appended to a verdict's evidence so that it is never read without them."""
    notes = agg.collected.budget.notes_for(_model(agg, r) for r in rows)
    return "".join(f"; the budget's note on {model}: {note}" for model, note in notes.items())


def check_mvae_lowest(agg: Aggregate) -> Verdict:
    reader = _Reader(agg)
    mvae = [r for r in agg.rows if _model(agg, r) == "mvae"]
    if not mvae:
        return reader.verdict(UNCHECKED, "the suite has no MVAE row")
    ours = reader.values(mvae, LOO_COHERENCE, comparable=False)
    others = reader.values([r for r in agg.rows if r not in mvae], LOO_COHERENCE, comparable=False)
    if not ours or not others:
        lacking = "the MVAE row" if not ours else "every other row"
        return reader.verdict(UNCHECKED, f"{LOO_COHERENCE} is missing for {lacking}")
    worst_mvae = max(ours.values())  # every MVAE row must be below every other row
    short = {r: v for r, v in others.items() if _model(agg, r) in agg.collected.budget.capped and v <= worst_mvae}
    note = (f"; left out, trained to the budget's step cap (a shortfall there is no evidence against the claim): "
            f"{_listing(short)}") if short else ""
    others = {r: v for r, v in others.items() if r not in short}
    if not others:
        return reader.verdict(UNCHECKED, f"every other row with {LOO_COHERENCE} is capped below MVAE{note}")
    next_row = min(others, key=others.__getitem__)
    status = HOLDS if worst_mvae < others[next_row] else FAILS
    return reader.verdict(status, f"MVAE: {_listing(ours)} vs lowest other row {next_row} {others[next_row]:.3f} "
                                  f"(others: {_listing(others)}){note}")


def check_contrastive_best_attribute_f1(agg: Aggregate) -> Verdict:
    reader = _Reader(agg)
    rows = [r for r in ranked_rows(agg) if _model(agg, r) not in REFERENCE_MODELS]
    contrastive = [r for r in rows if _model(agg, r) in SBM_MODELS and _model(agg, r).endswith(CONTRASTIVE_SUFFIX)]
    ours = reader.values(contrastive, ATTRIBUTES_GIVEN_IMAGE)
    others = reader.values([r for r in rows if r not in contrastive], ATTRIBUTES_GIVEN_IMAGE)
    if not ours or not others:
        lacking = "contrastive (-T)" if not ours else "other generative"
        return reader.verdict(UNCHECKED, f"no {lacking} row has {ATTRIBUTES_GIVEN_IMAGE}")
    worst, best_other = min(ours, key=ours.__getitem__), max(others, key=others.__getitem__)
    status = HOLDS if ours[worst] > others[best_other] else FAILS
    return reader.verdict(status, f"lowest -T row {worst} {ours[worst]:.3f} vs best other generative row "
                                  f"{best_other} {others[best_other]:.3f} (-T: {_listing(ours)}; others: "
                                  f"{_listing(others)})")


FINDINGS: dict[str, Finding] = {f.name: f for f in (
    Finding(
        "sbm_best_unconditional_coherence",
        "SBM models have the best unconditional coherence",
        "Wesego & Rooshenas 2024 §4.1, Fig. 5 (about 71 % of SBM samples fully coherent)",
        (UNCOND_ALL_AGREE,),
        "holds when the highest all-agree share among SBM rows exceeds the highest among the other rows "
        "(degenerate values left out)",
        check_sbm_best_unconditional,
    ),
    Finding(
        "sbm_fid_flat_in_observed",
        "SBM conditional FID stays flat as the number of observed modalities grows",
        "Wesego & Rooshenas 2024 §4.1, Fig. 8",
        (FID_CURVE,),
        f"holds when every SBM row's FID of the last modality given the first k, k = 1..M−1, has a relative "
        f"range (max − min) / min of at most {FLAT_RELATIVE_RANGE:.0%}",
        check_sbm_fid_flat,
    ),
    Finding(
        "sbm_coherence_rises_with_observed",
        "SBM coherence rises with the number of observed modalities",
        "Wesego & Rooshenas 2024 §4.1, Fig. 9",
        (COHERENCE_CURVE,),
        "holds when every SBM row's coherence of the last modality given the first k, k = 1..M−1, has a "
        "positive least-squares slope in k",
        check_sbm_coherence_rises,
    ),
    Finding(
        "guidance_lifts_few_observed",
        "coherence guidance (-C) lifts coherence when few modalities are observed",
        "Wesego & Rooshenas 2024 §4.1, Figs. 9, 11",
        (COHERENCE_CURVE,),
        f"holds when, for every SBM-X-C / SBM-X pair, the mean over k = 1..{FEW_OBSERVED} of the coherence "
        "difference (guided − unguided) of the last modality given the first k is positive; the budget's notes "
        "on the guided models follow the numbers",
        check_guidance_lifts_few_observed,
    ),
    Finding(
        "mvae_lowest_coherence",
        "MVAE has the lowest conditional coherence",
        "Wesego & Rooshenas 2024 Table 5 (MVAE 0.751; every other model ≥ 0.894)",
        (LOO_COHERENCE,),
        "holds when MVAE's leave-one-out coherence is below every other row's; a row the budget trains to a "
        "step cap (Budget.capped) that stays at or below MVAE is left out and named",
        check_mvae_lowest,
    ),
    Finding(
        "contrastive_best_attribute_f1",
        "the contrastive rows (-T) generate the attributes most faithfully from the image among the generative models",
        "Wesego & Rooshenas 2024 Table 1 (attribute F1 given the image: SBM-RAE-T 0.77, SBM-VAE-T 0.74; the best "
        "other generative row MoPoE 0.71; the supervised reference 0.79)",
        (ATTRIBUTES_GIVEN_IMAGE,),
        "holds when every -T row's attribute F1 given the image exceeds every other generative row's (the "
        "supervised reference row and the suite's unranked F1 floors left out)",
        check_contrastive_best_attribute_f1,
    ),
)}


def get_finding(name: str) -> Finding:
    from mmbench.config import did_you_mean

    if name not in FINDINGS:
        raise KeyError(f"no finding {name!r}.{did_you_mean(name, list(FINDINGS))} Findings: {', '.join(FINDINGS)}.")
    return FINDINGS[name]


def check_all(names: Sequence[str], agg: Aggregate) -> list[tuple[Finding, Verdict]]:
    return [(finding, finding.check(agg)) for finding in map(get_finding, names)]


# --- rendering ------------------------------------------------------------------------------------------
def to_markdown(results: Sequence[tuple[Finding, Verdict]], budget: str, ranks: bool = True) -> str:
    lines = [f"**The paper's claims at budget {budget}** (computed from the store; rules in docs/harness.md)", ""]
    if not ranks:
        lines += [f"Budget {budget} checks the pipeline only: these verdicts say nothing about the models.", ""]
    lines += ["| Claim | Paper | Verdict | Evidence |", "|---|---|---|---|"]
    for finding, verdict in results:
        lines.append(f"| {finding.claim} | {finding.reference} | **{verdict.status}** | {_cell(verdict.evidence)} |")
    lines.append("")
    for finding, verdict in results:
        what = lacking(verdict)
        if what:
            lines.append(f"- {finding.claim}: {what}")
    lines += ["", "Rules: " + " ".join(f"({i}) {f.rule}." for i, (f, _) in enumerate(results, 1))]
    return "\n".join(lines).rstrip() + "\n"


def lacking(verdict: Verdict, shown: int = 8) -> str:
    """What a verdict lacked, short: the rows without a run by name, then the other missing values."""
    parts = []
    if verdict.absent_rows:
        parts.append(f"rows without a finished run: {', '.join(verdict.absent_rows)} (see Missing rows)")
    values = [m for m in verdict.missing if m.split(" ", 1)[0] not in verdict.absent_rows]
    if values:
        parts.append(f"{len(values)} missing value(s): " + "; ".join(values[:shown]) + (" …" if len(values) > shown else ""))
    return "; ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def to_csv(results: Sequence[tuple[Finding, Verdict]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["finding", "claim", "reference", "keys", "rule", "verdict", "evidence", "absent_rows",
                     "missing"])
    for finding, verdict in results:
        writer.writerow([finding.name, finding.claim, finding.reference, " ".join(finding.keys), finding.rule,
                         verdict.status, verdict.evidence, " ".join(verdict.absent_rows), " | ".join(verdict.missing)])
    return buffer.getvalue()
