"""Latent standardisation of the SBM score model (latentdiff.standardise, SBMConfig.latent_standardise): the
statistics against numpy, the exact round trip, sampling of a non-unit-scale Gaussian latent against its
closed form with the exact score, and configs at the default hashing as before the field existed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from latentdiff.analytic import ExactScore, GaussianMixture
from latentdiff.standardise import LatentStandardiser, latent_moments
from mmbench import registry
from mmbench.config import src, to_dict
from mmbench.data.synthetic import make_patterns
from mmbench.hashing import config_hash
from mmbench.runner.models import model_class
from mmbench.runner.plan import model_overrides, resolved_config
from mmbench.suites import get_suite
from mmbench.suites.polymnist import QUICK_MLD
from mmbench.training.artifacts import ArtifactStore
from mmbench.training.trainer import TrainerOptions, train_model
from sbm.model import SBMConfig

MODALITIES = ("m0", "m1", "m2")
TINY = {"width": 0.125, "latent_dim": 4, "dim": 8, "dim_mults": (1,), "attn_heads": 2, "attn_dim_head": 8,
        "ae_steps": 2, "score_steps": 2, "ae_batch_size": 16, "score_batch_size": 16, "sampler_steps": 3}


# --- (a) the statistics and the round trip ------------------------------------------------------------------
def numpy_moments(mu: np.ndarray, logvar: np.ndarray | None, presence: np.ndarray, per: str):
    """Aggregate-posterior moments by the law of total variance, modality by modality, in numpy."""
    means, stds = np.zeros(mu.shape[1:]), np.zeros(mu.shape[1:])
    for i in range(mu.shape[1]):
        x = mu[presence[:, i], i]
        noise = np.zeros_like(x) if logvar is None else np.exp(logvar[presence[:, i], i])
        axis = 0 if per == "dimension" else None
        means[i] = np.mean(x, axis=axis)
        stds[i] = np.sqrt(np.var(x, axis=axis) + np.mean(noise, axis=axis))
    return means, stds


@pytest.mark.parametrize("per", ["dimension", "modality"])
@pytest.mark.parametrize("variational", [False, True])
def test_moments_match_numpy_and_the_round_trip_is_exact(per, variational):
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(500, 3, 6, generator=gen, dtype=torch.float64) * torch.tensor([0.5, 2.0, 3.0])[:, None] + 2.0
    logvar = torch.randn(500, 3, 6, generator=gen, dtype=torch.float64) - 1.0 if variational else None
    presence = torch.rand(500, 3, generator=gen) > 0.3
    mean, std = latent_moments(mu, logvar, presence, per)
    want_mean, want_std = numpy_moments(mu.numpy(), None if logvar is None else logvar.numpy(), presence.numpy(), per)
    np.testing.assert_allclose(mean.numpy(), want_mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(std.numpy(), want_std, rtol=1e-12)
    stats = LatentStandardiser(3, 6).double()
    stats.fit(mu, logvar, presence, per)
    z = torch.randn(7, 3, 6, dtype=torch.float64)
    torch.testing.assert_close(stats.unstandardise(stats.standardise(z)), z, rtol=0, atol=1e-13)
    if not variational and per == "dimension":  # the observed codes become zero-mean, unit-variance
        x = stats.standardise(mu)[:, 0][presence[:, 0]]
        torch.testing.assert_close(x.mean(0), torch.zeros(6, dtype=torch.float64), rtol=0, atol=1e-12)
        torch.testing.assert_close(x.std(0, unbiased=False), torch.ones(6, dtype=torch.float64), rtol=0, atol=1e-12)


def test_vae_moments_are_those_of_posterior_samples():
    """The closed form equals the moments of many posterior samples, which is what the score net trains on."""
    gen = torch.Generator().manual_seed(1)
    mu = torch.randn(400, 1, 3, generator=gen, dtype=torch.float64) * 0.35
    logvar = torch.full((400, 1, 3), 2 * np.log(0.83), dtype=torch.float64)
    mean, std = latent_moments(mu, logvar, torch.ones(400, 1, dtype=torch.bool), "dimension")
    draws = mu + torch.randn(2000, 400, 1, 3, generator=gen, dtype=torch.float64) * (0.5 * logvar).exp()
    torch.testing.assert_close(std[0], draws.flatten(0, 1)[:, 0].std(0), rtol=0.01, atol=0)
    assert float(std.mean()) == pytest.approx((0.35**2 + 0.83**2) ** 0.5, rel=0.1)


def test_the_score_stage_fits_and_stores_the_statistics_of_its_cache():
    data = make_patterns(3, n=40, seed=2)
    model = registry.build("sbm-vae", MODALITIES, {**TINY, "latent_standardise": "dimension"})
    stage = next(s for s in model.stages() if s.name == "score")
    stage.prepare(lambda: iter([data.batch(range(0, 20)), data.batch(range(20, 40))]))
    cache = model.require_cache()
    want_mean, want_std = numpy_moments(cache.mu.double().numpy(), cache.logvar.double().numpy(),
                                        cache.presence.numpy(), "dimension")
    state = stage.module.state_dict()
    np.testing.assert_allclose(state["stats.mean"].numpy(), want_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state["stats.std"].numpy(), want_std, rtol=1e-5)
    with pytest.raises(ValueError, match="latent_standardise"):
        registry.build("sbm-vae", MODALITIES, {**TINY, "latent_standardise": "batch"})


def test_a_stored_standardised_score_stage_brings_its_statistics(tmp_path):
    data = make_patterns(3, n=40, seed=2)
    config = {**TINY, "latent_standardise": "dimension", "data_id": "patterns"}
    store = ArtifactStore(tmp_path / "store")
    models, reused = [], []
    for run in ("first", "second"):
        model = registry.build("sbm-rae", MODALITIES, config)
        options = TrainerOptions(workdir=tmp_path / run, config_hash=run, seed=0, quiet=True, artifacts=store)
        reused.append({r.name: r.reused for r in train_model(model, data, None, options)}["score"])
        models.append(model)
    assert reused == [False, True]
    first, second = (m.standardiser for m in models)
    assert not torch.equal(first.std, torch.ones_like(first.std))
    assert torch.equal(second.mean, first.mean) and torch.equal(second.std, first.std)


# --- (b) sampling a non-unit-scale Gaussian latent with the exact score ---------------------------------------
MEAN = torch.tensor([[3.0, -2.0, 4.0, 2.5], [-3.0, 3.5, 1.0, -4.0]], dtype=torch.float64)  # (M=2, D=4)
STD = torch.tensor([[2.5, 0.4, 3.0, 1.5], [2.0, 0.5, 2.5, 3.0]], dtype=torch.float64)


def latent_gaussian() -> GaussianMixture:
    """N(MEAN, diag(STD) R diag(STD)) over the 8 flattened latents, R a correlation coupling the modalities."""
    n = MEAN.numel()
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    cov = a @ a.T + n * torch.eye(n, dtype=torch.float64)
    corr = cov / torch.outer(cov.diag().sqrt(), cov.diag().sqrt())
    s = STD.flatten()
    return GaussianMixture.gaussian(MEAN.flatten(), corr * torch.outer(s, s))


def exact_model(standardise: str, sampler: str = "pc"):
    """An SBM (200 sampler steps) whose score is the closed form of the Gaussian in its latent space: the
    standardised Gaussian when standardising."""
    model = registry.build("sbm-rae", ("m0", "m1"), {**TINY, "latent_standardise": standardise, "sampler_steps": 200,
                                                    "sampler": sampler})
    gauss = latent_gaussian()
    if model.standardiser is not None:
        model.standardiser.mean.copy_(MEAN.float())
        model.standardiser.std.copy_(STD.float())
        s = STD.flatten()
        gauss = GaussianMixture.gaussian((gauss.means[0] - MEAN.flatten()) / s, gauss.covs[0] / torch.outer(s, s))
    exact = ExactScore(model.sde, GaussianMixture(gauss.weights.double(), gauss.means, gauss.covs))
    model.score_fn = lambda observed, cond: (lambda x, t: exact(x.double(), t.double()).float())
    return model


def draws(model, known: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)
    return model.generate_latents(known, observed).double()


def test_standardised_joint_sampling_matches_the_closed_form():
    n = 3000
    z = draws(exact_model("dimension", "euler"), torch.zeros(n, 2, 4), torch.zeros(n, 2, dtype=torch.bool)).flatten(1)
    gauss = latent_gaussian()
    se = gauss.covs[0].diag().sqrt() / n**0.5
    assert ((z.mean(0) - gauss.means[0]).abs() / se).max() < 4.5
    torch.testing.assert_close(z.std(0), gauss.covs[0].diag().sqrt(), rtol=0.06, atol=0)
    sd = gauss.covs[0].diag().sqrt()
    torch.testing.assert_close(torch.corrcoef(z.T), gauss.covs[0] / torch.outer(sd, sd), rtol=0, atol=0.06)
    # Euler-Maruyama from the N(0, I) prior of the short SDE (beta_max 5) on the raw latents: far off
    raw = draws(exact_model("none", "euler"), torch.zeros(n, 2, 4), torch.zeros(n, 2, dtype=torch.bool)).flatten(1)
    assert ((raw.mean(0) - gauss.means[0]).abs() / se).max() > 20


def test_standardised_conditional_sampling_matches_the_closed_form():
    n = 3000
    value = torch.tensor([5.0, -1.5, 7.0, 1.0])  # modality 0 observed, off its mean
    known = torch.zeros(n, 2, 4)
    known[:, 0] = value
    observed = torch.tensor([[True, False]]).expand(n, -1)
    z = draws(exact_model("dimension"), known, observed)
    assert torch.equal(z[:, 0], value.double().expand(n, -1))  # the observed latent comes back exactly
    full = torch.cat([value.double(), torch.zeros(4, dtype=torch.float64)])
    cond = latent_gaussian().conditional([0, 1, 2, 3], full)
    sd = cond.covs[0].diag().sqrt()
    assert ((z[:, 1].mean(0) - cond.means[0]).abs() / sd).max() < 0.1  # measured 0.04 (standard error 0.02)
    torch.testing.assert_close(z[:, 1].std(0), sd, rtol=0.08, atol=0)
    raw = draws(exact_model("none"), known, observed)
    assert ((raw[:, 1].mean(0) - cond.means[0]).abs() / sd).max() > 0.2  # measured 0.28: the prior mismatch


# --- (c) at the default nothing that hashes a config changes -------------------------------------------------
# config hashes of the polymnist10 quick rows (data_id "d", seed 0) before latent_standardise existed
POLYMNIST10_QUICK = {
    "mld": "f49d4eaa3491a886", "mmvae": "05c1b00184b54579", "mmvaeplus": "9bec6ba7fc4e3c23",
    "mopoe": "e6ae2186a9c5af0c", "mvae": "e9e0cfa7e65509c2", "mvtcae": "1c5851e552b304c9",
    "sbm-rae": "d068c5b75ba8ad2c", "sbm-rae-c": "602a9d0027b92e4b", "sbm-rae-t": "a4ee7fd10abf6124",
    "sbm-vae": "934d139906d5b18b", "sbm-vae-c": "b03727605ce2329d", "sbm-vae-t": "f3d1d7dcbf85233f",
}


def polymnist10_quick_hashes() -> dict[str, str]:
    """Without the protocol's re-imposition, which the budgets set on the SBM rows since 2026-12-01 on purpose
    (mmbench.suites.protocol), and quick's MLD settings (QUICK_MLD): what is pinned here is that latent_standardise left at its default changes nothing."""
    suite = get_suite("polymnist10")
    budget = next(b for b in suite.budgets if b.name == "quick")
    # quick's MLD settings (QUICK_MLD: lr, warm-up, steps), set on purpose since 2026-12-02, left out
    budget = dataclasses.replace(budget, model_overrides=tuple(o for o in budget.model_overrides if o != ("mld", QUICK_MLD)))
    out = {}
    for variant in suite.variants:
        overrides = model_overrides(budget, variant, "d", 0, model_class(variant.model).Config)
        overrides.pop("reimpose", None)
        out[variant.label] = config_hash(resolved_config(variant.model, overrides))
    return out


