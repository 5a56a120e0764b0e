"""MMVAE: Shi et al. 2019, "Variational Mixture-of-Experts Autoencoders for Multi-Modal Deep Generative
Models" (NeurIPS; reference repo ``iffsid/mmvae``).

Joint posterior: the uniform mixture of the unimodal experts. Objective (stratified ELBO, K = 1): each
expert's sample z_m ~ q(z | x_m) reconstructs every modality, and the KL to the prior is estimated by
log q_mix(z_m) − log p(z_m) with the mixture density log (1/M) Σ_m' q(z_m | x_m'):
(1/M) Σ_m [Σ_d −log p(x_d | z_m) + β (log q_mix(z_m) − log p(z_m))].
That is M² decodes per tuple, one decoder call per expert sample (``decode_rows``). ``cross_targets = K``
(1..M−1) keeps each sample's own target and K others drawn per step, weighted (M−1)/K: an unbiased
estimate of the same objective and its gradient with M(K + 1) decodes (``baselines.cross_targets``).
Conditional generation: one mixture component per sample, uniform among the given modalities [paper §4.1].
An incomplete tuple (``mmbench.data.presence``) takes the stratified ELBO of its observed set S: samples of
the experts of S, the mixture density over S, targets in S, averaged over |S|.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from baselines.common import (
    Expert,
    SharedLatentVAE,
    VAEConfig,
    decode_rows,
    gaussian_log_density,
    repeated_nll,
    stack_experts,
    standard_normal_log_density,
)
from baselines.cross_targets import check_cross_targets, cross_target_weights, sources_per_target
from mmbench.config import src
from mmbench.contract import Subset
from mmbench.data.source import ModalitySpec
from mmbench.distributions import reparameterize


@dataclass(frozen=True)
class MMVAEConfig(VAEConfig):
    beta: float = src(2.5, "paper A.2: β chosen on validation, MMVAE 2.5")
    cross_targets: int = src(
        0,
        "Decision: 0 = every expert's sample reconstructs every modality (the exact objective); K in 1..M−1 = "
        "its own modality and K others drawn per step, weighted (M−1)/K (unbiased; baselines.cross_targets)",
    )


def mixture_log_density(z: Tensor, mus: Tensor, logvars: Tensor) -> Tensor:
    """log (1/E) Σ_e N(z; mu_e, var_e) for ``z`` ``(..., B, D)`` and experts ``(E, B, D)``; returns ``(..., B)``."""
    per_expert = torch.stack([gaussian_log_density(z, mus[e], logvars[e]) for e in range(len(mus))])
    return torch.logsumexp(per_expert, dim=0) - math.log(len(mus))


def observed_mixture_log_density(z: Tensor, mus: Tensor, logvars: Tensor, observed: Tensor) -> Tensor:
    """log (1/|S_b|) Σ_{e ∈ S_b} N(z; mu_e, var_e) per sample, over the observed experts ``observed`` ``(E, B)``."""
    per_expert = torch.stack([gaussian_log_density(z, mus[e], logvars[e]) for e in range(len(mus))])  # (E, ..., B)
    per_expert = torch.where(observed.view(observed.shape[0], *([1] * (per_expert.dim() - 2)), -1), per_expert, -torch.inf)
    return torch.logsumexp(per_expert, dim=0) - observed.sum(0).to(z.dtype).log()


def choose_components(mus: Tensor, logvars: Tensor) -> Expert:
    """Per sample, the parameters of one expert chosen uniformly among the ``E`` given ones ``(E, B, D)``."""
    e, b = mus.shape[:2]
    pick = torch.randint(e, (b,), device=mus.device)
    rows = torch.arange(b, device=mus.device)
    return mus[pick, rows], logvars[pick, rows]


class MMVAE(SharedLatentVAE):
    """Uniform mixture of unimodal Gaussian experts, stratified ELBO."""

    Config = MMVAEConfig
    paper = (
        "Shi et al. 2019, Variational Mixture-of-Experts Autoencoders for Multi-Modal Deep Generative Models "
        "(NeurIPS)"
    )

    def __init__(self, modalities: Sequence[str], config: MMVAEConfig, specs: Mapping[str, ModalitySpec] | None = None) -> None:
        super().__init__(modalities, config, specs)
        check_cross_targets(config.cross_targets, len(self.modalities))

    def posterior_mean(self, experts: Mapping[str, Expert], given: Subset) -> Tensor:
        """The mean of the uniform mixture of the given experts (the average of their means)."""
        return stack_experts(experts, sorted(given))[0].mean(0)

    def posterior_sample(self, experts: Mapping[str, Expert], given: Subset) -> Tensor:
        return reparameterize(*choose_components(*stack_experts(experts, sorted(given))))

    def loss(self, batch: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        observed = self.presence(batch)  # (B, M) or None (complete)
        experts = self.observed_experts(batch, observed)
        mus, logvars = stack_experts(experts, self.modalities)  # (M, B, D)
        z = reparameterize(mus, logvars)  # z[m] ~ q(z | x_m)
        weights = cross_target_weights(len(self.modalities), self.config.cross_targets, z.device)  # drawn after z
        rec = self.weighted_reconstruction(batch, z, weights, observed)
        if observed is None:
            kl = mixture_log_density(z, mus, logvars) - standard_normal_log_density(z)  # (M, B)
            loss = rec + self.config.beta * kl  # type: ignore[operator]
            return {"loss": loss.mean(), "rec": rec.mean(0).mean(), "kl": kl.mean()}
        # an incomplete tuple: the stratified ELBO of its observed set S (mixture of S, samples of S, targets in S)
        kl = observed_mixture_log_density(z, mus, logvars, observed.T) - standard_normal_log_density(z)
        per_sample = torch.where(observed.T, rec + self.config.beta * kl, 0.0)  # (M, B)
        count = observed.sum(1).to(z.dtype)
        loss = (per_sample.sum(0) / count).mean()
        kl_mean = (torch.where(observed.T, kl, 0.0).sum(0) / count).mean()
        return {"loss": loss, "rec": (torch.where(observed.T, rec, 0.0).sum(0) / count).mean(), "kl": kl_mean}

    def weighted_reconstruction(self, batch: dict[str, Tensor], z: Tensor, weights: Tensor,
                                observed: Tensor | None = None) -> Tensor:
        """Σ_d w[m, d] · (−log p(x_d | z_m)) per expert sample ``(M, B)``; each decoder runs once per
        expert sample of non-zero weight, on the whole batch (``decode_rows``); with ``observed`` ``(B, M)``
        only the observed targets d of each tuple count."""
        scale = self.config.likelihood_scale
        rec = z.new_zeros(z.shape[:2])
        for j, (d, rows) in enumerate(zip(self.modalities, sources_per_target(weights), strict=True)):
            nll = repeated_nll(batch[d], decode_rows(self.decoders[d], z[rows]), scale, self.specs[d].kind)  # (len(rows), B)
            if observed is not None:
                nll = torch.where(observed[None, :, j], nll, 0.0)
            rec = rec.index_add(0, rows, weights[rows, j, None] * nll)
        return rec
