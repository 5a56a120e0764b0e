"""Closed-form pieces shared by the multimodal VAEs: Gaussian KL, product of Gaussian experts,
reparameterised sampling and image likelihoods."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
    """z = mu + sigma * eps (Kingma & Welling 2014)."""
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


def kl_normal_standard(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) summed over the last dim, per sample."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def kl_normal_normal(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """KL(q || p) between diagonal Gaussians, summed over the last dim, per sample."""
    var_ratio = (logvar_q - logvar_p).exp()
    diff = (mu_q - mu_p).pow(2) / logvar_p.exp()
    return 0.5 * (var_ratio + diff - 1.0 - (logvar_q - logvar_p)).sum(-1)


def product_of_experts(mus: Tensor, logvars: Tensor, mask: Tensor | None = None, eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """Product of diagonal Gaussian experts (Wu & Goodman 2018, Eq. 3).

    ``mus``/``logvars``: ``(E, B, D)`` for E experts; ``mask``: ``(E, B)`` bool/float, 1 = expert present
    (per sample). Precision = Σ present precisions; mean = precision-weighted mean. Returns (mu, logvar).
    """
    precision = torch.exp(-logvars)
    if mask is not None:
        precision = precision * mask.to(precision.dtype).unsqueeze(-1)
    total = precision.sum(0) + eps
    mu = (mus * precision).sum(0) / total
    return mu, -torch.log(total)


def gaussian_nll_sum(x: Tensor, mean: Tensor, scale: float = 1.0) -> Tensor:
    """-log N(x; mean, scale²) summed over all but the batch dim, per sample."""
    var = scale**2
    return (0.5 * (x - mean).pow(2) / var + 0.5 * math.log(2 * math.pi * var)).flatten(1).sum(-1)
