"""Denoising score matching in continuous time, for any SDE with a Gaussian perturbation kernel.

Source: Vincent 2011; Song et al. 2021, Eq. 7 (``yang-song/score_sde_pytorch`` ``losses.py``:
``get_sde_loss_fn``). The loss knows nothing of modalities: a caller masks entries out with
``loss_mask`` (e.g. missing modalities, Wesego & Rooshenas 2024, A.10.1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from latentdiff.sde import VPSDE

WEIGHTINGS = ("sigma2", "unit")


def sample_times(n: int, eps: float, T: float, device: torch.device | str) -> Tensor:
    """t ~ U(eps, T), one per sample."""
    return torch.rand(n, device=device) * (T - eps) + eps


def dsm_loss(
    score_fn: Callable[..., Tensor],
    sde: VPSDE,
    x0: Tensor,
    *,
    eps: float = 1e-5,
    weighting: str = "sigma2",
    loss_mask: Tensor | None = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    **score_kwargs: Any,
) -> Tensor:
    """Per-sample denoising score matching loss ``(B,)``, summed over entries.

    ``λ(t) ‖s_θ(x_t, t) − ∇ log p_0t(x_t | x_0)‖²`` with ``∇ log p_0t = −ε / σ_t``:
    ``weighting="sigma2"``: λ(t) = σ_t², i.e. ``‖σ_t s_θ + ε‖²`` (score_sde with
    ``likelihood_weighting=False``, the usual "unweighted" ε-loss); ``weighting="unit"``: λ(t) = 1,
    i.e. ``‖s_θ + ε/σ_t‖²`` (the literal reading of the paper's Eq. 4 with λ = 1).
    ``loss_mask`` (broadcastable to ``x0``, 1 = counted) drops entries from the sum.
    Extra keyword arguments are passed to ``score_fn(x_t, t, **score_kwargs)``.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; use one of {WEIGHTINGS}")
    if t is None:
        t = sample_times(x0.shape[0], eps, sde.T, x0.device)
    z = torch.randn_like(x0) if noise is None else noise
    mean, std = sde.marginal(x0, t)
    score = score_fn(mean + std * z, t, **score_kwargs)
    residual = score * std + z if weighting == "sigma2" else score + z / std
    squared = residual.square()
    if loss_mask is not None:
        squared = squared * loss_mask.to(squared.dtype)
    return squared.flatten(1).sum(1)