def test_default_configs_hash_as_before_the_field():
    assert polymnist10_quick_hashes() == POLYMNIST10_QUICK
    assert "latent_standardise" not in to_dict(SBMConfig())
    on = SBMConfig(latent_standardise="dimension")
    assert to_dict(on)["latent_standardise"] == "dimension"
    base = {**TINY, "data_id": "d"}
    keys = {s: registry.build("sbm-vae", MODALITIES, {**base, "latent_standardise": s})._score_key()
            for s in ("none", "dimension", "modality")}
    assert len(set(keys.values())) == 3  # standardised and raw score stages never share an artifact
    assert registry.build("sbm-vae", MODALITIES, base)._score_key() == keys["none"]


def test_keyed_when_set_fields_leave_nested_and_plain_dicts_alone():
    @dataclasses.dataclass(frozen=True)
    class Inner:
        a: int = src(1, "x")
        new: str = src("off", "y", keyed_when_set=True)

    @dataclasses.dataclass(frozen=True)
    class Outer:
        inner: Inner = dataclasses.field(default_factory=Inner)
        b: tuple[int, ...] = src((1, 2), "z")

    assert to_dict(Outer()) == {"inner": {"a": 1}, "b": [1, 2]}
    assert to_dict(Outer(inner=Inner(new="on"))) == {"inner": {"a": 1, "new": "on"}, "b": [1, 2]}
