"""Samplers for a score function ``score(x, t)`` under an SDE, registered by name.

Sources: Song et al. 2021 (``yang-song/score_sde_pytorch`` ``sampling.py``: Euler–Maruyama predictor,
Langevin corrector, PC sampler, probability-flow ODE; ``controllable_generation.py``: known entries
re-imposed at every step); Karras et al. 2022 (Heun's method for the probability-flow ODE).

Every sampler has the same leading signature ``(score_fn, sde, x_init, *, known=None, steps, ...)``
and returns a :class:`SampleResult` with the number of score evaluations it used (each evaluation
covers the whole batch, so it is also the number of evaluations per sample). Conditioning is per
sample: :class:`Known` names, for each sample, the entries to hold at their observed values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mmbench.config import did_you_mean
from sbm.sde import VPSDE, ScoreFn, expand_like

REIMPOSE_MODES = ("fresh", "sbmae", "clean")


@dataclass(frozen=True)
class Known:
    """Entries held fixed during sampling, per sample.

    ``mask``: bool, broadcastable to ``x`` (True = known); ``values``: the clean observed values
    (read only where ``mask``). Before every score evaluation at time t the known entries are set to
    ``α_t·x_o + σ_t·ε`` with fresh ε (``mode="fresh"``, the principled imputation), to
    ``α_t·x_o + σ_t·x_o`` (``"sbmae"``: the reference code reuses the clean latent as the noise), or
    to ``x_o`` itself (``"clean"``: MLD, whose score net is told these entries sit at time 0).
    The sampler's output holds ``x_o`` exactly at known entries.
    """

    mask: Tensor
    values: Tensor
    mode: str = "fresh"

    def __post_init__(self) -> None:
        if self.mode not in REIMPOSE_MODES:
            raise ValueError(f"unknown re-imposition mode {self.mode!r}; use one of {REIMPOSE_MODES}")
        if self.mask.dtype != torch.bool:
            raise TypeError(f"Known.mask must be a bool tensor, got {self.mask.dtype}")

    def impose(self, sde: VPSDE, x: Tensor, t: Tensor) -> Tensor:
        if self.mode == "clean":
            target = self.values
        else:
            alpha, sigma = sde.alpha_sigma(t)
            noise = torch.randn_like(x) if self.mode == "fresh" else self.values
            target = expand_like(alpha, x) * self.values + expand_like(sigma, x) * noise
        return torch.where(self.mask, target, x)

    def finish(self, x: Tensor) -> Tensor:
        return torch.where(self.mask, self.values, x)


@dataclass(frozen=True)
class SampleResult:
    x: Tensor
    nfe: int  # score evaluations (per sample: every evaluation covers the whole batch)


class _Counted:
    """A score function that counts its calls."""

    def __init__(self, score_fn: ScoreFn) -> None:
        self.score_fn = score_fn
        self.calls = 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        return self.score_fn(x, t)


def _times(sde: VPSDE, steps: int, t_end: float, device: torch.device) -> Tensor:
    if steps < 2:
        raise ValueError(f"a sampler needs at least 2 steps, got {steps}")
    if not 0.0 < t_end < sde.T:
        raise ValueError(f"t_end must lie in (0, T={sde.T}), got {t_end}")
    return torch.linspace(sde.T, t_end, steps, device=device)


def _imposed(known: Known | None, sde: VPSDE, x: Tensor, t: Tensor) -> Tensor:
    return x if known is None else known.impose(sde, x, t)


def _group_mean(values: Tensor, groups: Tensor, n_groups: int) -> Tensor:
    """The mean of ``values`` ``(B,)`` over the samples of each group, returned per sample."""
    sums = torch.zeros(n_groups, dtype=values.dtype, device=values.device).index_add_(0, groups, values)
    counts = torch.zeros(n_groups, dtype=values.dtype, device=values.device).index_add_(0, groups, torch.ones_like(values))
    return (sums / counts)[groups]


@dataclass(frozen=True)
class _FreeEntries:
    """Which entries a sampler updates, and which samples share that pattern (one query = one group)."""

    mask: Tensor | None  # float, broadcastable to x, 1 = free; None = every entry is free
    groups: Tensor  # (B,) group index of each sample
    n_groups: int

    @staticmethod
    def of(known: Known | None, x: Tensor) -> _FreeEntries:
        if known is None:
            return _FreeEntries(None, torch.zeros(x.shape[0], dtype=torch.long, device=x.device), 1)
        free = (~known.mask).expand_as(x)
        _, groups = torch.unique(free.flatten(1), dim=0, return_inverse=True)
        return _FreeEntries(free.to(x.dtype), groups, int(groups.max()) + 1)

    def norm(self, v: Tensor) -> Tensor:
        """Per-sample norm over the free entries, averaged over the sample's group."""
        if self.mask is not None:
            v = v * self.mask
        return _group_mean(v.flatten(1).norm(dim=1), self.groups, self.n_groups)


