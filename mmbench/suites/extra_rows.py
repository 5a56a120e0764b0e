"""Rows a user adds to a suite (a model of their own scored beside the suite's rows), as suite variants.

``mmbench run --suite S --models mine`` adds ``mine`` as an *extra* row (:mod:`mmbench.runner.extra` checks the
name against the registry); its runs carry the tag ``extra_row=true``, and the report rebuilds those rows from
the runs (:func:`with_rows_of_runs`), after the suite's own. Torch-free and registry-free.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from mmbench.records import Tag
from mmbench.suites.spec import Suite, Variant


def row_label(model: str) -> str:
    """The row label of a model: its name, or for ``package.module:Class`` the class name (a label becomes
    run names and file names, so it carries no ':')."""
    return model.rpartition(":")[2].rpartition(".")[2] if ":" in model else model


def extra_variant(model: str, label: str | None = None) -> Variant:
    return Variant(label=label or row_label(model), model=model, extra=True)


def add_rows(suite: Suite, rows: Iterable[Variant]) -> Suite:
    """``suite`` with ``rows`` appended after its own (same name and version: its runs stay comparable)."""
    rows = tuple(rows)
    return dataclasses.replace(suite, variants=suite.variants + rows) if rows else suite


def with_rows_of_runs(suite: Suite, runs: Iterable[object]) -> Suite:
    """``suite`` plus the extra rows its store's runs were made with (tag ``extra_row``), in first-run order."""
    labels = {v.label for v in suite.variants}
    rows: dict[str, Variant] = {}
    for run in sorted(runs, key=lambda r: r.start_time):  # type: ignore[attr-defined]
        tags = run.tags  # type: ignore[attr-defined]
        label = tags.get(Tag.VARIANT, "")
        if tags.get(Tag.EXTRA_ROW) != "true" or tags.get(Tag.SUITE_VERSION) != suite.version or label in labels:
            continue
        m = int(tags.get(Tag.NUM_MODALITIES, suite.dataset.num_modalities))
        rows.setdefault(label, Variant(label, tags.get(Tag.MODEL, label), extra=True,
                                       num_modalities=None if m == suite.dataset.num_modalities else m))
    return add_rows(suite, rows.values())
