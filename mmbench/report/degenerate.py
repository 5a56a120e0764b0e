"""Degenerate values: a number a model earned by collapsing is flagged in the report and never marked best.

A rule names the keys it judges and, from the same row's other values, says why the row's value of such a
key is degenerate (or None). Today's rule: unconditional coherence (``coherence/uncond/*``: the share of
unconditional samples whose modalities agree) is cheap for a model whose unconditional samples collapse
onto few classes — one that draws a single digit agrees with itself every time. Collapse is read from
mode coverage (Wesego & Rooshenas 2024 A.5): the evaluation classifier's label distribution p of the
unconditional samples, through ``mode_coverage/mean/kl_uniform`` = log K − H(p) (nats, mean over image
modalities). The threshold is log 2: KL(p‖uniform) > log 2 means exp H(p) < K/2, fewer than half the
classes in the effective-number sense. It also catches every model that shows fewer than half the classes
at all (``classes_covered`` < K/2 gives H(p) ≤ log classes_covered < log(K/2)), so no class count is needed.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

COLLAPSE_KL_NATS = math.log(2)  # KL(p ‖ uniform) above this: fewer than half the classes (effective number)
COLLAPSE_KEY = "mode_coverage/mean/kl_uniform"
COVERED_KEY = "mode_coverage/mean/classes_covered"


class _Cell(Protocol):
    mean: float | None


CellOf = Callable[[str], _Cell]  # key -> the row's cell


@dataclass(frozen=True)
class DegeneracyRule:
    name: str
    keys: tuple[str, ...]  # fnmatch patterns of the keys the rule judges
    reads: tuple[str, ...]  # the keys it reads from the same row
    explain: Callable[[CellOf], str | None]  # why the row is degenerate for those keys, or None

    def judges(self, key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, pattern) for pattern in self.keys)


def _collapsed(cell_of: CellOf) -> str | None:
    kl = cell_of(COLLAPSE_KEY).mean
    if kl is None or math.isnan(kl) or kl <= COLLAPSE_KL_NATS:
        return None
    covered = cell_of(COVERED_KEY).mean
    seen = f", {covered:.1f} classes seen per modality" if covered is not None else ""
    return (f"unconditional samples collapse onto few classes ({COLLAPSE_KEY} = {kl:.2f} nats > log 2 = "
            f"{COLLAPSE_KL_NATS:.2f}{seen}): agreement among them is cheap")


RULES: tuple[DegeneracyRule, ...] = (
    DegeneracyRule("collapsed unconditional samples", ("coherence/uncond/*",), (COLLAPSE_KEY, COVERED_KEY),
                   _collapsed),
)


def degenerate_reason(key: str, cell_of: CellOf, rules: tuple[DegeneracyRule, ...] = RULES) -> str | None:
    """Why a row's value of ``key`` is degenerate by the first rule that judges ``key`` and fires, or None."""
    for rule in rules:
        if rule.judges(key):
            reason = rule.explain(cell_of)
            if reason is not None:
                return reason
    return None
