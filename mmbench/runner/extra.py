"""Rows a user adds to a suite: a model of their own scored beside the suite's rows.

``mmbench run --suite S --models mine,mopoe``: ``mopoe`` selects the suite's row, ``mine`` (a model registered
through the ``mmbench.models`` entry point, or ``package.module:Class``) is not a row of the suite, so it
becomes an *extra* row: the registered model with no config changes but the budget's scale (each model's
Config maps it, :mod:`mmbench.scaling`), on every modality of the dataset. Its runs carry the tag
``extra_row=true``; the report rebuilds the extra rows from those runs (:mod:`mmbench.suites.extra_rows`).
Torch-free: only registry entries are looked up here; validation imports the classes.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmbench.config import did_you_mean
from mmbench.suites.extra_rows import add_rows, extra_variant
from mmbench.suites.spec import Suite, Variant


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
