"""MVTCAE: Hwang et al. 2021, "Multi-View Representation Learning via Total Correlation Objective"
(NeurIPS; reference repo ``gr8joo/MVTCAE``).

Joint posterior: the product of the unimodal Gaussian experts, without a prior expert; the conditional
posterior of a subset is the product of its experts. Loss, with α = 0.9:
((M−α)/M)·Σ_m rec_m + β[(α/M)·Σ_m KL(q_joint ‖ q_m) + (1−α)·KL(q_joint ‖ p)]. An incomplete tuple
(``mmbench.data.presence``) takes the loss of its observed set S: M → |S|, sums and the PoE over S.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from baselines.common import Expert, PoEVAE, VAEConfig, stack_experts
from mmbench.config import src
from mmbench.contract import Subset
from mmbench.distributions import kl_normal_normal, kl_normal_standard, product_of_experts, reparameterize


@dataclass(frozen=True)
class MVTCAEConfig(VAEConfig):
    beta: float = src(0.1, "paper A.2: β chosen on validation, MVTCAE 0.1")
    alpha: float = src(0.9, "Hwang et al. 2021 / PROTOCOL §2: α = 0.9")


@dataclass(frozen=True)
class MVTCAEWeights:
    """The three loss weights of MVTCAE."""

    reconstruction: float  # (M − α) / M
    conditional_kl: float  # β · α / M, on Σ_m KL(q_joint ‖ q_m)
    prior_kl: float  # β · (1 − α), on KL(q_joint ‖ p)


def mvtcae_weights(num_modalities: int, alpha: float, beta: float) -> MVTCAEWeights:
    """Loss weights of Hwang et al. 2021 (``gr8joo/MVTCAE``: rec_weight, cvib_weight, vib_weight)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"MVTCAE's alpha must lie in [0, 1], got {alpha}")
    if num_modalities < 1:
        raise ValueError(f"need at least one modality, got {num_modalities}")
    m = float(num_modalities)
    return MVTCAEWeights((m - alpha) / m, beta * alpha / m, beta * (1.0 - alpha))


class MVTCAE(PoEVAE):
    """PoE without prior expert; total-correlation objective."""

    Config = MVTCAEConfig
    paper = "Hwang et al. 2021, Multi-View Representation Learning via Total Correlation Objective (NeurIPS)"

    def fuse(self, experts: Mapping[str, Expert], given: Subset) -> Expert:
        """PoE of the given experts (no prior expert)."""
        return product_of_experts(*stack_experts(experts, sorted(given)))

    def loss(self, batch: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        present = self.presence(batch)
        if present is not None:
            return self._incomplete_loss(batch, present)
        experts = self.experts(batch, self.modalities)
        mu, logvar = self.fuse(experts, frozenset(self.modalities))
        z = reparameterize(mu, logvar)
        rec = self.reconstruction_nll(batch, z, self.modalities)
        conditional_kl = sum(kl_normal_normal(mu, logvar, *experts[m]) for m in self.modalities)
        prior_kl = kl_normal_standard(mu, logvar)
        w = mvtcae_weights(len(self.modalities), self.config.alpha, self.config.beta)
        loss = w.reconstruction * rec + w.conditional_kl * conditional_kl + w.prior_kl * prior_kl
        return {
            "loss": loss.mean(),
            "rec": rec.mean(),
            "conditional_kl": conditional_kl.mean(),  # type: ignore[union-attr]
            "prior_kl": prior_kl.mean(),
        }

    def _incomplete_loss(self, batch: dict[str, Tensor], present: Tensor) -> dict[str, Tensor]:
        """Each tuple's objective over its observed set S: the PoE of S, reconstructions and conditional KLs of
        S, the weights of an |S|-modality MVTCAE."""
        experts = self.observed_experts(batch, present)
        mus, logvars = stack_experts(experts, self.modalities)
        mu, logvar = product_of_experts(mus, logvars, present.T)
        z = reparameterize(mu, logvar)
        rec = self.reconstruction_nll(batch, z, self.modalities, present)
        conditional_kl = sum(torch.where(present[:, i], kl_normal_normal(mu, logvar, *experts[m]), 0.0)
                             for i, m in enumerate(self.modalities))
        prior_kl = kl_normal_standard(mu, logvar)
        count, alpha, beta = present.sum(1).to(mu.dtype), self.config.alpha, self.config.beta
        loss = (count - alpha) / count * rec + beta * alpha / count * conditional_kl + beta * (1.0 - alpha) * prior_kl
        return {
            "loss": loss.mean(),
            "rec": rec.mean(),
            "conditional_kl": conditional_kl.mean(),  # type: ignore[union-attr]
            "prior_kl": prior_kl.mean(),
        }
