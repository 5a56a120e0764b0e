"""The benchmark suites, by name (torch-free: ``mmbench ls suites`` lists them instantly).

Built-in suites live in :mod:`mmbench.suites.polymnist` and :mod:`mmbench.suites.synthetic`;
:func:`register_suite` adds others (a plugin, or a test's deliberately broken suite).
"""

from __future__ import annotations

from mmbench.config import did_you_mean
from mmbench.suites.spec import Budget, DatasetSpec, Suite, Variant, overrides

SUITES: dict[str, Suite] = {}


def register_suite(suite: Suite, replace: bool = False) -> Suite:
    if suite.name in SUITES and not replace and SUITES[suite.name] != suite:
        raise ValueError(f"a different suite named {suite.name!r} is already registered")
    SUITES[suite.name] = suite
    return suite


def unregister_suite(name: str) -> None:
    SUITES.pop(name, None)


def _load_builtin() -> None:
    from mmbench.suites import polymnist, synthetic  # noqa: F401  (they register themselves)


def get_suite(name: str) -> Suite:
    _load_builtin()
    if name not in SUITES:
        raise KeyError(f"unknown suite {name!r}.{did_you_mean(name, SUITES)} Known suites: {', '.join(sorted(SUITES))}.")
    return SUITES[name]


def suite_names() -> list[str]:
    _load_builtin()
    return sorted(SUITES)


__all__ = [
    "SUITES", "Budget", "DatasetSpec", "Suite", "Variant", "get_suite", "overrides", "register_suite",
    "suite_names", "unregister_suite",
]
