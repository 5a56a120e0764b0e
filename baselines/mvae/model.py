"""MVAE: Wu & Goodman 2018, "Multimodal Generative Models for Scalable Weakly-Supervised Learning"
(reference repo ``mhw32/multimodal-vae-public``).

Posterior of any subset S: the product of the Gaussian experts of S and the N(0, I) prior expert.
Objective (ELBO sub-sampling): the joint ELBO + every unimodal ELBO + the ELBO of one random subset per
step, each reconstructing only the modalities of its subset, with β·KL to the prior. An incomplete tuple
(``mmbench.data.presence``) restricts every term's subset to its observed modalities and drops the terms
left empty (the unimodal ELBOs of its unobserved modalities).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from baselines.common import (
    Expert,
    PoEVAE,
    VAEConfig,
    decode_rows,
    random_subset_masks,
    repeated_nll,
    stack_experts,
    with_prior_expert,
)
from mmbench.config import src
from mmbench.contract import Subset
from mmbench.distributions import kl_normal_standard, product_of_experts, reparameterize


@dataclass(frozen=True)
class MVAEConfig(VAEConfig):
    beta: float = src(1.0, "paper A.2: β chosen on validation, MVAE 1")


def elbo_masks(num_modalities: int, device: torch.device | None = None) -> Tensor:
    """The ELBO terms of one step as bool rows ``(M + 2, M)``: joint, each unimodal, one random subset."""
    joint = torch.ones(1, num_modalities, dtype=torch.bool, device=device)
    unimodal = torch.eye(num_modalities, dtype=torch.bool, device=device)
    random = random_subset_masks(1, num_modalities, device)
    return torch.cat([joint, unimodal, random])


class MVAE(PoEVAE):
    """Product of experts with a prior expert; joint + unimodal + random-subset ELBOs."""

    Config = MVAEConfig
    paper = "Wu & Goodman 2018, Multimodal Generative Models for Scalable Weakly-Supervised Learning (NeurIPS)"

    def fuse(self, experts: Mapping[str, Expert], given: Subset) -> Expert:
        """PoE of the given experts and the prior (the conditional posterior)."""
        return product_of_experts(*with_prior_expert(*stack_experts(experts, sorted(given))))

    def loss(self, batch: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        observed = self.presence(batch)  # (B, M) or None (complete)
        experts = self.observed_experts(batch, observed)
        mus, logvars = with_prior_expert(*stack_experts(experts, self.modalities))  # (M+1, B, D)
        masks = elbo_masks(len(self.modalities), mus.device)  # (T, M)
        t, b = masks.shape[0], mus.shape[1]
        # per (term, tuple): the term's subset restricted to the tuple's observed modalities
        terms = masks[:, None, :] if observed is None else masks[:, None, :] & observed[None]  # (T, B or 1, M)
        terms = terms.expand(t, b, -1)
        valid = terms.any(-1)  # a term left with no observed modality is dropped for that tuple
        present = torch.cat([terms, terms.new_ones(t, b, 1)], dim=2)  # the prior expert is always in
        mu, logvar = product_of_experts(
            mus.repeat(1, t, 1), logvars.repeat(1, t, 1), present.reshape(t * b, -1).T
        )
        z = reparameterize(mu, logvar).view(t, b, -1)
        nll = torch.zeros(t, b, device=mus.device)
        for k, m in enumerate(self.modalities):
            rows = masks[:, k].nonzero().squeeze(1)  # the ELBO terms that reconstruct m
            means = decode_rows(self.decoders[m], z[rows])
            term_nll = repeated_nll(batch[m], means, self.config.likelihood_scale, self.specs[m].kind)
            if observed is not None:
                term_nll = torch.where(terms[rows, :, k], term_nll, 0.0)
            nll = nll.index_add(0, rows, term_nll)
        kl = kl_normal_standard(mu, logvar).view(t, b)
        per_tuple = nll + self.config.beta * kl
        if observed is not None:
            per_tuple = torch.where(valid, per_tuple, 0.0)
        per_term = per_tuple.mean(1)  # (T,)
        return {
            "loss": per_term.sum(),
            "joint_elbo": -per_term[0],
            "rec_joint": nll[0].mean(),
            "kl_joint": kl[0].mean(),
        }
