"""Samplers for a score function ``score(x, t)`` under an SDE, registered by name.

Sources: Song et al. 2021 (``yang-song/score_sde_pytorch`` ``sampling.py``: Euler–Maruyama predictor,
Langevin corrector, PC sampler, probability-flow ODE; ``controllable_generation.py``: known entries
re-imposed at every step); Karras et al. 2022 (Heun's method for the probability-flow ODE); Lu et al.
2022 (DPM-Solver++(2M), multistep second order in data prediction); Zhao et al. 2023 (UniPC, B(h) = e^h − 1,
"bh2").

Every sampler has the same leading signature ``(score_fn, sde, x_init, *, known=None, steps, ...)``
and returns a :class:`SampleResult` with the number of score evaluations it used (each evaluation
covers the whole batch, so it is also the number of evaluations per sample). Conditioning is per
sample: :class:`Known` names, for each sample, the entries to hold at their observed values.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from latentdiff.grids import time_grid
from latentdiff.sde import VPSDE, ScoreFn, expand_like
from mmbench.plugins import Registry

REIMPOSE_MODES = ("fresh", "fixed", "sbmae", "clean")


@dataclass(frozen=True)
class Known:
    """Entries held fixed during sampling, per sample.

    ``mask``: bool, broadcastable to ``x`` (True = known); ``values``: the clean observed values
    (read only where ``mask``). Before every score evaluation at time t the known entries are set to
    ``α_t·x_o + σ_t·ε`` with fresh ε (``mode="fresh"``, the principled imputation), with one ε per
    sample drawn when sampling starts and reused at every step (``"fixed"``: the known entries follow one
    forward-diffusion path, so a deterministic solver sees a smooth conditioning signal), to
    ``α_t·x_o + σ_t·x_o`` (``"sbmae"``: the reference code reuses the clean latent as the noise), or
    to ``x_o`` itself (``"clean"``: MLD, whose score net is told these entries sit at time 0).
    The sampler's output holds ``x_o`` exactly at known entries. Samplers call :meth:`start` first.
    """

    mask: Tensor
    values: Tensor
    mode: str = "fresh"
    noise: Tensor | None = None  # "fixed": the per-sample ε, drawn by start()

    def __post_init__(self) -> None:
        if self.mode not in REIMPOSE_MODES:
            raise ValueError(f"unknown re-imposition mode {self.mode!r}; use one of {REIMPOSE_MODES}")
        if self.mask.dtype != torch.bool:
            raise TypeError(f"Known.mask must be a bool tensor, got {self.mask.dtype}")

    def start(self, x_init: Tensor) -> Known:
        """This specification ready for one sampling pass from ``x_init`` ("fixed": its noise drawn now)."""
        if self.mode != "fixed" or self.noise is not None:
            return self
        return replace(self, noise=torch.randn_like(x_init))

    def _noise(self, x: Tensor) -> Tensor:
        if self.mode == "fresh":
            return torch.randn_like(x)
        if self.mode == "sbmae":
            return self.values
        if self.noise is None:
            raise ValueError("Known(mode='fixed') has no noise yet: call known.start(x_init) before sampling")
        return self.noise

    def impose(self, sde: VPSDE, x: Tensor, t: Tensor) -> Tensor:
        if self.mode == "clean":
            target = self.values
        else:
            alpha, sigma = sde.alpha_sigma(t)
            noise = self._noise(x)
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


def _times(sde: VPSDE, steps: int, t_end: float, device: torch.device, grid: str = "time") -> Tensor:
    if steps < 2:
        raise ValueError(f"a sampler needs at least 2 steps, got {steps}")
    return time_grid(sde, steps, t_end, grid, device)


def _started(known: Known | None, x_init: Tensor) -> Known | None:
    return None if known is None else known.start(x_init)


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
    known = _started(known, x_init)
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
    grid: str = "time",
    **_: Any,
) -> SampleResult:
    """Probability-flow ODE (Song et al. 2021, Eq. 13) by Heun's method (Karras et al. 2022, Alg. 1).

    ``steps`` steps between the ``steps + 1`` times of ``grid`` (``"time"``: ``linspace(T, t_end, steps + 1)``;
    ``"karras"``: Karras et al.'s ρ = 7 schedule), two score evaluations each (``2·steps``).
    Corrector options passed by a caller (``snr``, ``corrector_steps``) are ignored.
    """
    counted = _Counted(score_fn)
    times = _times(sde, steps + 1, t_end, x_init.device, grid)
    known = _started(known, x_init)
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


# --- exponential-integrator solvers in data prediction (one score evaluation per step) ----------------
FEWSTEP_GRID = "logsnr"  # the default grid of dpmpp2m, dpmpp2m-sde, unipc: docs/sbm.md, "Few-step samplers" (measured)


def _data_prediction(score_fn: ScoreFn, sde: VPSDE, x: Tensor, t: Tensor) -> Tensor:
    """x̂_0 = (x − σ_t ε̂)/α_t with ε̂ = −σ_t s(x, t), i.e. (x + σ_t² s)/α_t (Lu et al. 2022, Eq. 9)."""
    alpha, sigma = sde.alpha_sigma(t)
    return (x + expand_like(sigma**2, x) * score_fn(x, t)) / expand_like(alpha, x)


@dataclass(frozen=True)
class _Schedule:
    """α, σ and λ = log(α/σ) at each grid time, as Python floats (every sample shares the grid)."""

    times: Tensor
    alpha: list[float]
    sigma: list[float]
    lam: list[float]

    @staticmethod
    def of(sde: VPSDE, steps: int, t_end: float, grid: str, device: torch.device) -> _Schedule:
        times = _times(sde, steps + 1, t_end, device, grid)
        t64 = times.double().cpu()
        alpha, sigma = sde.alpha_sigma(t64)
        return _Schedule(times, alpha.tolist(), sigma.tolist(), sde.log_snr(t64).tolist())

    @property
    def steps(self) -> int:
        return len(self.times) - 1

    def at(self, i: int, x: Tensor) -> Tensor:
        return self.times[i].expand(x.shape[0])

    def h(self, i: int) -> float:
        """λ_{i+1} − λ_i > 0: the step from grid point i to i + 1."""
        return self.lam[i + 1] - self.lam[i]

    def first_order(self, i: int, x: Tensor, x0: Tensor) -> Tensor:
        """DPM-Solver++(1) (= DDIM) from point i to i + 1: (σ_{i+1}/σ_i) x − α_{i+1} (e^(−h) − 1) x̂_0."""
        return (self.sigma[i + 1] / self.sigma[i]) * x - self.alpha[i + 1] * math.expm1(-self.h(i)) * x0

    def stochastic_first_order(self, i: int, x: Tensor, x0: Tensor) -> Tensor:
        """SDE-DPM-Solver++(1) from point i to i + 1: (σ_{i+1}/σ_i) e^(−h) x + α_{i+1}(1 − e^(−2h)) x̂_0
        + σ_{i+1} sqrt(1 − e^(−2h)) z (the exact solution of the reverse SDE for a constant x̂_0)."""
        h = self.h(i)
        decay = -math.expm1(-2.0 * h)
        return ((self.sigma[i + 1] / self.sigma[i]) * math.exp(-h) * x + self.alpha[i + 1] * decay * x0
                + self.sigma[i + 1] * math.sqrt(decay) * torch.randn_like(x))


def _finished(known: Known | None, x: Tensor) -> Tensor:
    return x if known is None else known.finish(x)


def _keep_known(known: Known | None, evaluated: Tensor, x: Tensor) -> Tensor:
    """``x`` with the known entries of ``evaluated`` (where the score net saw them) restored."""
    return x if known is None else torch.where(known.mask, evaluated, x)


def dpmpp_2m_sampler(
    score_fn: ScoreFn,
    sde: VPSDE,
    x_init: Tensor,
    *,
    known: Known | None = None,
    steps: int = 20,
    t_end: float = 1e-3,
    grid: str = FEWSTEP_GRID,
    **_: Any,
) -> SampleResult:
    """DPM-Solver++(2M) on the probability-flow ODE (Lu et al. 2022, "DPM-Solver++", Alg. 2).

    ``steps`` steps between the ``steps + 1`` times of ``grid``, one score evaluation each (``steps``).
    Step i → i+1 with h_i = λ_{i+1} − λ_i: x ← (σ_{i+1}/σ_i) x − α_{i+1}(e^(−h_i) − 1) D_i, where
    D_0 = x̂_0 (first order) and D_i = (1 + 1/(2r)) x̂_0^(i) − 1/(2r) x̂_0^(i−1), r = h_{i−1}/h_i. Known
    entries are re-imposed before each evaluation; the output is x at ``t_end`` (no extra denoising
    evaluation: σ_{t_end} ≈ 0.01 for the paper's SDE). Corrector options (``snr``, ...) are ignored.
    """
    return _multistep_2m(score_fn, sde, x_init, known, _Schedule.of(sde, steps, t_end, grid, x_init.device),
                         stochastic=False)


def dpmpp_2m_sde_sampler(
    score_fn: ScoreFn,
    sde: VPSDE,
    x_init: Tensor,
    *,
    known: Known | None = None,
    steps: int = 20,
    t_end: float = 1e-3,
    grid: str = FEWSTEP_GRID,
    **_: Any,
) -> SampleResult:
    """SDE-DPM-Solver++(2M) on the reverse SDE (Lu et al. 2022, "DPM-Solver++", §4 and App. B; the
    second-order term as its midpoint variant): x ← (σ_{i+1}/σ_i) e^(−h) x + α_{i+1}(1 − e^(−2h)) D_i +
    σ_{i+1} sqrt(1 − e^(−2h)) z with D_i as in :func:`dpmpp_2m_sampler`; one evaluation per step.
    It injects fresh noise at every step like Euler–Maruyama, which the replacement method of conditioning
    needs to mix (docs/sbm.md, "Few-step samplers"). Corrector options (``snr``, ...) are ignored.
    """
    return _multistep_2m(score_fn, sde, x_init, known, _Schedule.of(sde, steps, t_end, grid, x_init.device),
                         stochastic=True)


def _multistep_2m(
    score_fn: ScoreFn, sde: VPSDE, x_init: Tensor, known: Known | None, sched: _Schedule, stochastic: bool
) -> SampleResult:
    """The 2M loop shared by the ODE and SDE forms: re-impose, predict x̂_0, extrapolate D_i, step."""
    counted = _Counted(score_fn)
    known = _started(known, x_init)
    step = sched.stochastic_first_order if stochastic else sched.first_order
    x, previous = x_init, None
    for i in range(sched.steps):
        x = _imposed(known, sde, x, sched.at(i, x))
        x0 = _data_prediction(counted, sde, x, sched.at(i, x))
        d = x0 if previous is None else x0 + (x0 - previous) * (sched.h(i) / (2.0 * sched.h(i - 1)))
        x, previous = step(i, x, d), x0
    return SampleResult(_finished(known, x), counted.calls)


@dataclass(frozen=True)
class _UniPCStep:
    """A UniPC step from grid point i (state ``x``, data prediction ``m``) to i + 1, order 1 or 2."""

    i: int
    x: Tensor
    m: Tensor
    slope: Tensor | None  # order 2: D1 = (m_{i−1} − m_i)/r1; order 1: None
    r1: float  # (λ_{i−1} − λ_i)/h_i (order 2)

    def predict(self, sched: _Schedule) -> Tensor:
        """UniP-2 (bh2): the first-order step − α_{i+1} B(h) · ½ D1 (B(h) = e^(−h) − 1 in data prediction)."""
        x = sched.first_order(self.i, self.x, self.m)
        if self.slope is None:
            return x
        return x - sched.alpha[self.i + 1] * math.expm1(-sched.h(self.i)) * 0.5 * self.slope

    def correct(self, sched: _Schedule, m_next: Tensor) -> Tensor:
        """UniC (bh2) with the evaluation at the predicted point, which the next step reuses (no extra one)."""
        h = sched.h(self.i)
        b_h = math.expm1(-h)
        change = m_next - self.m
        if self.slope is None:
            update = 0.5 * change
        else:
            rho_slope, rho_change = _unic_weights(h, self.r1)
            update = rho_slope * self.slope + rho_change * change
        return sched.first_order(self.i, self.x, self.m) - sched.alpha[self.i + 1] * b_h * update


def _unic_weights(h: float, r1: float) -> tuple[float, float]:
    """The order-2 UniC weights ρ solving [[1, 1], [r1, 1]] ρ = b, b_k = k!·φ_{k+1}(−h)/B(h) (Zhao et al., Alg. 2)."""
    hh = -h
    b_h = math.expm1(hh)
    phi_2 = math.expm1(hh) / hh - 1.0
    phi_3 = phi_2 / hh - 0.5
    b1, b2 = phi_2 / b_h, 2.0 * phi_3 / b_h
    rho_slope = (b1 - b2) / (1.0 - r1)
    return rho_slope, b1 - rho_slope


def unipc_sampler(
    score_fn: ScoreFn,
    sde: VPSDE,
    x_init: Tensor,
    *,
    known: Known | None = None,
    steps: int = 20,
    t_end: float = 1e-3,
    grid: str = FEWSTEP_GRID,
    **_: Any,
) -> SampleResult:
    """UniPC, bh2, order 2, data prediction (Zhao et al. 2023, "UniPC", Alg. 2 and 3; B(h) = e^h − 1).

    ``steps`` steps between the ``steps + 1`` times of ``grid``, one score evaluation each (``steps``):
    the evaluation at each new point first corrects that point (UniC) and then drives the next
    prediction (UniP, second order from the second step on); the last point is not corrected (that
    would cost an evaluation). Known entries are re-imposed before each evaluation and kept at the
    values the net saw through the correction. Corrector options (``snr``, ...) are ignored.
    """
    counted = _Counted(score_fn)
    sched = _Schedule.of(sde, steps, t_end, grid, x_init.device)
    known = _started(known, x_init)
    x, last = x_init, None
    for i in range(steps):
        x = _imposed(known, sde, x, sched.at(i, x))
        m = _data_prediction(counted, sde, x, sched.at(i, x))
        slope, r1 = None, 0.0
        if last is not None:
            x = _keep_known(known, x, last.correct(sched, m))
            r1 = (sched.lam[i - 1] - sched.lam[i]) / sched.h(i)
            slope = (last.m - m) / r1
        last = _UniPCStep(i, x, m, slope, r1)
        x = last.predict(sched)
    return SampleResult(_finished(known, x), counted.calls)


Sampler = Callable[..., SampleResult]
SAMPLERS: Registry[Sampler] = Registry("sampler", group="mmbench.samplers", expects=Callable)
SAMPLERS.register("pc", pc_sampler, "predictor-corrector: Euler-Maruyama + Langevin (Song et al. 2021)")
SAMPLERS.register("euler", euler_sampler, "Euler-Maruyama on the reverse SDE (Song et al. 2021)")
SAMPLERS.register("ode", ode_sampler, "probability-flow ODE, Heun's method (Karras et al. 2022)")
SAMPLERS.register("dpmpp2m", dpmpp_2m_sampler, "DPM-Solver++(2M) (Lu et al. 2022)")
SAMPLERS.register("dpmpp2m-sde", dpmpp_2m_sde_sampler, "DPM-Solver++(2M) SDE variant (Lu et al. 2022)")
SAMPLERS.register("unipc", unipc_sampler, "UniPC, B(h) = e^h - 1 (Zhao et al. 2023)")


def get_sampler(name: str) -> Sampler:
    return SAMPLERS.resolve(name)


def nfe_of(name: str, steps: int, corrector_steps: int = 1) -> int:
    """Score evaluations per sample a registered sampler uses (for budgets and reports)."""
    get_sampler(name)  # a clear error for unknown names
    return {"pc": steps * (1 + corrector_steps), "euler": steps, "ode": 2 * steps, "dpmpp2m": steps, "dpmpp2m-sde": steps,
            "unipc": steps}[name]


def takes_grid(name: str) -> bool:
    """Whether a registered sampler has a ``grid`` option (of :data:`latentdiff.grids.GRIDS`)."""
    return "grid" in inspect.signature(get_sampler(name)).parameters
