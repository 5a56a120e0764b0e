"""Rows a user adds to a suite: a model of their own scored beside the suite's rows.

``mmbench run --suite S --models mine,mopoe``: ``mopoe`` selects the suite's row, ``mine`` (a model registered
through the ``mmbench.models`` entry point, or ``package.module:Class``) is not a row of the suite, so it
becomes an *extra* row: the registered model with no config changes but the budget's scale (each model's
Config maps it, :mod:`mmbench.scaling`), on every modality of the dataset. Its runs carry the tag
``extra_row=true``; the report rebuilds the extra rows from those runs (:func:`with_rows_of_runs`), after the
suite's own. Torch-free: only registry entries are looked up here; validation imports the classes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from mmbench.config import did_you_mean
from mmbench.records import Tag
from mmbench.suites.spec import Suite, Variant


def row_label(model: str) -> str:
    """The row label of a model: its name, or for ``package.module:Class`` the class name (a label becomes
    run names and file names, so it carries no ':')."""
    return model.rpartition(":")[2].rpartition(".")[2] if ":" in model else model


def extra_variant(model: str, label: str | None = None) -> Variant:
    return Variant(label=label or row_label(model), model=model, extra=True)


def with_extra_rows(suite: Suite, models: Sequence[str] | None) -> Suite:
    """``suite`` plus an extra row for every name of ``models`` that is no row label or model of it but a model
    the registry knows (by name, entry point or import path); a name that is neither raises KeyError."""
    if not models:
        return suite
    from mmbench import registry

    known = {v.label for v in suite.variants} | {v.model for v in suite.variants}
    extra: list[Variant] = []
    for name in models:
        if name in known:
            continue
        try:
            registry.entry(name)
        except KeyError:
            rows = ", ".join(v.label for v in suite.variants)
            raise KeyError(
                f"{name!r} is neither a row of suite {suite.name!r} nor a registered model."
                f"{did_you_mean(name, known | set(registry.names()))} Rows: {rows}. To score a model of your own, "
                "register it under the 'mmbench.models' entry point or name it as 'package.module:Class' "
                "(docs/models.md, 'Scoring your own model')."
            ) from None
        variant = extra_variant(name)
        if variant.label in known:
            raise KeyError(f"model {name!r} would get the row label {variant.label!r}, which suite {suite.name!r} "
                           "already has; register it under another name")
        known |= {variant.label, name}
        extra.append(variant)
    return add_rows(suite, extra)


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
