"""Few-step samplers (DPM-Solver++(2M), its SDE variant, UniPC-bh2), their time grids and the "fixed"
re-imposition mode, against closed forms: exact VP-marginal scores of a Gaussian and of a mixture of tight
Gaussians (``latentdiff.analytic``), exact draws of p_T as the start."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from latentdiff.analytic import ExactScore, GaussianMixture
from latentdiff.grids import KARRAS_RHO, time_grid
from latentdiff.sampling import Known, get_sampler, nfe_of
from latentdiff.sde import VPSDE
from mmbench import registry

FEWSTEP = ["dpmpp2m", "unipc", "dpmpp2m-sde"]
DETERMINISTIC = ["dpmpp2m", "unipc"]
SDE = VPSDE(1.0, 5.0)  # the SBM's SDE below 10 modalities (Table 4)

_A = torch.tensor([[1.0, 0, 0, 0], [0.8, 0.6, 0, 0], [0.3, -0.5, 0.7, 0], [0.2, 0.4, 0.1, 0.5]])
GAUSSIAN = GaussianMixture.gaussian(torch.tensor([1.0, -0.5, 0.3, 2.0]), _A @ _A.T)
# three tight clusters (std 0.1, like RAE codes: the stiff case where Euler-Maruyama needs >= 50 steps)
STD = 0.1
MIXTURE = GaussianMixture(
    torch.tensor([0.5, 0.3, 0.2]),
    torch.tensor([[-2.0, -2.0, 0.0, 1.0], [2.0, 2.0, -1.0, 0.0], [2.0, -2.0, 1.0, -1.0]]),
    torch.stack([torch.eye(4) * STD**2] * 3),
)


def _sample(name: str, mixture: GaussianMixture, nfe: int, n: int, known: Known | None = None, seed: int = 0,
            **kwargs) -> Tensor:
    score = ExactScore(SDE, mixture)
    torch.manual_seed(seed)
    steps = nfe // {"pc": 2, "ode": 2}.get(name, 1)
    result = get_sampler(name)(score, SDE, score.prior(n), known=known, steps=steps, **kwargs)
    assert result.nfe == nfe
    return result.x


def _mixture_errors(x: Tensor, mixture: GaussianMixture) -> tuple[float, float, float]:
    """max |weight error|, max |component mean error|, |within-component std − STD|."""
    resp = mixture.responsibilities(x)
    k = resp.argmax(1)
    weights = (resp.mean(0) - mixture.weights).abs().max().item()
    means = max((x[k == j].mean(0) - mixture.means[j]).abs().max().item() for j in range(len(mixture.weights)))
    return weights, means, abs((x - mixture.means[k]).std().item() - STD)


# --- the closed forms themselves ----------------------------------------------------------------------
def test_mixture_score_and_conditional_match_independent_computations():
    x = torch.randn(5, 4, dtype=torch.float64)
    mix = GaussianMixture(MIXTURE.weights.double(), MIXTURE.means.double(), MIXTURE.covs.double() * 30)
    x.requires_grad_(True)
    dists = torch.distributions.MultivariateNormal(mix.means, covariance_matrix=mix.covs)
    log_p = torch.logsumexp(dists.log_prob(x[:, None, :]) + mix.weights.log(), 1)
    (grad,) = torch.autograd.grad(log_p.sum(), x)
    torch.testing.assert_close(mix.score(x.detach()), grad)
    # conditioning a Gaussian: Σ_ff − Σ_fo Σ_oo⁻¹ Σ_of and the regression mean, from the precision matrix
    g = GaussianMixture.gaussian(GAUSSIAN.means[0].double(), GAUSSIAN.covs[0].double())
    values = torch.tensor([0.5, 1.0, -0.2, 2.5], dtype=torch.float64)
    cond = g.conditional([1, 3], values)
    precision = torch.linalg.inv(g.covs[0])[[0, 2]][:, [0, 2]]
    torch.testing.assert_close(cond.covs[0], torch.linalg.inv(precision))
    assert cond.weights.tolist() == [1.0]


# --- time grids ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sde", [VPSDE(1.0, 5.0), VPSDE(0.1, 20.0), VPSDE(2.0, 2.0)])
def test_log_snr_inverse_and_grids(sde):
    t = torch.tensor([1e-3, 0.05, 0.4, 1.0], dtype=torch.float64)
    torch.testing.assert_close(sde.t_of_log_snr(sde.log_snr(t)), t)
    assert torch.all(sde.log_snr(t)[:-1] > sde.log_snr(t)[1:])
    for grid in ("time", "logsnr", "karras"):
        times = time_grid(sde, 11, 1e-3, grid).double()
        assert times[0] == sde.T and times[-1] == pytest.approx(1e-3) and torch.all(times[1:] < times[:-1])
    steps = sde.log_snr(time_grid(sde, 11, 1e-3, "logsnr").double()).diff()
    torch.testing.assert_close(steps, steps.mean().expand(10), rtol=1e-4, atol=0)
    karras = (-sde.log_snr(time_grid(sde, 11, 1e-3, "karras").double()) / KARRAS_RHO).exp().diff()  # (σ/α)^(1/ρ)
    torch.testing.assert_close(karras, karras.mean().expand(10), rtol=1e-4, atol=0)
    torch.testing.assert_close(time_grid(sde, 11, 1e-3, "time"), torch.linspace(sde.T, 1e-3, 11))
    with pytest.raises(ValueError, match="unknown time grid"):
        time_grid(sde, 11, 1e-3, "cosine")


def _grid_in_float64(sde: VPSDE, points: int, t_end: float, grid: str) -> np.ndarray:
    """DPM-Solver's uniform λ or EDM's Eq. 5 in σ = e^(−λ), mapped back to t by solving the quadratic
    log α(t) = −¼(β_max − β_min)t² − ½β_min t = −½ log(1 + e^(−2λ)), all in numpy float64."""
    a, b = 0.25 * (sde.beta_max - sde.beta_min), 0.5 * sde.beta_min

    def lam(t: float) -> float:
        log_alpha = -a * t * t - b * t
        return log_alpha - 0.5 * np.log(-np.expm1(2 * log_alpha))

    i = np.arange(points) / (points - 1)
    if grid == "logsnr":
        lams = lam(sde.T) + i * (lam(t_end) - lam(sde.T))
    else:
        s_max, s_min = np.exp(-lam(sde.T)), np.exp(-lam(t_end))
        lams = -np.log((s_max ** (1 / 7) + i * (s_min ** (1 / 7) - s_max ** (1 / 7))) ** 7)
    c = 0.5 * np.log1p(np.exp(-2 * lams))  # −log α
    times = (-b + np.sqrt(b * b + 4 * a * c)) / (2 * a) if a else c / b
    times[0], times[-1] = sde.T, t_end
    return times


@pytest.mark.parametrize("sde", [VPSDE(1.0, 5.0), VPSDE(0.1, 20.0), VPSDE(2.0, 2.0)])
def test_grids_are_their_float64_closed_forms_rounded_once(sde):
    """Every interior time is the float64 closed form rounded to float32 (within one float32 step): the
    grid's λ ends and its linspace in float32 (measured 2026-12-01: 2e-7 and up to 1.7e-5 relative at
    200 points) would lose accuracy the float64 inversion keeps. Two points are the two ends; "time" is the
    default grid; fewer than two points are refused."""
    for grid in ("logsnr", "karras"):
        for points in (11, 200):
            expected = torch.from_numpy(_grid_in_float64(sde, points, 1e-3, grid)).float()
            torch.testing.assert_close(time_grid(sde, points, 1e-3, grid), expected, rtol=1.2e-7, atol=0)
    for grid in ("time", "logsnr", "karras"):
        assert time_grid(sde, 2, 0.05, grid).tolist() == [sde.T, pytest.approx(0.05)]
    assert torch.equal(time_grid(sde, 7, 1e-3), torch.linspace(sde.T, 1e-3, 7))
    with pytest.raises(ValueError, match="a sampler needs at least 2 time points, got 1"):
        time_grid(sde, 1, 1e-3)


# --- evaluations, determinism, batching ------------------------------------------------------------------
@pytest.mark.parametrize("name", FEWSTEP)
def test_exact_evaluation_counts(name):
    calls = []
    score = ExactScore(SDE, GAUSSIAN)
    counting = lambda x, t: calls.append(float(t[0])) or score(x, t)  # noqa: E731
    mask = torch.zeros(6, 4, dtype=torch.bool)
    mask[:3, 1] = True
    for known in (None, Known(mask, torch.ones(6, 4), "fixed")):
        calls.clear()
        result = get_sampler(name)(counting, SDE, score.prior(6), known=known, steps=7, snr=0.2, corrector_steps=3)
        assert result.nfe == len(calls) == nfe_of(name, 7) == 7
        torch.testing.assert_close(torch.tensor(calls), time_grid(SDE, 8, 1e-3, "logsnr")[:-1])


def test_same_seed_same_samples_and_deterministic_solvers_use_no_randomness():
    mask = torch.zeros(20, 4, dtype=torch.bool)
    mask[:, 2] = True
    known = Known(mask, torch.zeros(20, 4), "fresh")
    a, b = (_sample("dpmpp2m-sde", GAUSSIAN, 8, 20, known, seed=3) for _ in range(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, _sample("dpmpp2m-sde", GAUSSIAN, 8, 20, known, seed=4))
    score = ExactScore(SDE, GAUSSIAN)
    x_init = score.prior(20)
    for name in DETERMINISTIC:
        torch.manual_seed(0)
        first = get_sampler(name)(score, SDE, x_init, steps=8).x
        torch.manual_seed(1)
        assert torch.equal(first, get_sampler(name)(score, SDE, x_init, steps=8).x)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_one_batched_pass_equals_separate_passes(name):
    score = ExactScore(SDE, GAUSSIAN)
    torch.manual_seed(0)
    x_init = score.prior(40)
    mask = torch.zeros(40, 4, dtype=torch.bool)
    mask[:20, [1, 3]] = True
    mask[20:, 0] = True
    values = torch.randn(40, 4)
    joint = get_sampler(name)(score, SDE, x_init, known=Known(mask, values, "sbmae"), steps=9).x
    parts = [get_sampler(name)(score, SDE, x_init[s], known=Known(mask[s], values[s], "sbmae"), steps=9).x
             for s in (slice(0, 20), slice(20, 40))]
    torch.testing.assert_close(joint, torch.cat(parts))


# --- "fixed" re-imposition -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [*FEWSTEP, "pc", "ode"])
def test_fixed_mode_reuses_one_noise_per_sample_at_every_evaluation(name):
    """Every evaluation sees the known entries at α_t x_o + σ_t ε with the same ε (one per sample), and
    the output holds x_o exactly."""
    score = ExactScore(SDE, GAUSSIAN)
    seen: list[tuple[Tensor, Tensor]] = []

    def spy(x: Tensor, t: Tensor) -> Tensor:
        seen.append((x[:, 1].clone(), t[:1].clone()))
        return score(x, t)

    n = 30
    mask = torch.zeros(n, 4, dtype=torch.bool)
    mask[:, 1] = True
    values = torch.randn(n, 4)
    out = get_sampler(name)(spy, SDE, score.prior(n), known=Known(mask, values, "fixed"), steps=5).x
    noises = []
    for x1, t in seen:
        alpha, sigma = SDE.alpha_sigma(t)
        noises.append((x1 - alpha * values[:, 1]) / sigma)
    assert len(seen) >= 5
    for noise in noises[1:]:
        torch.testing.assert_close(noise, noises[0], atol=2e-3, rtol=0)
    assert noises[0].std() > 0.5  # a real N(0, 1) draw per sample, not a constant
    assert torch.equal(out[:, 1], values[:, 1])
    with pytest.raises(ValueError, match="start"):
        Known(mask, values, "fixed").impose(SDE, values, torch.ones(n))


# --- convergence order --------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "least_ratio"), [("dpmpp2m", 3.2), ("unipc", 6.0)])
@pytest.mark.parametrize("conditional", [False, True])
def test_convergence_order(name, least_ratio, conditional):
    """Halving the step (20 → 40 evaluations) divides the error against an 800-step solution of the same
    probability-flow ODE by ≈ 4 for DPM-Solver++(2M) (second order) and ≈ 8 for UniPC-bh2 (its corrector adds
    an order); first-order updates divide it by 2. Conditional: known entries re-imposed with fixed noise,
    which makes the free entries' dynamics one smooth ODE."""
    score = ExactScore(SDE, GAUSSIAN)
    torch.manual_seed(0)
    x_init = score.prior(200)
    known = None
    if conditional:
        mask = torch.zeros(200, 4, dtype=torch.bool)
        mask[:, [1, 3]] = True
        known = Known(mask, torch.tensor([0.5, 1.0, -0.2, 2.5]).expand(200, 4), "fixed").start(x_init)
    reference = get_sampler("dpmpp2m")(score, SDE, x_init, known=known, steps=800).x

    def error(steps: int) -> float:
        x = get_sampler(name)(score, SDE, x_init, known=known, steps=steps).x
        return (x - reference).abs().flatten(1).max(1).values.median().item()

    coarse, fine = error(20), error(40)
    assert coarse / fine > least_ratio
    assert fine < 2e-3


