"""MoPoE: Sutter et al. 2021, "Generalized Multimodal ELBO" (ICLR; reference repo ``thomassutter/MoPoE``).

Joint posterior: a uniform mixture over the 2^M − 1 non-empty subsets S of the product of the experts
of S; the prior expert joins only the product of the full set (MoPoE ``poe_fusion``). Objective: every
modality reconstructed from a sample of the mixture, + β · the KL of each subset's product to the prior,
averaged over subsets. For large M the subsets of a step are sampled (``subsets_per_step``): the full set
and every singleton always, the rest uniformly without replacement, weighted so that the average over
all subsets is estimated without bias. The reconstruction draws one mixture component per sample,
uniformly over all non-empty subsets (an unbiased version of MoPoE's stratified batch split).
An incomplete tuple (``mmbench.data.presence``) takes the objective of its observed set S: components and
KL subsets among the subsets of S, only S reconstructed.
Conditional generation (``conditional``): by default one mixture component per sample, uniform over the
non-empty subsets of the given modalities, each the PoE of its experts — the paper's evaluation (Wesego &
Rooshenas 2024 §4.1; sbmae ``mopoe_model.py`` ``cond_gen`` without ``use_prod``); or the product of all the
given experts (``"subset_poe"``, MoPoE's ``cond_generation`` on the given subset's posterior).
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
    random_subset_masks,
    stack_experts,
    subset_masks,
    with_prior_expert,
)
from mmbench.config import src
from mmbench.contract import Subset
from mmbench.distributions import kl_normal_standard, product_of_experts, reparameterize


@dataclass(frozen=True)
class MoPoEConfig(VAEConfig):
    beta: float = src(2.5, "paper A.2: β chosen on validation, MoPoE 2.5")
    subsets_per_step: int = src(
        32, "Decision: subsets in each step's KL; all of them when 2^M − 1 ≤ this (exact for M ≤ 5)"
    )
    conditional: str = src("mixture", "paper §4.1 / sbmae cond_gen: a uniform component among the given subsets; 'subset_poe' = MoPoE's PoE of the given set")

    def check(self) -> None:
        super().check()
        if self.conditional not in ("subset_poe", "mixture"):
            raise ValueError(f"MoPoE conditional must be 'subset_poe' or 'mixture', got {self.conditional!r}")


@dataclass(frozen=True)
class SubsetSample:
    """The subsets of one step (bool rows ``(S, M)``) and their weights in the subset average."""

    masks: Tensor
    weights: Tensor  # sums to 1; E[Σ w_s f(s)] = mean over all non-empty subsets of f


def forced_masks(num_modalities: int) -> Tensor:
    """Subsets every sampled step includes: the full set (it alone carries the prior) and each singleton."""
    full = torch.ones(1, num_modalities, dtype=torch.bool)
    return torch.cat([full, torch.eye(num_modalities, dtype=torch.bool)])


def sample_subsets(num_modalities: int, per_step: int) -> SubsetSample:
    """The subsets of one step: all 2^M − 1 if that many fit, else the forced ones + a uniform sample."""
    total = 2**num_modalities - 1
    if total <= per_step:
        masks = subset_masks(num_modalities)
        return SubsetSample(masks, torch.full((total,), 1.0 / total))
    forced = forced_masks(num_modalities)
    n_random = per_step - len(forced)
    if n_random < 1:
        raise ValueError(
            f"subsets_per_step={per_step} leaves no room for random subsets beside the {len(forced)} forced ones "
            f"(full set + {num_modalities} singletons); use at least {len(forced) + 1}"
        )
    pool = total - len(forced)
    codes = _distinct_codes(num_modalities, n_random, excluded=_codes(forced))
    bits = 2 ** torch.arange(num_modalities)
    sampled = (codes[:, None] & bits[None, :]) != 0
    weights = torch.cat([torch.full((len(forced),), 1.0 / total), torch.full((n_random,), pool / n_random / total)])
    return SubsetSample(torch.cat([forced, sampled]), weights)


def _codes(masks: Tensor) -> set[int]:
    bits = 2 ** torch.arange(masks.shape[1])
    return {int(c) for c in (masks.long() * bits).sum(1)}


def _distinct_codes(num_modalities: int, n: int, excluded: set[int]) -> Tensor:
    """``n`` distinct subset codes, uniform without replacement among the non-excluded ones (rejection)."""
    chosen: list[int] = []
    seen = set(excluded)
    while len(chosen) < n:
        for c in torch.randint(1, 2**num_modalities, (2 * (n - len(chosen)),)).tolist():
            if c not in seen and len(chosen) < n:
                seen.add(c)
                chosen.append(c)
    return torch.tensor(chosen, dtype=torch.long)


def observed_components(components: Tensor, observed: Tensor) -> Tensor:
    """Mixture components ``(B, M)`` restricted to each tuple's observed modalities, uniform over the non-empty
    subsets of its observed set: a uniform non-empty subset of all M intersected with the observed set is
    uniform over its subsets; rows left empty are redrawn (rejection), so complete rows keep their draw."""
    components = components & observed
    empty = ~components.any(1)
    while bool(empty.any()):
        redraw = random_subset_masks(int(empty.sum()), observed.shape[1], observed.device) & observed[empty]
        components = components.index_put((empty.nonzero().squeeze(1),), redraw)
        empty = ~components.any(1)
    return components


def subset_poe(mus: Tensor, logvars: Tensor, masks: Tensor) -> Expert:
    """PoE of the experts in each row of ``masks`` ``(B, M)`` (one subset per sample); the prior expert
    joins exactly the rows that hold every modality. ``mus``/``logvars``: ``(M, B, D)``."""
    full = masks.all(dim=1, keepdim=True)
    present = torch.cat([masks, full], dim=1).T  # (M + 1, B)
    return product_of_experts(*with_prior_expert(mus, logvars), present)


class MoPoE(PoEVAE):
    """Mixture of products of experts; KL averaged over (sampled) subsets."""

    Config = MoPoEConfig
    paper = "Sutter et al. 2021, Generalized Multimodal ELBO (ICLR)"

    def fuse(self, experts: Mapping[str, Expert], given: Subset) -> Expert:
        """The PoE of the given subset, with the prior only when it is the full set (``poe_fusion``)."""
        order = sorted(given)
        mus, logvars = stack_experts(experts, order)
        if given == frozenset(self.modalities):
            mus, logvars = with_prior_expert(mus, logvars)
        return product_of_experts(mus, logvars)

    def posterior_sample(self, experts: Mapping[str, Expert], given: Subset) -> Tensor:
        if self.config.conditional == "subset_poe":
            return super().posterior_sample(experts, given)
        return self._mixture_sample(experts, given)

    def _mixture_sample(self, experts: Mapping[str, Expert], given: Subset) -> Tensor:
        """One component per sample, uniform over the non-empty subsets of ``given``."""
        order = sorted(given)
        mus, logvars = stack_experts(experts, order)
        masks = random_subset_masks(mus.shape[1], len(order), mus.device)
        if given == frozenset(self.modalities):
            return reparameterize(*subset_poe(mus, logvars, masks))
        present = masks.T.to(mus.dtype)
        return reparameterize(*product_of_experts(mus, logvars, present))

    def loss(self, batch: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        observed = self.presence(batch)  # (B, M) or None (complete)
        experts = self.observed_experts(batch, observed)
        mus, logvars = stack_experts(experts, self.modalities)  # (M, B, D)
        m, b = mus.shape[:2]
        components = random_subset_masks(b, m, mus.device)  # one mixture component per sample
        if observed is not None:
            components = observed_components(components, observed)
        z = reparameterize(*subset_poe(mus, logvars, components))
        rec = self.reconstruction_nll(batch, z, self.modalities, observed)
        kl = self._subset_kl(mus, logvars, observed)
        loss = rec + self.config.beta * kl
        return {"loss": loss.mean(), "rec": rec.mean(), "kl": kl.mean()}

    def _subset_kl(self, mus: Tensor, logvars: Tensor, observed: Tensor | None = None) -> Tensor:
        """Σ_s w_s KL(PoE_s ‖ p) per sample over this step's subsets; an incomplete tuple keeps the subsets of
        its observed modalities, their weights renormalised to sum to 1."""
        m, b = mus.shape[:2]
        sample = sample_subsets(m, self.config.subsets_per_step)
        s = len(sample.masks)
        masks = sample.masks.to(mus.device).repeat_interleave(b, dim=0)  # (S·B, M)
        mu, logvar = subset_poe(mus.repeat(1, s, 1), logvars.repeat(1, s, 1), masks)
        kl = kl_normal_standard(mu, logvar).view(s, b)
        weights = sample.weights.to(kl)[:, None].expand(s, b)
        if observed is not None:
            inside = ~(sample.masks.to(mus.device)[:, None, :] & ~observed[None]).any(-1)  # (S, B): s ⊆ observed
            weights = torch.where(inside, weights, 0.0)
            weights = weights / weights.sum(0, keepdim=True)  # every observed singleton is forced in: never 0
            kl = torch.where(inside, kl, 0.0)
        return (weights * kl).sum(0)
