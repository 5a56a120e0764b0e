"""Aggregate: mean ± std over seeds per (row, key), and the best row per column by each key's direction.

Missing values stay missing: a cell without a number carries the reason recorded by the run (a skipped
metric, an unmet capability) or why the row has no finished run (no run yet, failed, unfinished), never a
zero. A value that is degenerate for its metric (``mmbench.report.degenerate``) is never best. The std is
the sample standard deviation (ddof = 1) over seeds; with one seed it is undefined and omitted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from mmbench.report.collect import Collected
from mmbench.report.degenerate import degenerate_reason

NO_VALUE = "no finished run of this row reported this key"


@dataclass(frozen=True)
class Cell:
    mean: float | None
    std: float | None
    n: int
    reason: str | None = None  # why there is no value

    @property
    def present(self) -> bool:
        return self.mean is not None


class Aggregate:
    """Per-(row, key) statistics over seeds, with skip reasons for the missing ones."""

    def __init__(self, collected: Collected) -> None:
        self.collected = collected
        frame = collected.values
        stats = frame.groupby(["variant", "key"])["value"].agg(["mean", "std", "count"]) if len(frame) else None
        self._stats = {} if stats is None else {
            idx: (float(row["mean"]), _finite(row["std"]), int(row["count"])) for idx, row in stats.iterrows()
        }

    @property
    def variants(self) -> list[str]:
        """Rows with at least one finished run."""
        return self.collected.variants

    @property
    def rows(self) -> list[str]:
        """Every row a table lists, those without a finished run included."""
        return self.collected.rows

    def keys(self) -> set[str]:
        return {k for _, k in self._stats}

    def cell(self, variant: str, key: str) -> Cell:
        if (variant, key) in self._stats:
            mean, std, n = self._stats[(variant, key)]
            return Cell(mean, std if n > 1 else None, n)
        absence = self.collected.missing_row(variant)
        if absence is not None:
            return Cell(None, None, 0, f"{absence.status} for this row (see Missing rows)")
        reason = self.collected.skipped.get(variant, {}).get(key, NO_VALUE)
        return Cell(None, None, 0, reason)

    def degenerate(self, variant: str, key: str) -> str | None:
        """Why ``variant``'s value of ``key`` is degenerate for its metric (e.g. collapsed samples), or None."""
        if not self.cell(variant, key).present:
            return None
        return degenerate_reason(key, lambda other: self.cell(variant, other))

    def direction(self, key: str) -> bool | None:
        return self.collected.directions.get(key)

    def best(self, key: str, variants: Sequence[str] | None = None) -> set[str]:
        """Rows with the best mean for ``key`` (ties, up to float rounding, included) among the ranked rows (not
        the suite's ``unranked`` ones) whose value is not degenerate; empty without a direction or with fewer
        than two such rows."""
        direction = self.direction(key)
        rows = variants if variants is not None else self.variants
        unranked = self.collected.suite.unranked
        cells = {v: self.cell(v, key) for v in rows if v not in unranked and self.degenerate(v, key) is None}
        means = {v: c.mean for v, c in cells.items() if c.mean is not None and not math.isnan(c.mean)}
        if direction is None or len(means) < 2:
            return set()
        target = max(means.values()) if direction else min(means.values())
        return {v for v, m in means.items() if math.isclose(m, target, rel_tol=1e-9, abs_tol=1e-12)}


def _finite(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def format_cell(cell: Cell, digits: int) -> str:
    """``0.967 ± 0.012``, ``0.967`` (one seed) or ``—`` (missing)."""
    if cell.mean is None:
        return "—"
    text = f"{cell.mean:.{digits}f}"
    return text + (f" ± {cell.std:.{digits}f}" if cell.std is not None else "")
