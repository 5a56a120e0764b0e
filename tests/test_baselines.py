"""The five VAE baselines: closed forms, objectives against independent computations, and learning.

Closed forms: the product of Gaussian experts, Gaussian/Laplace densities and KLs against
``torch.distributions``; MoPoE's subset enumeration and sampling; MVTCAE's loss weights. Objectives:
each model's vectorised loss against a plain loop over its terms under the same random draws.
Learning: each baseline, trained briefly on the easy pattern data, generates each modality from the
other two with a coherence well above chance (0.1).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical, Independent, Laplace, MixtureSameFamily, Normal, kl_divergence

from baselines.common import (
    gaussian_log_density,
    image_nll,
    laplace_log_density,
    random_subset_masks,
    standard_normal_log_density,
    subset_masks,
)
from baselines.mmvae.model import mixture_log_density
from baselines.mopoe.model import forced_masks, sample_subsets
from baselines.mvae.model import elbo_masks
from baselines.mvtcae.model import mvtcae_weights
from mmbench import registry
from mmbench.data.synthetic import make_patterns
from mmbench.distributions import kl_normal_normal, kl_normal_standard, product_of_experts
from mmbench.seeding import seed_everything
from mmbench.testing import leave_one_out_coherence

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


BASELINES = ["mvae", "mmvae", "mopoe", "mvtcae", "mmvaeplus"]
TINY = {"width": 0.125, "latent_per_modality": 8, "batch_size": 8, "steps": 2}
TINY_MMVAEPLUS = {"width": 0.125, "shared_dim": 8, "private_dim": 8, "batch_size": 8, "steps": 2}


def tiny(name: str, modalities=("m0", "m1", "m2"), **extra):
    overrides = dict(TINY_MMVAEPLUS if name == "mmvaeplus" else TINY, **extra)
    return registry.build(name, modalities, overrides)


@pytest.fixture(scope="module")
def small_batch():
    data = make_patterns(3, n=16, seed=3)
    batch, labels = data.batch(range(6))
    return batch, labels


# --- product of experts ------------------------------------------------------------------------------


def test_product_of_experts_is_the_normalised_product_of_densities():
    torch.manual_seed(0)
    mus, logvars = torch.randn(4, 5, 3), torch.randn(4, 5, 3)
    mu, logvar = product_of_experts(mus, logvars)
    # log Π_e N(x; mu_e, var_e) − log N(x; mu, var) must not depend on x
    xs = torch.randn(7, 1, 5, 3) * 3
    product = Normal(mus, torch.exp(0.5 * logvars)).log_prob(xs).sum(1)  # (7, 5, 3)
    fused = Normal(mu, torch.exp(0.5 * logvar)).log_prob(xs.squeeze(1))
    gap = product - fused
    assert torch.allclose(gap, gap[:1].expand_as(gap), atol=1e-4)
    # and the closed form: precision-weighted mean, summed precision
    precision = torch.exp(-logvars)
    assert torch.allclose(torch.exp(-logvar), precision.sum(0), rtol=1e-5)
    assert torch.allclose(mu, (mus * precision).sum(0) / precision.sum(0), atol=1e-5)


def test_product_of_experts_mask_selects_experts_per_sample():
    torch.manual_seed(1)
    mus, logvars = torch.randn(3, 4, 2), torch.randn(3, 4, 2)
    mask = torch.tensor([[1, 0, 1, 1], [1, 1, 0, 1], [0, 1, 1, 1]], dtype=torch.bool)
    mu, logvar = product_of_experts(mus, logvars, mask)
    for b in range(4):
        idx = mask[:, b].nonzero().squeeze(1)
        ref_mu, ref_logvar = product_of_experts(mus[idx, b : b + 1], logvars[idx, b : b + 1])
        assert torch.allclose(mu[b], ref_mu[0], atol=1e-6)
        assert torch.allclose(logvar[b], ref_logvar[0], atol=1e-6)


# --- densities and KL terms ------------------------------------------------------------------------


def test_gaussian_kls_match_torch_distributions():
    torch.manual_seed(2)
    mu_q, lv_q, mu_p, lv_p = (torch.randn(6, 5) for _ in range(4))
    q = Independent(Normal(mu_q, torch.exp(0.5 * lv_q)), 1)
    p = Independent(Normal(mu_p, torch.exp(0.5 * lv_p)), 1)
    std = Independent(Normal(torch.zeros(6, 5), torch.ones(6, 5)), 1)
    assert torch.allclose(kl_normal_normal(mu_q, lv_q, mu_p, lv_p), kl_divergence(q, p), rtol=1e-5, atol=1e-5)
    assert torch.allclose(kl_normal_standard(mu_q, lv_q), kl_divergence(q, std), rtol=1e-5, atol=1e-5)


def test_gaussian_and_laplace_densities_match_torch_distributions():
    torch.manual_seed(3)
    x, mu, lv = torch.randn(4, 6), torch.randn(4, 6), torch.randn(4, 6)
    assert torch.allclose(gaussian_log_density(x, mu, lv), Normal(mu, torch.exp(0.5 * lv)).log_prob(x).sum(-1), atol=1e-5)
    assert torch.allclose(standard_normal_log_density(x), Normal(0.0, 1.0).log_prob(x).sum(-1), atol=1e-5)
    scale = torch.rand(4, 6) + 0.1
    assert torch.allclose(laplace_log_density(x, mu, scale), Laplace(mu, scale).log_prob(x), atol=1e-5)
    assert torch.allclose(laplace_log_density(x, 0.0, 0.75), Laplace(0.0, 0.75).log_prob(x), atol=1e-5)


def test_image_nll_is_the_gaussian_negative_log_likelihood():
    torch.manual_seed(4)
    x, mean = torch.rand(3, 3, 28, 28), torch.rand(3, 3, 28, 28)
    expected = -Normal(mean, math.sqrt(0.5)).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(image_nll(x, mean, math.sqrt(0.5)), expected, rtol=1e-5)


def test_mmvae_mixture_density_matches_torch_mixture():
    torch.manual_seed(5)
    mus, lvs = torch.randn(3, 4, 2), torch.randn(3, 4, 2)
    z = torch.randn(5, 4, 2)
    components = Independent(Normal(mus.permute(1, 0, 2), torch.exp(0.5 * lvs.permute(1, 0, 2))), 1)
    mixture = MixtureSameFamily(Categorical(torch.ones(4, 3)), components)
    assert torch.allclose(mixture_log_density(z, mus, lvs), mixture.log_prob(z), atol=1e-5)


# --- subsets -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [1, 2, 3, 5, 10])
def test_subset_enumeration_lists_every_nonempty_subset_once(m):
    masks = subset_masks(m)
    assert masks.shape == (2**m - 1, m)
    assert masks.any(1).all()
    assert len({tuple(r) for r in masks.tolist()}) == 2**m - 1


def test_random_subset_masks_are_uniform_over_nonempty_subsets():
    torch.manual_seed(6)
    masks = random_subset_masks(14_000, 3)
    assert masks.any(1).all()
    codes = (masks.long() * torch.tensor([1, 2, 4])).sum(1)
    counts = torch.bincount(codes, minlength=8)[1:].float()
    assert counts.min() > 0.9 * 2000 and counts.max() < 1.1 * 2000


def test_mopoe_enumerates_all_subsets_when_they_fit():
    sample = sample_subsets(3, per_step=32)
    assert torch.equal(sample.masks, subset_masks(3))
    assert torch.allclose(sample.weights, torch.full((7,), 1 / 7))


def test_mopoe_sampling_keeps_forced_subsets_and_is_distinct():
    torch.manual_seed(7)
    sample = sample_subsets(10, per_step=32)
    assert sample.masks.shape == (32, 10)
    assert torch.equal(sample.masks[:11], forced_masks(10))
    assert len({tuple(r) for r in sample.masks.tolist()}) == 32
    assert sample.masks.any(1).all()
    assert sample.weights.sum().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="subsets_per_step"):
        sample_subsets(10, per_step=11)


def test_mopoe_subset_sampling_is_uniform_and_unbiased():
    torch.manual_seed(8)
    m, per_step, draws = 5, 10, 1500  # 31 subsets: 6 forced, 4 of the other 25 per draw
    values = torch.randn(2**m)  # an arbitrary function of the subset code
    bits = 2 ** torch.arange(m)
    counts = torch.zeros(2**m)
    estimates = []
    for _ in range(draws):
        sample = sample_subsets(m, per_step)
        codes = (sample.masks.long() * bits).sum(1)
        counts[codes[6:]] += 1
        estimates.append(float((sample.weights * values[codes]).sum()))
    free = [c for c in range(1, 2**m) if c not in {31, 1, 2, 4, 8, 16}]
    expected = draws * 4 / 25
    assert counts[free].min() > 0.75 * expected and counts[free].max() < 1.25 * expected
    assert counts[[31, 1, 2, 4, 8, 16]].sum() == 0  # forced subsets are never drawn again
    truth = float(values[1:].mean())
    spread = float(torch.tensor(estimates).std()) / math.sqrt(draws)
    assert abs(sum(estimates) / draws - truth) < 4 * spread


def test_mvae_elbo_terms_are_joint_unimodal_and_one_random_subset():
    torch.manual_seed(9)
    masks = elbo_masks(4)
    assert masks.shape == (6, 4)
    assert masks[0].all()
    assert torch.equal(masks[1:5], torch.eye(4, dtype=torch.bool))
    assert masks[5].any()


# --- MVTCAE ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m,alpha,beta", [(3, 0.9, 0.1), (10, 0.9, 2.5), (2, 0.0, 1.0), (5, 1.0, 0.5)])
def test_mvtcae_weights_follow_the_formula(m, alpha, beta):
    w = mvtcae_weights(m, alpha, beta)
    assert w.reconstruction == pytest.approx((m - alpha) / m)
    assert w.conditional_kl == pytest.approx(beta * alpha / m)
    assert w.prior_kl == pytest.approx(beta * (1 - alpha))


def test_mvtcae_weights_reject_bad_alpha():
    with pytest.raises(ValueError, match="alpha"):
        mvtcae_weights(3, 1.5, 0.1)


def test_mvtcae_loss_combines_its_terms_with_the_weights(small_batch):
    batch, labels = small_batch
    model = tiny("mvtcae", beta=0.7, alpha=0.8)
    out = model.loss(batch, labels)
    w = mvtcae_weights(3, 0.8, 0.7)
    expected = w.reconstruction * out["rec"] + w.conditional_kl * out["conditional_kl"] + w.prior_kl * out["prior_kl"]
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


# --- the vectorised objectives against plain loops --------------------------------------------------------


def test_mmvae_loss_matches_a_loop_over_experts_and_decoders(small_batch):
    batch, labels = small_batch
    model = tiny("mmvae", beta=1.7).train()  # train: batch norm sees each decoder call's batch, as in this loop
    mods = model.modalities
    with torch.no_grad():
        torch.manual_seed(10)
        out = model.loss(batch, labels)
        experts = model.experts(batch, mods)
        torch.manual_seed(10)
        eps = torch.randn(len(mods), 6, model.latent_dim)
        total = 0.0
        for k, m in enumerate(mods):
            mu, lv = experts[m]
            z = mu + eps[k] * torch.exp(0.5 * lv)
            rec = sum(image_nll(batch[d], model.decoders[d](z), model.config.likelihood_scale) for d in mods)
            comps = [Normal(experts[e][0], torch.exp(0.5 * experts[e][1])).log_prob(z).sum(-1) for e in mods]
            log_mix = torch.logsumexp(torch.stack(comps), 0) - math.log(len(mods))
            kl = log_mix - Normal(0.0, 1.0).log_prob(z).sum(-1)
            total = total + (rec + 1.7 * kl).mean() / len(mods)
    assert out["loss"].item() == pytest.approx(float(total), rel=1e-5)


def test_mvae_loss_matches_a_loop_over_its_elbo_terms(small_batch):
    batch, labels = small_batch
    model = tiny("mvae", beta=0.6).train()  # batch norm per ELBO term's decoder call, as in this loop
    mods = model.modalities
    with torch.no_grad():
        torch.manual_seed(11)
        out = model.loss(batch, labels)
        experts = model.experts(batch, mods)
        torch.manual_seed(11)
        masks = elbo_masks(3)
        eps = torch.randn(len(masks) * 6, model.latent_dim).view(len(masks), 6, -1)
        total = 0.0
        for t, row in enumerate(masks):
            subset = frozenset(m for m, on in zip(mods, row.tolist(), strict=True) if on)
            mu, lv = model.fuse(experts, subset)  # PoE with the prior expert
            z = mu + eps[t] * torch.exp(0.5 * lv)
            rec = sum(image_nll(batch[m], model.decoders[m](z), model.config.likelihood_scale) for m in subset)
            total = total + (rec + 0.6 * kl_normal_standard(mu, lv)).mean()
    assert out["loss"].item() == pytest.approx(float(total), rel=1e-5)


def test_mopoe_kl_is_the_average_over_subset_posteriors(small_batch):
    batch, _ = small_batch
    model = tiny("mopoe").eval()
    mods = model.modalities
    with torch.no_grad():
        experts = model.experts(batch, mods)
        mus = torch.stack([experts[m][0] for m in mods])
        lvs = torch.stack([experts[m][1] for m in mods])
        got = model._subset_kl(mus, lvs)
        subsets = [frozenset(m for m, on in zip(mods, r.tolist(), strict=True) if on) for r in subset_masks(3)]
        expected = torch.stack([kl_normal_standard(*model.fuse(experts, s)) for s in subsets]).mean(0)
        full = frozenset(mods)
        ref_full = product_of_experts(
            torch.cat([mus, torch.zeros_like(mus[:1])]), torch.cat([lvs, torch.zeros_like(lvs[:1])])
        )
        pair = product_of_experts(mus[:2], lvs[:2])
    assert torch.allclose(got, expected, rtol=1e-5)
    assert torch.allclose(model.fuse(experts, full)[0], ref_full[0])  # the prior joins the full set
    assert torch.allclose(model.fuse(experts, frozenset(mods[:2]))[0], pair[0])  # and no other subset


def test_mmvaeplus_dreg_and_iwae_agree_in_value_and_decoder_gradient(small_batch):
    batch, labels = small_batch
    grads = {}
    for estimator in ("iwae", "dreg"):
        torch.manual_seed(12)
        model = tiny("mmvaeplus", estimator=estimator)
        torch.manual_seed(13)
        out = model.loss(batch, labels)
        out["loss"].backward()
        grads[estimator] = (
            out["loss"].item(),
            torch.cat([p.grad.flatten() for p in model.decoders.parameters()]),
            torch.cat([p.grad.flatten() for p in model.encoders.parameters()]),
        )
    (li, di, ei), (ld, dd, ed) = grads["iwae"], grads["dreg"]
    assert li == pytest.approx(ld, rel=1e-6)  # K = 1: the same bound
    assert torch.allclose(di, dd, rtol=1e-4, atol=1e-6)  # decoders: the same gradient
    assert not torch.allclose(ei, ed, rtol=1e-3)  # encoders: DReG drops the score-function term


def test_mmvaeplus_iwae_with_several_particles_is_finite(small_batch):
    batch, labels = small_batch
    for estimator in ("iwae", "dreg"):
        model = tiny("mmvaeplus", k=3, estimator=estimator)
        out = model.loss(batch, labels)
        out["loss"].backward()
        assert torch.isfinite(out["loss"])
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", BASELINES)
def test_many_queries_equal_single_queries_under_a_seed(name, small_batch):
    batch, _ = small_batch
    model = tiny(name)
    queries = [(frozenset({"m0"}), frozenset({"m1", "m2"})), (frozenset({"m1", "m2"}), frozenset({"m0"}))]
    seed_everything(3)
    many = model.sample_conditional_many(batch, queries)
    seed_everything(3)
    single = [model.sample_conditional(batch, g, t) for g, t in queries]
    for a, b in zip(many, single, strict=True):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["mvae", "mmvae", "mopoe", "mvtcae"])
def test_bad_configs_are_refused_with_the_field_named(name):
    with pytest.raises(ValueError, match="width"):
        tiny(name, width=0.0)


def test_mopoe_mixture_conditional_samples_subsets_of_the_given_modalities(small_batch):
    batch, _ = small_batch
    model = tiny("mopoe", conditional="mixture")
    out = model.sample_conditional(batch, frozenset({"m0", "m1"}), frozenset({"m2"}))
    assert out["m2"].shape == (6, 3, 28, 28)
    with pytest.raises(ValueError, match="conditional"):
        tiny("mopoe", conditional="poe")


# --- learning -----------------------------------------------------------------------------------------------

# Budgets (width 0.125, batch 4, lr 5e-3, constant) found by measuring: with seed 0 each model passes
# with a margin ≥ 0.1 (measured minima at commit 7a4110b — per-stage RNG seeding, channels-last nets, per-row
# decoding: MVAE 0.715, MMVAE 0.90, MoPoE 0.795 at 600 steps, MVTCAE 0.91, MMVAE+ 0.895). MoPoE at 400
# steps passed at commit 55d9832 (0.78) and failed once its noise stream changed (0.58): 400 was too close to
# where it learns, so it has 600 (seeds 1 and 2 at 600: 0.87, 0.895). The slow test checks seeds 1, 2. The paper's β
# (1–5) with the paper's likelihood scale needs thousands of steps before the class (here: the square's
# position) enters the latent, so the likelihood is sharpened (σ = 0.25) and β chosen for speed (MVTCAE's
# larger β aligns its unimodal experts sooner). MMVAE+ uses a Gaussian likelihood here: with its Laplace
# likelihood the per-pixel median of the small, rare square is the background, and the posterior
# collapsed completely within 800 steps (z scale 1.0, location spread 0.004).
LEARN_COMMON = {"width": 0.125, "batch_size": 4, "lr": 5e-3, "likelihood_scale": 0.25}
LEARN = {
    "mvae": {"beta": 0.25, "steps": 400},
    "mmvae": {"beta": 0.1, "steps": 400},
    "mopoe": {"beta": 0.1, "steps": 600},
    "mvtcae": {"beta": 1.0, "steps": 400},
    "mmvaeplus": {"beta": 0.5, "likelihood": "gaussian", "steps": 250},
}


def learned_coherence(name: str, seed: int, steps: int, data, classifier, workdir) -> dict[str, float]:
    """Leave-one-out coherence on 200 test tuples after training ``name`` through the trainer."""
    from mmbench.training.trainer import TrainerOptions, train_model

    train, test = data
    seed_everything(seed)
    model = registry.build(name, train.modalities, {**LEARN_COMMON, **LEARN[name], "steps": steps})
    train_model(model, train, None, TrainerOptions(workdir=workdir, config_hash=name, seed=seed, quiet=True))
    seed_everything(1)
    return leave_one_out_coherence(model, test.subset(200), classifier)


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_learns_cross_modal_generation(name, patterns3, patterns_classifier, tmp_path):
    coherence = learned_coherence(name, 0, LEARN[name]["steps"], patterns3, patterns_classifier, tmp_path)
    assert min(coherence.values()) >= 0.6, coherence


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name", BASELINES)
def test_baseline_learns_with_other_seeds(name, seed, patterns3, patterns_classifier, tmp_path):
    coherence = learned_coherence(name, seed, 600, patterns3, patterns_classifier, tmp_path)
    assert min(coherence.values()) >= 0.6, coherence


@pytest.mark.parametrize("build", ["residual", "mmvaeplus"])
def test_channels_last_nets_compute_what_contiguous_ones_do(build):
    """The shared nets run their convolutions channels-last (a CPU speed-up): the same function as the
    same weights in ordinary layout (forward and gradients), padded 28 -> 32 and cropped back, NCHW out."""
    import copy

    from baselines.mmvaeplus.nets import Decoder, Encoder
    from mmbench.nets.residual import ResDecoder, ResEncoder

    torch.manual_seed(0)
    if build == "residual":
        enc, dec = ResEncoder(8, 0.125), ResDecoder(8, 0.125)
    else:
        enc, dec = Encoder(4, 4, 0.125), Decoder(8, 0.125)
    nets = torch.nn.ModuleList([enc, dec]).eval()
    plain = copy.deepcopy(nets).to(memory_format=torch.contiguous_format)
    assert any(p.dim() == 4 and not p.is_contiguous() for p in nets.parameters())
    assert all(p.is_contiguous() for p in plain.parameters())
    x = torch.rand(5, 3, 28, 28)
    outputs = []
    for e, d in (nets, plain):
        code = e(x)[0] if build == "residual" else torch.cat([e(x)[0], e(x)[2]], dim=1)
        image = d(code)
        image.square().sum().backward()
        outputs.append((code, image))
    (code, image), (code_ref, image_ref) = outputs
    assert image.shape == (5, 3, 28, 28) and image.is_contiguous()
    torch.testing.assert_close(code, code_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(image, image_ref, rtol=1e-4, atol=1e-5)
    for p, q in zip(nets.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-5)


def test_decode_rows_calls_the_decoder_once_per_row():
    """In train mode a BatchNorm normalises each call's batch: rows decoded one call each (as the reference
    MMVAE/MVAE code does) differ from one call on the stack, and equal separate calls."""
    from baselines.common import decode_rows
    from mmbench.nets.residual import ResDecoder

    torch.manual_seed(0)
    decoder = ResDecoder(8, 0.125).train()
    latents = torch.randn(3, 5, 8) * torch.tensor([1.0, 3.0, 0.2]).view(3, 1, 1)  # rows with different statistics
    rows = decode_rows(decoder, latents)
    assert rows.shape == (3, 5, 3, 28, 28)
    for t in range(3):
        torch.testing.assert_close(rows[t], decoder(latents[t]))
    stacked = decoder(latents.reshape(15, 8)).view(3, 5, 3, 28, 28)
    assert not torch.allclose(rows, stacked, atol=1e-4)



def test_mopoe_mixture_conditional_draws_each_given_subset_uniformly():
    """Given {m0, m1}, the paper's conditional draws the component {m0}, {m1} or {m0, m1} (the PoE of its
    experts) with probability 1/3 each; experts at ±10 with tiny variance put those components at +10, −10, 0."""
    model = tiny("mopoe")
    assert model.config.conditional == "mixture"  # the polymnist suites' (the paper's) choice
    n, d = 3000, 2
    tight = torch.full((n, d), -12.0)
    experts = {"m0": (torch.full((n, d), 10.0), tight), "m1": (torch.full((n, d), -10.0), tight)}
    torch.manual_seed(0)
    z = model.posterior_sample(experts, frozenset({"m0", "m1"}))[:, 0]
    shares = [float((z - c).abs().lt(0.5).float().mean()) for c in (10.0, -10.0, 0.0)]
    assert sum(shares) == pytest.approx(1.0)
    for share in shares:
        assert abs(share - 1 / 3) < 4 * (2 / 9 / n) ** 0.5, shares
    poe = tiny("mopoe", conditional="subset_poe").posterior_sample(experts, frozenset({"m0", "m1"}))[:, 0]
    assert poe.abs().max() < 0.5, "the product of both experts sits at their precision-weighted mean, 0"