# --- distributions at 10-20 evaluations ------------------------------------------------------------------
@pytest.mark.parametrize("name", FEWSTEP)
def test_ten_evaluations_reproduce_the_gaussian_where_euler_maruyama_does_not(name):
    x = _sample(name, GAUSSIAN, 10, 6000)
    mean, cov = GAUSSIAN.means[0], GAUSSIAN.covs[0]
    torch.testing.assert_close(x.mean(0), mean, atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.12, rtol=0)  # SDE-DPM-Solver++: 0.06-0.10
    em = _sample("euler", GAUSSIAN, 10, 6000)
    assert (em.mean(0) - mean).abs().max() > 0.08  # measured 0.113 at n = 10,000


@pytest.mark.parametrize("name", FEWSTEP)
def test_ten_evaluations_reproduce_tight_mixture_where_euler_maruyama_does_not(name):
    weights, means, std = _mixture_errors(_sample(name, MIXTURE, 10, 4000), MIXTURE)
    assert weights < 0.03 and means < 0.03 and std < 0.015
    for nfe in (10, 20):  # Euler-Maruyama: within-component std 3.3 and 0.96 (0.1 exact)
        assert _mixture_errors(_sample("euler", MIXTURE, nfe, 4000), MIXTURE)[2] > 0.3