def langevin_step(
    score_fn: ScoreFn, sde: VPSDE, x: Tensor, t: Tensor, snr: float, steps: int, free: _FreeEntries
) -> Tensor:
    """One Langevin corrector step (score_sde ``LangevinCorrector``).

    Step size ε = 2 α_t (snr·mean‖z‖ / mean‖s‖)² with α_t = exp(−β(t)/N): score_sde's VP corrector uses the
    DDPM α_i = 1 − β(t)/N, its first-order form, which turns negative (a NaN step) when N < β(t).
    score_sde averages the norms over the whole batch; here they are taken over each sample's free
    (unknown) entries and averaged over the samples that share its free entries, so several queries
    sampled in one batch do not interact and each gets the step size a pass of its own would use.
    """
    grad = score_fn(x, t)
    noise = torch.randn_like(x)
    alpha = torch.exp(-sde.beta(t) / steps)
    ratio = snr * free.norm(noise) / free.norm(grad).clamp_min(1e-12)
    step = expand_like(2.0 * alpha * ratio**2, x)
    return x + step * grad + (2.0 * step).sqrt() * noise


def euler_maruyama_step(
    score_fn: ScoreFn, sde: VPSDE, x: Tensor, t: Tensor, dt: float
) -> tuple[Tensor, Tensor]:
    """One reverse-SDE Euler–Maruyama step of size ``dt`` > 0 backwards in time: (x, noise-free mean)."""
    drift, diffusion = sde.reverse(score_fn).sde(x, t)
    mean = x - drift * dt
    return mean + diffusion * dt**0.5 * torch.randn_like(x), mean


def pc_sampler(
    score_fn: ScoreFn,
    sde: VPSDE,
    x_init: Tensor,
    *,
    known: Known | None = None,
    steps: int = 100,
    corrector_steps: int = 1,
    snr: float = 0.16,
    t_end: float = 1e-3,
    denoise: bool = True,
) -> SampleResult:
    """Predictor–corrector sampling (Song et al. 2021, Alg. 1–2; score_sde ``get_pc_sampler``).

    ``steps`` Euler–Maruyama predictor steps at the times ``linspace(T, t_end, steps)``, each preceded
    by ``corrector_steps`` Langevin steps; ``denoise`` returns the last predictor's noise-free mean.
    Score evaluations: ``steps · (1 + corrector_steps)``.
    """
    counted = _Counted(score_fn)
    times = _times(sde, steps, t_end, x_init.device)
    dt = float(times[0] - times[1])
    free = _FreeEntries.of(known, x_init)
    x, mean = x_init, x_init
    for t_scalar in times:
        t = t_scalar.expand(x.shape[0])
        for _ in range(corrector_steps):
            x = langevin_step(counted, sde, _imposed(known, sde, x, t), t, snr, steps, free)
        x, mean = euler_maruyama_step(counted, sde, _imposed(known, sde, x, t), t, dt)
    out = mean if denoise else x
    return SampleResult(out if known is None else known.finish(out), counted.calls)


def euler_sampler(score_fn: ScoreFn, sde: VPSDE, x_init: Tensor, **kwargs: Any) -> SampleResult:
    """Euler–Maruyama on the reverse SDE without a corrector (MLD's sampler; ``steps`` evaluations)."""
    return pc_sampler(score_fn, sde, x_init, **{**kwargs, "corrector_steps": 0})


def ode_sampler(
    score_fn: ScoreFn,
    sde: VPSDE,
    x_init: Tensor,
    *,
    known: Known | None = None,
    steps: int = 100,
    t_end: float = 1e-3,
    **_: Any,
) -> SampleResult:
    """Probability-flow ODE (Song et al. 2021, Eq. 13) by Heun's method (Karras et al. 2022, Alg. 1).

    ``steps`` fixed steps on ``linspace(T, t_end, steps + 1)``, two score evaluations each (``2·steps``).
    Corrector options passed by a caller (``snr``, ``corrector_steps``) are ignored.
    """
    counted = _Counted(score_fn)
    times = _times(sde, steps + 1, t_end, x_init.device)
    flow = sde.reverse(counted, probability_flow=True)
    x = x_init
    for t_now, t_next in zip(times[:-1], times[1:], strict=True):
        h = float(t_now - t_next)
        t, t2 = t_now.expand(x.shape[0]), t_next.expand(x.shape[0])
        x = _imposed(known, sde, x, t)
        d1, _ = flow.sde(x, t)
        x_euler = x - h * d1
        d2, _ = flow.sde(_imposed(known, sde, x_euler, t2), t2)
        x = x - 0.5 * h * (d1 + d2)
    return SampleResult(x if known is None else known.finish(x), counted.calls)


Sampler = Callable[..., SampleResult]
SAMPLERS: dict[str, Sampler] = {"pc": pc_sampler, "euler": euler_sampler, "ode": ode_sampler}


def get_sampler(name: str) -> Sampler:
    if name not in SAMPLERS:
        raise KeyError(f"unknown sampler {name!r}.{did_you_mean(name, SAMPLERS)} Known: {', '.join(SAMPLERS)}.")
    return SAMPLERS[name]


def nfe_of(name: str, steps: int, corrector_steps: int = 1) -> int:
    """Score evaluations per sample a registered sampler uses (for budgets and reports)."""
    get_sampler(name)  # a clear error for unknown names
    return {"pc": steps * (1 + corrector_steps), "euler": steps, "ode": 2 * steps}[name]
