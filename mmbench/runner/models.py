"""Cached look-ups of registered models for planning and validation.

``mmbench.registry.entry`` rescans the installed packages' entry points on every call (~0.1 s), and a
suite such as polymnist10-scaling asks for hundreds of configs; the class and the per-name defaults of
a model name are looked up once here. Resolution is the registry's: class defaults, then the name's
defaults, then the overrides (see :func:`mmbench.registry.model_config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any


@cache
def model_class(name: str) -> type:
    from mmbench import registry

    return registry.resolve_class(name)


@cache
def _name_defaults(name: str) -> tuple[tuple[str, Any], ...]:
    from mmbench import registry

    return registry.entry(name).defaults


def model_config(name: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """The resolved config of a registered model (as ``registry.model_config``, with cached look-ups)."""
    from mmbench.config import apply_overrides

    config = apply_overrides(model_class(name).Config(), dict(_name_defaults(name)))
    return apply_overrides(config, dict(overrides or {}))


def clear() -> None:
    """Forget the cached look-ups (after registering or replacing a model in this process)."""
    model_class.cache_clear()
    _name_defaults.cache_clear()