def test_conditional_mixture_at_ten_evaluations_where_euler_maruyama_fails():
    """Given x1 = 2 and x3 = 0 the closed-form conditional is the second component alone (its free
    coordinates N((2, −1), 0.1² I)). SDE-DPM-Solver++(2M) with the reference code's re-imposition reproduces
    it at 10 evaluations; Euler–Maruyama at 10 leaves 20 % in other components and a std of 3.7."""
    n = 4000
    mask = torch.zeros(n, 4, dtype=torch.bool)
    mask[:, [1, 3]] = True
    values = torch.tensor([0.0, 2.0, 0.0, 0.0])
    target = MIXTURE.conditional([1, 3], values)
    assert target.weights[1] > 0.999
    known = Known(mask, values.expand(n, 4), "sbmae")

    def errors(name: str) -> tuple[float, float, float]:
        x = _sample(name, MIXTURE, 10, n, known)
        assert torch.equal(x[:, [1, 3]], values[[1, 3]].expand(n, 2))
        share = (MIXTURE.responsibilities(x).argmax(1) == 1).float().mean().item()
        free = x[:, [0, 2]]
        return share, (free.mean(0) - target.means[1]).abs().max().item(), free.std(0).max().item()

    share, mean, std = errors("dpmpp2m-sde")
    assert share > 0.99 and mean < 0.03 and abs(std - STD) < 0.02
    share, mean, std = errors("euler")
    assert share < 0.9 and std > 1.0
    for name in DETERMINISTIC:  # the component is found; replacement leaves the free spread too wide (0.21)
        assert errors(name)[0] > 0.99


