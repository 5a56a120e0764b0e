"""The variance-preserving SDE, knowing nothing of modalities or networks.

Source: Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential Equations"
(``yang-song/score_sde_pytorch`` ``sde_lib.py``: VPSDE). The forward process is
``dx = -½ β(t) x dt + sqrt(β(t)) dw`` with ``β(t) = β_min + t (β_max − β_min)`` on ``t ∈ [0, T]``.

Times are tensors of shape ``(B,)`` (one time per sample); every method broadcasts them over the
trailing dimensions of ``x``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def expand_like(t: Tensor, x: Tensor) -> Tensor:
    """A per-sample ``(B,)`` tensor reshaped to broadcast against ``x`` ``(B, ...)``."""
    if t.dim() != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"expected one time per sample, shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t.reshape(-1, *([1] * (x.dim() - 1)))


@dataclass(frozen=True)
class VPSDE:
    """Variance-preserving SDE (Song et al. 2021, Eq. 11; score_sde ``sde_lib.VPSDE``)."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    T: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta_min <= self.beta_max:
            raise ValueError(f"need 0 <= beta_min <= beta_max, got {self.beta_min}, {self.beta_max}")
        if self.T <= 0:
            raise ValueError(f"T must be positive, got {self.T}")

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_alpha(self, t: Tensor) -> Tensor:
        """log α_t = −¼ t² (β_max − β_min) − ½ t β_min (the log mean coefficient)."""
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """The perturbation kernel's scale α_t and standard deviation σ_t = sqrt(1 − α_t²), per time."""
        log_alpha = self.log_alpha(t)
        return log_alpha.exp(), (-torch.expm1(2.0 * log_alpha)).clamp_min(0.0).sqrt()

    def log_snr(self, t: Tensor) -> Tensor:
        """λ_t = log(α_t / σ_t), half the log signal-to-noise ratio (Lu et al. 2022's λ); decreasing in t."""
        log_alpha = self.log_alpha(t)
        return log_alpha - 0.5 * torch.log(-torch.expm1(2.0 * log_alpha))

    def t_of_log_snr(self, lam: Tensor) -> Tensor:
        """The time whose λ_t is ``lam``: log α = −½ log(1 + e^(−2λ)), then the quadratic log_alpha(t) = log α."""
        log_alpha = -0.5 * torch.nn.functional.softplus(-2.0 * lam)
        slope = self.beta_max - self.beta_min
        if slope == 0:
            return -2.0 * log_alpha / self.beta_min
        return (-0.5 * self.beta_min + torch.sqrt(0.25 * self.beta_min**2 - slope * log_alpha)) / (0.5 * slope)

    def marginal(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean ``α_t x0`` and std ``σ_t`` (broadcastable to ``x0``) of p_0t(x_t | x_0)."""
        alpha, sigma = self.alpha_sigma(t)
        return expand_like(alpha, x0) * x0, expand_like(sigma, x0)

    def perturb(self, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """A draw of x_t = α_t x0 + σ_t ε (``noise`` = ε, fresh N(0, I) when not given)."""
        mean, std = self.marginal(x0, t)
        return mean + std * (torch.randn_like(x0) if noise is None else noise)

    def prior_sample(self, shape: tuple[int, ...], device: torch.device | str = "cpu") -> Tensor:
        """A draw from p_T ≈ N(0, I)."""
        return torch.randn(*shape, device=device)

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Drift f(x, t) = −½ β(t) x and diffusion g(t) = sqrt(β(t)) (broadcastable to ``x``)."""
        beta = expand_like(self.beta(t), x)
        return -0.5 * beta * x, beta.sqrt()

    def discretize(self, x: Tensor, t: Tensor, dt: float) -> tuple[Tensor, Tensor]:
        """Euler–Maruyama discretisation over a step of length ``dt`` > 0: (f·dt, g·sqrt(dt))."""
        drift, diffusion = self.sde(x, t)
        return drift * dt, diffusion * dt**0.5

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> ReverseSDE:
        """The reverse-time SDE (or the probability-flow ODE) driven by ``score_fn(x, t)``."""
        return ReverseSDE(self, score_fn, probability_flow)


@dataclass(frozen=True)
class ReverseSDE:
    """dx = [f − g² ∇log p_t] dt + g dw̄ (Anderson 1982), or the ODE dx = [f − ½ g² ∇log p_t] dt."""

    forward: VPSDE
    score_fn: ScoreFn
    probability_flow: bool = False

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Drift and diffusion of the reverse process in forward time (integrate with dt < 0)."""
        drift, diffusion = self.forward.sde(x, t)
        factor = 0.5 if self.probability_flow else 1.0
        drift = drift - factor * diffusion**2 * self.score_fn(x, t)
        return drift, torch.zeros_like(diffusion) if self.probability_flow else diffusion
