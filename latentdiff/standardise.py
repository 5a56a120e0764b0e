"""Standardising the latents a score model trains on and samples in.

Source: Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models" (§4.3.2 and
App. G: the first-stage latents are rescaled to unit standard deviation before the diffusion model, the
scale estimated once from the training latents), and Bounoua et al. 2024's MLD (per-dimension mean and
standard deviation of the concatenated codes). The VP-SDE's prior is N(0, I): latents far from zero mean
and unit variance start every reverse pass far from where the forward process ends.

The statistics are the moments of exactly what the score model trains on: for an RAE (or any model
trained on the codes) the codes' mean and variance; for a VAE trained on posterior samples the moments of
the aggregate posterior, ``E[μ]`` and ``Var[μ] + E[σ²]`` (law of total variance), computed in closed form
from the cached means and log-variances (no sampling). Each modality's moments use the tuples that observe
it. ``"dimension"``: one mean and standard deviation per latent dimension; ``"modality"``: one pair per
modality, over all its dimensions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

STANDARDISE_MODES = ("none", "dimension", "modality")


def latent_moments(mu: Tensor, logvar: Tensor | None, presence: Tensor, per: str) -> tuple[Tensor, Tensor]:
    """(mean, std), each ``(M, D)``, of the latents ``mu`` ``(N, M, D)`` (plus posterior noise of log-variance
    ``logvar`` when given) over the tuples whose ``presence`` ``(N, M)`` is True, per dimension or per modality."""
    if per not in STANDARDISE_MODES[1:]:
        raise ValueError(f"latent standardisation {per!r}: use one of {STANDARDISE_MODES[1:]}")
    n, m, d = mu.shape
    means, stds = torch.zeros(m, d, dtype=mu.dtype), torch.ones(m, d, dtype=mu.dtype)
    for i in range(m):
        rows = presence[:, i].bool().cpu()
        if not bool(rows.any()):
            raise ValueError(f"no tuple observes modality {i}: its latent moments are undefined")
        x = mu[:, i].detach().cpu().double()[rows]
        noise = logvar[:, i].detach().cpu().double()[rows].exp() if logvar is not None else torch.zeros_like(x)
        axes = (0,) if per == "dimension" else (0, 1)
        mean = x.mean(axes, keepdim=True)
        var = (x - mean).square().mean(axes, keepdim=True) + noise.mean(axes, keepdim=True)
        means[i], stds[i] = mean.expand(1, d)[0].to(mu.dtype), var.sqrt().clamp_min(1e-6).expand(1, d)[0].to(mu.dtype)
    return means.to(mu.device), stds.to(mu.device)


class LatentStandardiser(nn.Module):
    """Per-modality, per-dimension ``(z − mean) / std`` and its inverse; the statistics are buffers, so they are
    stored (and reused) with the score stage that trained on them."""

    def __init__(self, num_modalities: int, latent_dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_modalities, latent_dim))
        self.register_buffer("std", torch.ones(num_modalities, latent_dim))

    @torch.no_grad()
    def fit(self, mu: Tensor, logvar: Tensor | None, presence: Tensor, per: str) -> None:
        """Set the statistics to :func:`latent_moments` of the given training latents."""
        mean, std = latent_moments(mu, logvar, presence, per)
        self.mean.copy_(mean)
        self.std.copy_(std)

    def standardise(self, z: Tensor) -> Tensor:
        """``(B, M, D)`` latents in the score model's space."""
        return (z - self.mean) / self.std

    def unstandardise(self, x: Tensor) -> Tensor:
        """``(B, M, D)`` score-space values back in the autoencoders' latent space."""
        return x * self.std + self.mean
