"""How a budget's :class:`~mmbench.suites.spec.Scale` is spelled in each model's own Config fields.

``mmbench validate`` checks every produced field against the model's Config, and fails for a model that
has no scaler here while a budget asks to shrink it (a model must never silently keep its paper size
inside a small budget).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmbench.suites.spec import Scale

SBM_MODELS = ("sbm-vae", "sbm-rae", "sbm-vae-c", "sbm-rae-c", "sbm-vae-t", "sbm-rae-t")
BASELINES = ("mvae", "mmvae", "mopoe", "mvtcae", "mmvaeplus", "mld")
ALL_MODELS = SBM_MODELS + BASELINES


class NoScaler(KeyError):
    """A budget asks to shrink a model that has no scaler."""


def _pick(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _vae_baseline(s: Scale) -> dict[str, Any]:
    """mvae, mmvae, mopoe, mvtcae: ``baselines.common.VAEConfig`` fields."""
    return _pick(width=s.width, steps=s.steps, batch_size=s.batch_size, latent_per_modality=s.latent_per_modality)


def _mmvaeplus(s: Scale) -> dict[str, Any]:
    """MMVAE+ keeps its own latent sizes (32 shared + 32 private) at every budget."""
    return _pick(width=s.width, steps=s.steps, batch_size=s.batch_size)


def _sbm(s: Scale) -> dict[str, Any]:
    """SBM-VAE/RAE and their -C/-T variants (``sbm.model.SBMConfig``): every stage shrinks together.

    The energy (-C) and contrastive-encoder (-T) stages keep the defaults' ratio to the main stages
    (50 vs 200 epochs), so they get a quarter of ``steps``.
    """
    side = None if s.steps is None else max(1, s.steps // 4)
    batch = s.batch_size
    return _pick(
        width=s.width, aux_width=s.width, ae_steps=s.steps, score_steps=s.steps, energy_steps=side, aux_steps=side,
        ae_batch_size=batch, score_batch_size=batch, energy_batch_size=batch, aux_batch_size=batch,
        sampler_steps=s.sampler_steps, dim=s.score_width, latent_dim=s.latent_per_modality,
    )


MLD_DIM_PER_SCORE_WIDTH = 12  # the defaults' ratio: MLD's score net 1536 channels vs SBM's UNet 128


def _mld(s: Scale) -> dict[str, Any]:
    """MLD (``baselines.mld.model``): the shared autoencoders and its score net; the net keeps its ratio
    to SBM's (1536 vs 128 channels), which is also a multiple of its 32 norm groups."""
    return _pick(
        width=s.width, ae_steps=s.steps, score_steps=s.steps, ae_batch_size=s.batch_size,
        score_batch_size=s.batch_size, sampler_steps=s.sampler_steps, latent_dim=s.latent_per_modality,
        dim=None if s.score_width is None else MLD_DIM_PER_SCORE_WIDTH * s.score_width,
    )


def _nothing(s: Scale) -> dict[str, Any]:
    """The dummy model has nothing to shrink."""
    return {}


SCALERS: dict[str, Callable[[Scale], dict[str, Any]]] = {
    "mvae": _vae_baseline,
    "mmvae": _vae_baseline,
    "mopoe": _vae_baseline,
    "mvtcae": _vae_baseline,
    "mmvaeplus": _mmvaeplus,
    **{name: _sbm for name in SBM_MODELS},
    "mld": _mld,
    "dummy": _nothing,
}


def has_scaler(model: str) -> bool:
    return model in SCALERS


def scaled(scale: Scale, model: str) -> dict[str, Any]:
    """Config overrides of ``model`` for ``scale`` (empty for an empty scale)."""
    if scale.empty:
        return {}
    if model not in SCALERS:
        raise NoScaler(f"no scaler for model {model!r}: add one to mmbench/suites/scales.py (its Config fields)")
    return SCALERS[model](scale)
