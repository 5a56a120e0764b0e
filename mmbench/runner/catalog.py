"""The metric declarations the harness needs (names, needs, keys, direction), torch-free.

A thin adapter over :mod:`mmbench.metrics.base` / :mod:`mmbench.metrics.catalog`, so planning,
validation and the report list metrics and keys without importing the metric code itself.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def expected_keys(name: str, modalities: Sequence[str], settings: Any) -> list[str]:
    """The keys metric ``name`` produces for image modalities ``modalities`` under ``settings``."""
    return _base().expected_keys(name, list(modalities), settings)


def higher_is_better(key: str) -> bool | None:
    return _base().higher_is_better(key)
