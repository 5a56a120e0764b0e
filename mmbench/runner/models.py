"""A registered model's class, looked up once per name, and what a budget's scale makes of its config.

Planning a suite such as polymnist10-scaling asks for a model's ``Config`` hundreds of times; the class
of a name is resolved once here (:func:`clear` forgets it after registering or replacing a model in this
process). Config resolution itself is the registry's alone (:func:`mmbench.registry.model_config`).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from mmbench.scaling import Scale, scale_overrides


@cache
def model_class(name: str) -> type:
    from mmbench import registry

    return registry.resolve_class(name)


def scaled(model: str, scale: Scale) -> dict[str, Any]:
    """The config overrides ``scale`` makes for the registered ``model`` (its Config says how)."""
    return scale_overrides(model_class(model).Config, scale, model)


def clear() -> None:
    """Forget the cached look-ups (after registering or replacing a model in this process)."""
    model_class.cache_clear()
