"""The metric declarations the harness needs (names, needs, keys, direction), torch-free.

A thin adapter over :mod:`mmbench.metrics.base` / :mod:`mmbench.metrics.catalog`, so planning,
validation and the report list metrics and keys without importing the metric code itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _base() -> Any:
    import mmbench.metrics.catalog  # noqa: F401  (registers the built-in metrics)
    from mmbench.metrics import base

    return base


def metric_spec(name: str) -> Any:
    """The declaration of a metric; unknown names raise ``KeyError`` with a did-you-mean hint."""
    return _base().get_metric(name)


def metric_names() -> list[str]:
    return list(_base().METRICS)


def expected_keys(name: str, modalities: Sequence[str] | Mapping[str, str], settings: Any) -> list[str]:
    """The keys metric ``name`` produces under ``settings`` for ``modalities``: names (all images) or
    ``{name: kind}``."""
    kinds = dict(modalities) if isinstance(modalities, Mapping) else list(modalities)
    return _base().expected_keys(name, kinds, settings)


def higher_is_better(key: str) -> bool | None:
    return _base().higher_is_better(key)
