"""Closed-form scores and conditionals of Gaussians and Gaussian mixtures under the VP-SDE.

A data distribution p_0 = Σ_k w_k N(μ_k, Σ_k) has VP marginals p_t = Σ_k w_k N(α_t μ_k, α_t² Σ_k + σ_t² I)
(the perturbation kernel is Gaussian and linear), so its score is the responsibility-weighted sum of the
components' scores −C_k⁻¹(x − α_t μ_k). A Gaussian is the one-component case. Used to test and measure
samplers apart from any learnt network (Song et al. 2021, §3; Karras et al. 2022 use the same device).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from latentdiff.sde import VPSDE


@dataclass(frozen=True)
class GaussianMixture:
    """Σ_k w_k N(μ_k, Σ_k) in D dimensions: ``weights`` (K,), ``means`` (K, D), ``covs`` (K, D, D)."""

    weights: Tensor
    means: Tensor
    covs: Tensor

    @staticmethod
    def gaussian(mean: Tensor, cov: Tensor) -> GaussianMixture:
        return GaussianMixture(torch.ones(1), mean[None], cov[None])

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def marginal(self, sde: VPSDE, t: float) -> GaussianMixture:
        """p_t: each component N(α_t μ_k, α_t² Σ_k + σ_t² I)."""
        alpha, sigma = (float(v) for v in sde.alpha_sigma(torch.tensor([t], dtype=torch.float64)))
        return GaussianMixture(self.weights, alpha * self.means, alpha**2 * self.covs + sigma**2 * torch.eye(self.dim))

    def responsibilities(self, x: Tensor) -> Tensor:
        """(B, K): the posterior probability of each component for each point."""
        dist = torch.distributions.MultivariateNormal(self.means, covariance_matrix=self.covs)
        return torch.softmax(dist.log_prob(x[:, None, :]) + self.weights.log(), dim=1)

    def score(self, x: Tensor) -> Tensor:
        """∇ log p(x), (B, D)."""
        resp = self.responsibilities(x)
        diff = x[:, None, :] - self.means  # (B, K, D)
        per_component = -torch.linalg.solve(self.covs, diff.unsqueeze(-1)).squeeze(-1)
        return (resp[:, :, None] * per_component).sum(1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.covs)[k]
        z = torch.randn(n, self.dim, generator=generator)
        return self.means[k] + (chol @ z.unsqueeze(-1)).squeeze(-1)

    def conditional(self, observed: list[int], values: Tensor) -> GaussianMixture:
        """p(x_free | x_observed = values[observed]) over the free coordinates (Bishop 2006, §2.3.1, 9.2)."""
        free = [i for i in range(self.dim) if i not in observed]
        v = values[observed]
        s_oo = self.covs[:, observed][:, :, observed]
        s_fo = self.covs[:, free][:, :, observed]
        s_ff = self.covs[:, free][:, :, free]
        gain = torch.linalg.solve(s_oo, s_fo.transpose(1, 2)).transpose(1, 2)  # Σ_fo Σ_oo⁻¹
        means = self.means[:, free] + (gain @ (v - self.means[:, observed]).unsqueeze(-1)).squeeze(-1)
        covs = s_ff - gain @ s_fo.transpose(1, 2)
        likelihood = torch.distributions.MultivariateNormal(self.means[:, observed], covariance_matrix=s_oo).log_prob(v)
        return GaussianMixture(torch.softmax(likelihood + self.weights.log(), 0), means, covs)


class ExactScore:
    """``score(x, t)`` of a mixture's VP marginal at the (shared) time of the batch."""

    def __init__(self, sde: VPSDE, mixture: GaussianMixture) -> None:
        self.sde, self.mixture = sde, mixture

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        if not torch.all(t == t[0]):
            raise ValueError("ExactScore takes one time for the whole batch")
        shape = x.shape
        return self.mixture.marginal(self.sde, float(t[0])).score(x.reshape(shape[0], -1)).reshape(shape).to(x.dtype)

    def prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Exact draws of p_T (samplers measured apart from the prior mismatch of a short SDE)."""
        return self.mixture.marginal(self.sde, self.sde.T).sample(n, generator)
