"""The benchmark suites, by name (torch-free: ``mmbench ls suites`` lists them instantly).

Built-in suites live in :mod:`mmbench.suites.polymnist`, :mod:`mmbench.suites.synthetic` and
:mod:`mmbench.suites.celeba`;
:func:`register_suite` adds others (a test's deliberately broken suite); an installed package adds its own
through the ``mmbench.suites`` entry-point group.
"""

from __future__ import annotations

from mmbench.plugins import Registry
from mmbench.suites.spec import Budget, DatasetSpec, Suite, Variant, overrides

# name -> Suite; plugins add theirs through the ``mmbench.suites`` entry-point group (a ``"module:SUITE"``).
SUITES: Registry[Suite] = Registry("suite", group="mmbench.suites", expects=Suite,
                                   builtins=("mmbench.suites.polymnist", "mmbench.suites.synthetic",
                                             "mmbench.suites.celeba"))


def register_suite(suite: Suite, replace: bool = False) -> Suite:
    """Add a suite (again only the same one, unless ``replace``)."""
    SUITES.register(suite.name, suite, suite.description, replace=replace)
    return suite


def unregister_suite(name: str) -> None:
    SUITES.unregister(name)


def get_suite(name: str) -> Suite:
    return SUITES.resolve(name)


def suite_names() -> list[str]:
    return sorted(SUITES.names())


__all__ = [
    "SUITES", "Budget", "DatasetSpec", "Suite", "Variant", "get_suite", "overrides", "register_suite",
    "suite_names", "unregister_suite",
]
