"""Time grids for the reverse-time samplers, from t = T down to t_end.

Sources: Lu et al. 2022 (DPM-Solver, §3.3: steps uniform in the log-SNR λ_t = log(α_t/σ_t)); Karras et al.
2022 (EDM, Eq. 5: σ_i = (σ_max^(1/ρ) + i/(N−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ with ρ = 7, where the
VP-SDE's equivalent noise level is σ/α = e^(−λ)); Song et al. 2021 (uniform in t).
"""

from __future__ import annotations

import torch
from torch import Tensor

from latentdiff.sde import VPSDE

GRIDS = ("time", "logsnr", "karras")
KARRAS_RHO = 7.0


def time_grid(sde: VPSDE, points: int, t_end: float, grid: str = "time", device: torch.device | str = "cpu") -> Tensor:
    """``points`` decreasing times from ``sde.T`` to ``t_end`` (both included), spaced as ``grid`` says."""
    if grid not in GRIDS:
        raise ValueError(f"unknown time grid {grid!r}; use one of {GRIDS}")
    if points < 2:
        raise ValueError(f"a sampler needs at least 2 time points, got {points}")
    if not 0.0 < t_end < sde.T:
        raise ValueError(f"t_end must lie in (0, T={sde.T}), got {t_end}")
    ends = torch.tensor([sde.T, t_end], dtype=torch.float64)
    if grid == "time":
        return torch.linspace(sde.T, t_end, points, device=device)
    lam = sde.log_snr(ends)
    if grid == "logsnr":
        lams = torch.linspace(float(lam[0]), float(lam[1]), points, dtype=torch.float64)
    else:  # Karras: uniform in (σ/α)^(1/ρ)
        inv = (-lam / KARRAS_RHO).exp()
        lams = -KARRAS_RHO * torch.linspace(float(inv[0]), float(inv[1]), points, dtype=torch.float64).log()
    times = sde.t_of_log_snr(lams)
    times[0], times[-1] = sde.T, t_end  # exact ends (the inversion is exact to ~1e-15 in float64)
    return times.to(device=device, dtype=torch.float32)