# --- the model's configuration ---------------------------------------------------------------------------
TINY = {"width": 0.125, "latent_dim": 16, "dim": 8, "dim_mults": (1,), "attn_heads": 2, "attn_dim_head": 8}


def test_sbm_accepts_the_new_samplers_grids_and_lean_unet():
    modalities = ("m0", "m1", "m2")
    for name in FEWSTEP:
        model = registry.build("sbm-vae", modalities, {**TINY, "sampler": name, "sampler_steps": 4,
                                                         "sampler_grid": "karras", "reimpose": "fixed"}).eval()
        observed = torch.tensor([[True, False, False]] * 3)
        with torch.no_grad():
            z = model.generate_latents(torch.randn(3, 3, 16), observed)
        assert z.shape == (3, 3, 16) and model.last_nfe == nfe_of(name, 4) == 4
    with pytest.raises(ValueError, match="sampler_grid"):
        registry.build("sbm-vae", modalities, {**TINY, "sampler": "pc", "sampler_grid": "logsnr"})
    with pytest.raises(ValueError, match="sampler_grid"):
        registry.build("sbm-vae", modalities, {**TINY, "sampler": "unipc", "sampler_grid": "cosine"})
    data = {**TINY, "data_id": "d"}
    key = registry.build("sbm-vae", modalities, data)._score_key()
    assert registry.build("sbm-vae", modalities, {**data, "sampler": "unipc", "sampler_grid": "time"})._score_key() == key
    lean = registry.build("sbm-vae", modalities, {**data, "unet_level_attention": False, "unet_block_mult": 1})
    assert lean._score_key() != key
    params = lambda m: sum(p.numel() for p in m.score_net.parameters())  # noqa: E731
    assert params(lean) < params(registry.build("sbm-vae", modalities, data))
