"""What a budget shrinks (:class:`Scale`) and how each model's own ``Config`` says where it goes.

A budget names sizes model-independently (channel width, optimiser steps, ...); a model's ``Config``
maps them onto its fields. The default rule needs nothing from the model: a Scale field goes to the
Config field of the same name (``width``, ``steps``, ``batch_size``, ``latent_per_modality``,
``sampler_steps``, ``score_width``). A Config names the Scale fields that do not apply to it in
``unscaled`` (a VAE has no sampler), and a Config whose fields are spelled otherwise (SBM's per-stage
steps) defines ``scaled(scale) -> dict`` itself. A budget that asks to shrink something a model
neither has nor declares unscaled is an error: a model never silently keeps its paper size inside a
small budget. Torch-free: suites and ``mmbench validate`` use it without importing a model's nets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Scale:
    """What a budget shrinks, model-independently; each model's Config maps it onto its fields.

    None keeps the model's paper default.
    """

    width: float | None = None  # channel multiplier of the image encoders/decoders
    steps: int | None = None  # optimiser steps of each training stage
    batch_size: int | None = None
    latent_per_modality: int | None = None
    sampler_steps: int | None = None  # reverse-SDE steps of the score-based samplers
    score_width: int | None = None  # base channels of a latent score network

    def asked(self) -> dict[str, Any]:
        """The fields this scale sets (those not None), in declaration order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    @property
    def empty(self) -> bool:
        return not self.asked()


SCALE_FIELDS = tuple(f.name for f in dataclasses.fields(Scale))


class NoScaler(KeyError):
    """A budget asks to shrink something a model's Config neither maps nor declares unscaled."""


def present(**fields: Any) -> dict[str, Any]:
    """The given config overrides without those that are None (the scale keeps the default there)."""
    return {k: v for k, v in fields.items() if v is not None}


def unscaled(config_cls: type) -> frozenset[str]:
    """The Scale fields a Config declares do not apply to it (its ``unscaled`` class attribute)."""
    names = frozenset(getattr(config_cls, "unscaled", ()))
    unknown = sorted(names - set(SCALE_FIELDS))
    if unknown:
        raise ValueError(f"{config_cls.__name__}.unscaled names {unknown}, which are not Scale fields {SCALE_FIELDS}")
    return names


def by_name(config_cls: type, scale: Scale) -> tuple[dict[str, Any], list[str]]:
    """The default rule: (overrides of the Config fields named like a Scale field, Scale fields left unmapped)."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    skip = unscaled(config_cls)
    asked = {k: v for k, v in scale.asked().items() if k not in skip}
    return {k: v for k, v in asked.items() if k in fields}, [k for k in asked if k not in fields]


def scale_overrides(config_cls: type, scale: Scale, model: str) -> dict[str, Any]:
    """Config overrides of ``model`` (whose Config is ``config_cls``) for ``scale``: empty for an empty scale,
    the Config's own ``scaled(scale)`` when it has one, else the default rule (which must map every field)."""
    if scale.empty:
        return {}
    own = getattr(config_cls, "scaled", None)
    if own is not None:
        return dict(own(scale))
    overrides, unmapped = by_name(config_cls, scale)
    if unmapped:
        raise NoScaler(
            f"no scaler for model {model!r}: the budget's scale sets {', '.join(unmapped)}, which "
            f"{config_cls.__name__} has no field of that name for; name them in its `unscaled` (they do not "
            "apply) or give it a `scaled(scale) -> dict` method (docs/models.md, 'Adding a model')"
        )
    return overrides
