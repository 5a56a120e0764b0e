"""SBM (and its MLD sibling): networks, stages and reuse keys, guidance, masked training, batched
conditional sampling, and learning on the synthetic pattern data."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
import torch

from latentdiff.sampling import nfe_of
from latentdiff.sde import VPSDE
from mmbench import registry
from mmbench.contract import Capability
from mmbench.data.synthetic import make_patterns
from mmbench.testing import leave_one_out_coherence
from mmbench.training.artifacts import ArtifactStore
from mmbench.training.trainer import TrainerOptions, train_model
from sbm.contrastive import clip_loss, condition_from, random_given
from sbm.energy import PairEnergy, nce_loss, random_pairs
from sbm.guidance import EnergyGuidance
from sbm.model import SBMConfig
from sbm.unet import UNet

SBM_NAMES = ["sbm-vae", "sbm-rae", "sbm-vae-c", "sbm-rae-c", "sbm-vae-t", "sbm-rae-t"]
MODALITIES = ("m0", "m1", "m2")

# Small enough for a 2-core CPU, large enough to learn the pattern data.
TINY = {
    "width": 0.125, "latent_dim": 16, "dim": 8, "dim_mults": (1,), "attn_heads": 2, "attn_dim_head": 8,
    "ae_steps": 2, "score_steps": 2, "energy_steps": 2, "aux_steps": 2, "ae_batch_size": 16,
    "score_batch_size": 16, "energy_batch_size": 16, "aux_batch_size": 16, "energy_width": 16,
    "aux_width": 0.125, "aux_proj_dim": 16, "sampler_steps": 3,
}


def tiny(name: str, **overrides):
    base = dict(TINY)
    if name == "mld":
        base = {"width": 0.125, "latent_dim": 16, "dim": 16, "time_dim": 16, "groups": 4, "ae_steps": 2,
                "score_steps": 2, "ae_batch_size": 16, "score_batch_size": 16, "sampler_steps": 3}
    return registry.build(name, MODALITIES, {**base, **overrides})


def batch_of(n: int = 4):
    data = make_patterns(3, n=max(n, 10), seed=5)
    images, labels = data.batch(range(n))
    return images, labels


# --- networks ---------------------------------------------------------------------------------------
def test_unet_shapes_conditioning_and_errors():
    net = UNet(3, dim=8, dim_mults=(1, 2), cond_dim=5, heads=2, dim_head=4)
    x, t = torch.randn(2, 3, 8, 8), torch.rand(2)
    assert net(x, t, torch.zeros(2, 5)).shape == x.shape
    cond = torch.randn(2, 5)
    assert not torch.allclose(net(x, t, cond), net(x, t, torch.zeros(2, 5)))
    with pytest.raises(ValueError, match="pass a condition"):
        net(x, t)
    with pytest.raises(ValueError, match="not divisible"):
        UNet(3, dim=8, dim_mults=(1, 2, 2, 2), heads=2, dim_head=4)(torch.randn(1, 3, 4, 4), torch.rand(1))


def test_paper_defaults_and_auto_rules():
    model10 = registry.build("sbm-vae", [f"m{i}" for i in range(10)], {"width": 0.125})
    model3 = registry.build("sbm-rae", MODALITIES, {"width": 0.125})
    assert (model10.sde.beta_min, model10.sde.beta_max) == (0.1, 5.0)  # Table 4, 10 modalities
    assert (model3.sde.beta_min, model3.sde.beta_max) == (1.0, 5.0)  # Table 4, fewer
    assert model10.score_net.final_conv.in_channels == 128 and model3.score_net.final_conv.in_channels == 64
    cfg = model3.config
    assert (cfg.score_lr, cfg.score_batch_size, cfg.sampler_steps, cfg.snr) == (2e-4, 256, 100, 0.16)
    assert cfg.energy_gamma == 1.0  # per sample, measured (docs/sbm.md); the paper's scale is 1000/256
    assert cfg.vae_beta == 0.1 and cfg.rae_l2 == 1e-5 and cfg.rae_noise_var == 1e-4  # sbmae: z + 0.01·ε
    assert nfe_of(cfg.sampler, cfg.sampler_steps, cfg.corrector_steps) == 200


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="perfect square"):
        tiny("sbm-vae", latent_dim=15)
    with pytest.raises(ValueError, match="guidance"):
        tiny("sbm-vae", guidance="classifier")
    with pytest.raises(KeyError, match="unknown sampler"):
        tiny("sbm-vae", sampler="ddim")


# --- stages and reuse -------------------------------------------------------------------------------
def _ae_keys(model) -> dict[str, str]:
    return {s.name: s.reuse_key for s in model.stages() if s.name.startswith("ae/")}


def test_stage_order_and_names():
    assert [s.name for s in tiny("sbm-vae").stages()] == ["ae/m0", "ae/m1", "ae/m2", "score"]
    assert [s.name for s in tiny("sbm-rae-c").stages()][-2:] == ["score", "energy"]
    assert [s.name for s in tiny("sbm-vae-t").stages()][-2:] == ["aux", "score"]
    assert [s.name for s in tiny("mld").stages()] == ["ae/m0", "ae/m1", "ae/m2", "score"]


def test_autoencoders_are_shared_exactly_where_they_should_be():
    data = {"data_id": "abc", "seed": 1}
    vae = {_ae_keys(tiny(n, **data))["ae/m0"] for n in ("sbm-vae", "sbm-vae-c", "sbm-vae-t")}
    rae = {_ae_keys(tiny(n, **data))["ae/m0"] for n in ("sbm-rae", "sbm-rae-c", "sbm-rae-t")}
    assert len(vae) == 1 and len(rae) == 1 and vae != rae
    # MLD reuses SBM-RAE's autoencoders when their shared fields agree
    sbm_rae = tiny("sbm-rae", **data, energy_gamma=5.0, dim=16)
    mld = tiny("mld", **data)
    assert _ae_keys(mld) == _ae_keys(sbm_rae)
    keys = _ae_keys(tiny("sbm-rae", **data))
    assert len(set(keys.values())) == 3  # one per modality
    # ...and a 2-modality model over the same data reuses the first two
    two = registry.build("sbm-rae", ("m0", "m1"), {**TINY, **data})
    assert _ae_keys(two) == {k: v for k, v in keys.items() if k != "ae/m2"}
    for change in ({"seed": 2}, {"data_id": "xyz"}, {"width": 0.25}, {"rae_noise_var": 0.02}, {"ae_steps": 3}):
        assert _ae_keys(tiny("sbm-rae", **{**data, **change}))["ae/m0"] not in rae
    assert _ae_keys(tiny("sbm-vae", **data, rae_noise_var=0.5)) == _ae_keys(tiny("sbm-vae", **data))
    assert _ae_keys(tiny("sbm-vae", seed=1))["ae/m0"] is None  # unnamed data: never shared


def _score_key(model):
    return next(s.reuse_key for s in model.stages() if s.name == "score")


def test_the_score_stage_is_shared_by_sbm_and_sbm_c_only():
    data = {"data_id": "abc", "seed": 1}
    key = _score_key(tiny("sbm-vae", **data))
    assert key and _score_key(tiny("sbm-vae-c", **data)) == key
    assert _score_key(tiny("sbm-vae", **data, sampler_steps=7, energy_gamma=3.0)) == key  # sampling only
    assert _score_key(tiny("sbm-vae-t", **data)) is None  # a conditioned score net
    assert _score_key(tiny("sbm-rae", **data)) != key
    for change in ({"seed": 2}, {"score_steps": 3}, {"dim": 16}, {"ae_steps": 3}, {"missing_rate": 0.2}):
        assert _score_key(tiny("sbm-vae", **{**data, **change})) != key
    assert _score_key(tiny("sbm-vae", seed=1)) is None  # unnamed data: never shared


def test_sbm_c_loads_the_score_net_it_would_have_trained(tmp_path: Path):
    """With a store that already holds SBM-VAE's stages, SBM-VAE-C trains only its energy model, and the
    score net it loads equals the one it trains in a fresh store (per-stage seeding and initialisation)."""
    data = make_patterns(3, n=32, seed=0)

    def train(name: str, store: ArtifactStore, workdir: str):
        torch.manual_seed(0)
        model = tiny(name, data_id=data.data_hash, score_steps=3)
        options = TrainerOptions(workdir=tmp_path / workdir, config_hash=name, quiet=True, artifacts=store)
        return model, train_model(model, data, None, options)

    shared = ArtifactStore(tmp_path / "shared")
    plain, _ = train("sbm-vae", shared, "plain")
    loaded, reports = train("sbm-vae-c", shared, "c-shared")
    assert {r.name for r in reports if r.reused} == {"ae/m0", "ae/m1", "ae/m2", "score"}
    alone, reports = train("sbm-vae-c", ArtifactStore(tmp_path / "fresh"), "c-alone")
    assert not any(r.reused for r in reports)
    for a, b, c in zip(loaded.score_net.state_dict().values(), alone.score_net.state_dict().values(),
                       plain.score_net.state_dict().values(), strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    for a, b in zip(loaded.energy.state_dict().values(), alone.energy.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def _train_tiny(name: str, data, workdir: Path, store: ArtifactStore | None = None, rng_seed: int = 0):
    torch.manual_seed(rng_seed)  # the global stream at construction: the stages must not depend on it
    model = tiny(name, data_id=data.data_hash, score_steps=3, aux_steps=3, energy_steps=3)
    options = TrainerOptions(workdir=workdir, config_hash=name, quiet=True, artifacts=store)
    return model, train_model(model, data, None, options)


def test_sbm_rae_t_loads_the_contrastive_encoders_it_would_have_trained(tmp_path: Path):
    """SBM-VAE-T and SBM-RAE-T share one contrastive-encoder stage (its key names neither family), so the
    stage must not depend on what the model built before it or on the global random stream: loaded from the
    other family's run or trained alone in a fresh store, the encoders are the same (else the numbers depend on
    which row ran first)."""
    data = make_patterns(3, n=32, seed=0)
    shared = ArtifactStore(tmp_path / "shared")
    _train_tiny("sbm-vae-t", data, tmp_path / "vae", shared, rng_seed=1)
    loaded, reports = _train_tiny("sbm-rae-t", data, tmp_path / "rae-shared", shared)
    assert "aux" in {r.name for r in reports if r.reused}
    alone, _ = _train_tiny("sbm-rae-t", data, tmp_path / "rae-alone", ArtifactStore(tmp_path / "fresh"))
    for a, b in zip(loaded.aux.state_dict().values(), alone.aux.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_energy_model_does_not_depend_on_the_global_random_stream(tmp_path: Path):
    """-C's energy stage starts from (seed, "energy") as the score stage starts from (seed, "score"): the
    same seed trains the same energy model whatever the global stream held when the model was built."""
    data = make_patterns(3, n=32, seed=0)
    first, _ = _train_tiny("sbm-vae-c", data, tmp_path / "a", rng_seed=0)
    second, _ = _train_tiny("sbm-vae-c", data, tmp_path / "b", rng_seed=1)
    for a, b in zip(first.energy.state_dict().values(), second.energy.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# --- energy-based guidance --------------------------------------------------------------------------
CENTRES = torch.randn(10, 4, generator=torch.Generator().manual_seed(0)) * 2
OFFSETS = torch.randn(6, 4, generator=torch.Generator().manual_seed(1)) * 4  # each modality's own region


def _paired_latents(n: int, m: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """``m`` 'modalities' whose latents share a class centre (coherent tuples agree) and sit in regions of
    their own (an offset per modality), so a latent also tells which modality it is."""
    labels = torch.randint(10, (n,))
    z = CENTRES[labels][:, None, :] + OFFSETS[:m] + 0.3 * torch.randn(n, m, 4)
    return z, torch.ones(n, m, dtype=torch.bool)


def test_energy_prefers_positive_pairs_and_guidance_lowers_it():
    """Trained by NCE on six modalities, the energy separates coherent pairs from incoherent pairs *of the
    same modalities* (Eq. 7's negatives): negatives drawn from other modalities would teach it modality
    identity instead, and this gap would stay small."""
    torch.manual_seed(0)
    sde = VPSDE(1.0, 5.0)
    energy = PairEnergy(4, 6, width=64)
    optimizer = torch.optim.Adam(energy.parameters(), lr=2e-3)
    for _ in range(300):
        z, present = _paired_latents(128, 6)
        loss = nce_loss(energy, sde, z, present)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    z, _ = _paired_latents(2000, 6)
    t = torch.full((2000,), 0.05)
    a, b = torch.zeros(2000, dtype=torch.long), torch.ones(2000, dtype=torch.long)
    with torch.no_grad():
        positive = energy(z[:, 0], z[:, 1], t, a, b).mean()
        shuffled = energy(z[:, 0], z[torch.randperm(2000), 1], t, a, b).mean()
    assert positive < shuffled - 1.0
    z = z[:, :3]  # guidance below on three of them

    # one guidance step on the unobserved modality lowers its energy with the observed one
    observed = torch.tensor([[True, False, False]]).expand(2000, 3)
    guided = EnergyGuidance(lambda x, tt: torch.zeros_like(x), energy, observed, gamma=1.0)
    x = z.clone()
    x[:, 1:] = z[torch.randperm(2000), 1:]  # incoherent start for modalities 1 and 2
    step = guided(x, t)
    assert torch.all(step[:, 0] == 0), "observed modality untouched"
    moved = (step[:, 1:].abs().sum(-1) > 0)
    assert torch.all(moved.sum(1) == 1), "exactly one unobserved modality guided per sample per call"
    x_new = x + 0.01 * step
    with torch.no_grad():
        before = torch.stack([energy(x[:, 0], x[:, k], t, a, torch.full_like(b, k)) for k in (1, 2)], 1)
        after = torch.stack([energy(x_new[:, 0], x_new[:, k], t, a, torch.full_like(b, k)) for k in (1, 2)], 1)
    assert (after - before)[moved].mean() < 0


def test_random_pairs_are_distinct_present_modalities():
    torch.manual_seed(0)
    present = torch.rand(500, 4) < 0.6
    a, b, valid = random_pairs(present)
    rows = torch.arange(500)[valid]
    assert torch.all(a[valid] != b[valid])
    assert torch.all(present[rows, a[valid]]) and torch.all(present[rows, b[valid]])
    assert torch.equal(valid, present.sum(1) >= 2)


def test_pair_energy_is_sbmaes_mlp_written_out():
    """By default six 128-wide softplus layers on [z_a, z_b, sinusoids of 1000·t, emb(a), emb(b)], the input
    joined again at layer 5 (sbmae's architecture), recomputed here with the module's own weights; the skip
    may sit at any layer from 2 to the last."""
    torch.manual_seed(0)
    energy = PairEnergy(4, 3)
    in_dim = 2 * 4 + 3 * 32
    shapes = [(layer.in_features, layer.out_features) for layer in energy.hidden]
    assert shapes == [(in_dim, 128), (128, 128), (128, 128), (128, 128), (128 + in_dim, 128), (128, 128)]
    z_a, z_b, t = torch.randn(5, 4), torch.randn(5, 4), torch.rand(5)
    a, b = torch.tensor([0, 1, 2, 0, 1]), torch.tensor([1, 2, 0, 2, 0])
    k = torch.arange(16, dtype=torch.float32)
    angles = 1000.0 * t[:, None] * torch.exp(-math.log(10000.0) * k / 15)[None, :]
    x = torch.cat([z_a, z_b, angles.sin(), angles.cos(), energy.modality.weight[a], energy.modality.weight[b]], 1)
    h = x
    for i, layer in enumerate(energy.hidden, start=1):
        inputs = torch.cat([h, x], 1) if i == 5 else h
        h = torch.nn.functional.softplus(inputs @ layer.weight.T + layer.bias)
    torch.testing.assert_close(energy(z_a, z_b, t, a, b), (h @ energy.out.weight.T + energy.out.bias)[:, 0])
    for skip_at in (2, 4):
        assert len(PairEnergy(4, 3, width=8, layers=4, skip_at=skip_at)(z_a, z_b, t, a, b)) == 5
    for skip_at in (1, 5):
        with pytest.raises(ValueError, match=rf"skip_at must lie in \[2, layers=4\], got {skip_at}"):
            PairEnergy(4, 3, width=8, layers=4, skip_at=skip_at)


class _RecordingEnergy(torch.nn.Module):
    """A closed-form energy of its inputs that records every call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Tensor, ...]] = []

    def forward(self, z_a, z_b, t, a, b):
        self.calls.append((z_a, z_b, t, a, b))
        return _recorded_energy(z_a, z_b, t, a, b)


def _recorded_energy(z_a, z_b, t, a, b):
    return (z_a * z_b).sum(1) / 1000 + t - 0.1 * a + 0.05 * b


def test_nce_loss_is_eq7_on_its_pairs_partners_and_gaussian_negatives():
    """Eq. 7 recomputed from what the energy was called with: latent (tuple i, modality k) holds 10·i + k and
    an SDE of tiny β perturbs it by ~1e-4, so each call's inputs say which tuple and modality they came from.
    Positives are two present modalities of each tuple with two; the shuffled negative is modality b_i of a
    permuted tuple, counted only where that tuple has it; the Gaussian negative is N(0, I); half weight each."""
    torch.manual_seed(0)
    n, m = 40, 4
    codes = 10.0 * torch.arange(n)[:, None] + torch.arange(m)[None, :]
    z = codes[:, :, None].expand(n, m, 3).clone()
    present = torch.rand(n, m) < 0.5
    sde = VPSDE(1e-8, 1e-8)
    energy = _RecordingEnergy()
    out = nce_loss(energy, sde, z, present, eps=0.2)
    (za, zb, t, a, b), (za2, zsh, t2, a2, b2), (za3, zg, t3, a3, b3) = energy.calls
    rows = torch.arange(n)[present.sum(1) >= 2]
    code_a, code_b, code_sh = (v.mean(1).round().long() for v in (za, zb, zsh))
    assert torch.equal(code_a // 10, rows) and torch.equal(code_b // 10, rows)
    assert torch.equal(code_a % 10, a) and torch.equal(code_b % 10, b) and torch.all(a != b)
    assert torch.all(present[rows, a]) and torch.all(present[rows, b])
    for x, y in ((za2, za), (za3, za), (t2, t), (t3, t), (a2, a), (a3, a), (b2, b), (b3, b)):
        assert torch.equal(x, y)
    assert torch.all((t >= 0.2) & (t <= 1.0))
    partner = code_sh // 10
    assert torch.equal(code_sh % 10, b) and torch.equal(partner.sort().values, rows)
    assert zg.abs().max() < 5 and 0.6 < zg.std() < 1.5  # fresh N(0, I), not latents
    usable = present[partner, b]
    assert usable.any() and not usable.all()
    e_pos, e_sh, e_g = (_recorded_energy(*call) for call in energy.calls)
    softplus = torch.nn.functional.softplus
    expected = softplus(e_pos).mean() + 0.5 * (softplus(-e_sh[usable]).mean() + softplus(-e_g).mean())
    torch.testing.assert_close(out["loss"], expected)
    torch.testing.assert_close(out["energy_pos"], e_pos.mean())
    torch.testing.assert_close(out["energy_shuffled"], e_sh[usable].mean())
    torch.testing.assert_close(out["energy_gaussian"], e_g.mean())
    # two tuples are enough; when they swap, neither has the other's modalities and no shuffled term is left
    two = torch.tensor([[True, True, False, False], [False, False, True, True], [True, False, False, False]])
    swapped = 0
    for _ in range(8):
        energy = _RecordingEnergy()
        out = nce_loss(energy, sde, z[:3], two)
        (_, _, _, _, b), (_, zsh, *_), _ = energy.calls
        e_pos, e_sh, e_g = (_recorded_energy(*call) for call in energy.calls)
        usable = two[zsh.mean(1).round().long() // 10, b]
        swapped += int(not usable.any())
        shuffled_term = softplus(-e_sh[usable]).mean() if usable.any() else 0.0
        torch.testing.assert_close(out["loss"], softplus(e_pos).mean() + 0.5 * (shuffled_term + softplus(-e_g).mean()))
    assert 0 < swapped < 8
    with pytest.raises(ValueError, match="^NCE needs at least two tuples with two present modalities in the batch$"):
        nce_loss(_RecordingEnergy(), sde, z[:3], two & torch.tensor([True, False, True])[:, None])


# --- contrastive guidance ---------------------------------------------------------------------------
def test_clip_loss_rewards_aligned_embeddings_and_ignores_absent_items():
    torch.manual_seed(0)
    base = torch.nn.functional.normalize(torch.randn(32, 8), dim=-1)
    aligned = base[:, None, :].expand(32, 3, 8)
    scrambled = torch.stack([base, base[torch.randperm(32)], base[torch.randperm(32)]], 1)
    present = torch.ones(32, 3, dtype=torch.bool)
    scale = torch.tensor(2.0)
    assert clip_loss(aligned, present, scale) < clip_loss(scrambled, present, scale) - 1.0
    partly = present.clone()
    partly[:5, 2] = False
    changed = aligned.clone()
    changed[:5, 2] = torch.randn(5, 8)  # content of absent items must not matter
    torch.testing.assert_close(clip_loss(aligned, partly, scale), clip_loss(changed, partly, scale))


def test_condition_is_the_mean_of_given_embeddings_and_zero_when_nothing_is_given():
    emb = torch.randn(2, 3, 4)
    given = torch.tensor([[True, False, True], [False, False, False]])
    cond = condition_from(emb, given)
    torch.testing.assert_close(cond[0], (emb[0, 0] + emb[0, 2]) / 2)
    assert torch.all(cond[1] == 0)
    torch.manual_seed(0)
    present = torch.ones(4000, 3, dtype=torch.bool)
    subsets = random_given(present, null_prob=0.1)
    assert (subsets.sum(1) == 0).float().mean().item() == pytest.approx(0.1, abs=0.02)
    sizes = subsets.sum(1)[subsets.any(1)]
    for k in (1, 2, 3):
        assert (sizes == k).float().mean().item() == pytest.approx(1 / 3, abs=0.04)


# --- training with missing modalities ------------------------------------------------------------
@pytest.mark.parametrize("name", ["sbm-vae", "sbm-rae-t"])
def test_missing_modalities_get_no_gradient(name):
    """A missing modality is replaced by noise and masked out of the loss [paper A.10.1]: its latent gets
    exactly zero gradient, present ones do not."""
    torch.manual_seed(0)
    model = tiny(name, missing_rate=0.4)
    model.eval()
    model._prepare_cache(lambda: iter([batch_of(12)]))
    cache = model.cache
    assert cache.presence.any(1).all() and not cache.presence.all()
    cache.mu.requires_grad_(True)
    cache.draw = lambda n: torch.arange(len(cache))  # every tuple in the batch
    model.score_net.train()
    model._score_loss({}, torch.zeros(0))["loss"].backward()
    grad = cache.mu.grad.abs().sum(-1)
    assert torch.all(grad[~cache.presence] == 0)
    assert torch.all(grad[cache.presence] > 0)


# --- batched conditional sampling -------------------------------------------------------------------
class _ZeroPrior(VPSDE):
    def prior_sample(self, shape, device="cpu"):
        return torch.zeros(*shape, device=device)


def test_leave_one_out_queries_run_in_one_sampler_pass():
    torch.manual_seed(0)
    model = tiny("sbm-vae-c", sampler_steps=4, corrector_steps=1)
    calls = []
    model.score_net.register_forward_hook(lambda *_: calls.append(1))
    images, _ = batch_of(5)
    queries = [(frozenset(MODALITIES) - {m}, frozenset({m})) for m in MODALITIES]
    out = model.sample_conditional_many(images, queries)
    assert len(calls) == model.last_nfe == nfe_of("pc", 4, 1) == 8  # one pass for all three queries
    assert [set(o) for o in out] == [{m} for m in MODALITIES]
    assert all(o[m].shape == (5, 3, 28, 28) for o, (_, t) in zip(out, queries, strict=True) for m in t)


@pytest.mark.parametrize("name", ["sbm-rae-t", "mld"])
def test_batched_queries_equal_separate_queries(name):
    """With a deterministic sampler (ODE, noise-free re-imposition, fixed start) a query answered inside a
    batch of queries is exactly the query answered alone."""
    torch.manual_seed(0)
    overrides = {"sampler": "ode", "sampler_steps": 3}
    if name != "mld":
        overrides["reimpose"] = "sbmae"
    model = tiny(name, **overrides)
    model.sde = _ZeroPrior(model.sde.beta_min, model.sde.beta_max)
    images, _ = batch_of(3)
    queries = [(frozenset({"m0"}), frozenset({"m1", "m2"})), (frozenset({"m1", "m2"}), frozenset({"m0"}))]
    together = model.sample_conditional_many(images, queries)
    for (given, targets), joint in zip(queries, together, strict=True):
        alone = model.sample_conditional(images, given, targets)
        for m in targets:
            torch.testing.assert_close(joint[m], alone[m])


# --- the contract -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sbm-vae-c", "sbm-rae-t", "mld"])
def test_capabilities_determinism_and_state(name):
    model = tiny(name)
    model.train()
    assert all(model.has(c) for c in Capability)
    images, _ = batch_of(4)
    given = frozenset({"m0", "m2"})
    outputs = []
    for _ in range(2):
        torch.manual_seed(7)
        outputs.append(model.sample_conditional(images, given)["m1"])
    torch.testing.assert_close(outputs[0], outputs[1])
    assert all(m.training for m in model.modules()), "sampling leaves train mode as it was"
    z = model.encode(images, given)
    assert z.shape == (4, 2 * 16)
    decoded = model.decode(z, given)
    assert set(decoded) == set(given) and decoded["m0"].min() >= 0 and decoded["m0"].max() <= 1
    assert model.infer_latent(images, frozenset({"m0"}), "m1").shape == (4, 16)
    with pytest.raises(ValueError, match="decode expects"):
        model.decode(z, frozenset({"m1"}))
    assert set(model.sample_unconditional(2)) == set(MODALITIES)


def test_observed_latents_come_back_unchanged():
    torch.manual_seed(0)
    model = tiny("sbm-rae")
    images, _ = batch_of(4)
    with torch.no_grad():
        known = model.encode_latents(images, {"m0"})
        z = model._generate(known, torch.tensor([[True, False, False]] * 4), None)
    torch.testing.assert_close(z[:, 0], known[:, 0])


@pytest.mark.parametrize("name", ["sbm-rae-c", "sbm-vae-t", "mld"])
def test_trains_validates_and_resumes_through_the_trainer(name, tmp_path: Path):
    """Every stage runs under the harness's trainer, validation losses are finite, reused stages load."""
    data = make_patterns(3, n=32, seed=0)
    val = make_patterns(3, n=16, seed=1)
    seen: list[tuple[str, dict[str, float]]] = []
    store = ArtifactStore(tmp_path / "artifacts")

    def run(workdir: str):
        torch.manual_seed(0)
        model = tiny(name, data_id=data.data_hash)
        options = TrainerOptions(workdir=tmp_path / workdir, config_hash=name, quiet=True, artifacts=store,
                                 callback=lambda stage, step, values: seen.append((stage, values)))
        return model, train_model(model, data, val, options)

    model, reports = run("first")
    assert [r.name for r in reports] == [s.name for s in model.stages()]
    val_losses = [v["val/loss"] for _, v in seen if "val/loss" in v]
    assert val_losses and all(torch.isfinite(torch.tensor(val_losses)))
    _, again = run("second")
    reused = {r.name for r in again if r.reused}
    assert {n for n in reused if n.startswith("ae/")} == {"ae/m0", "ae/m1", "ae/m2"}
    assert ("aux" in reused) == (name == "sbm-vae-t")


# --- learning on the pattern data -----------------------------------------------------------------------
LEARN = {"width": 0.125, "latent_dim": 16, "ae_batch_size": 32, "ae_lr": 3e-3}
LEARN_AE_STEPS = {"vae": 400, "rae": 250}  # per family, so every model of a family shares its autoencoders
LEARN_SBM = {
    "dim": 8, "dim_mults": (1,), "attn_heads": 2, "attn_dim_head": 8, "score_steps": 300, "score_batch_size": 64,
    "score_lr": 1e-3, "sampler_steps": 50, "energy_steps": 2000, "energy_batch_size": 64, "energy_lr": 1e-3,
    "energy_width": 64, "aux_steps": 150, "aux_batch_size": 64, "aux_width": 0.125, "aux_proj_dim": 64,
}
LEARN_MLD = {"dim": 128, "time_dim": 128, "groups": 8, "score_steps": 1000, "score_batch_size": 64,
             "score_lr": 1e-3, "sampler_steps": 50}


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory) -> ArtifactStore:
    """One artifact store for the module: each modality's VAE/RAE is trained once and reused."""
    return ArtifactStore(tmp_path_factory.mktemp("sbm_artifacts"))


@pytest.mark.parametrize("name", [*SBM_NAMES, "mld"])
def test_model_learns_the_pattern_data(name, patterns3, patterns_classifier, shared_store, tmp_path: Path):
    train, test = patterns3
    family = dict(registry.entry(name).defaults).get("family", "rae")  # MLD uses the RAEs
    specific = LEARN_SBM if registry.entry(name).target.startswith("sbm.") else LEARN_MLD
    overrides = {**LEARN, "ae_steps": LEARN_AE_STEPS[family], **specific, "data_id": train.data_hash}
    torch.manual_seed(0)
    model = registry.build(name, train.modalities, overrides)
    options = TrainerOptions(workdir=tmp_path, config_hash=name, quiet=True, artifacts=shared_store, model_name=name)
    train_model(model, train, None, options)
    assert model.cache is None, "the latent cache is released after training"
    torch.manual_seed(1)
    coherence = leave_one_out_coherence(model, test.subset(150), patterns_classifier, batch_size=150)
    assert min(coherence.values()) >= 0.6, coherence
    if name.endswith("-c"):
        _assert_guidance_lifts_coherence_given_one(model, test.subset(300), patterns_classifier)


def _coherence_given_first(model, data, classifier) -> float:
    """Mean coherence of the other modalities given the first one, with fixed sampler noise."""
    batch, labels = data.batch(range(len(data)), data.modalities)
    given = frozenset(model.modalities[:1])
    torch.manual_seed(2)
    out = model.sample_conditional(batch, given)
    with torch.no_grad():
        return float(torch.stack([(classifier(out[m]).argmax(1) == labels).float().mean() for m in out]).mean())


def _assert_guidance_lifts_coherence_given_one(model, data, classifier) -> None:
    """The paper's finding (§4.1) at the shipped γ: energy guidance raises coherence given one observed
    modality above the same model unguided (same score net, same tuples, same noise). Measured on this data
    (benchmarks/bench_guidance.py --patterns 3, energy 2000 steps, 300 tuples) at γ = 1: SBM-VAE-C 0.520 →
    0.573, SBM-RAE-C 0.388 → 0.485; with the old NCE (other modalities' negatives) guidance hurt."""
    assert model.config.energy_gamma == SBMConfig().energy_gamma, "the shipped default"
    guided = _coherence_given_first(model, data, classifier)
    model.config = dataclasses.replace(model.config, energy_gamma=0.0)
    unguided = _coherence_given_first(model, data, classifier)
    assert guided > unguided + 0.02, (guided, unguided)


def test_guidance_strength_zero_is_plain_sbm():
    torch.manual_seed(0)
    model = tiny("sbm-vae-c", energy_gamma=0.0)
    plain = tiny("sbm-vae")
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("energy.")})
    images, _ = batch_of(3)
    torch.manual_seed(3)
    a = model.sample_conditional(images, frozenset({"m0"}))
    torch.manual_seed(3)
    b = plain.sample_conditional(images, frozenset({"m0"}))
    for m in a:
        torch.testing.assert_close(a[m], b[m])


class _QuadraticEnergy(torch.nn.Module):
    """E(z_a, z_b) = ½‖z_a − z_b‖², whose gradient in z_b is z_b − z_a (a closed form for the guidance)."""

    def forward(self, z_a, z_b, t, a, b):
        return 0.5 * (z_a - z_b).square().sum(1)


def test_guidance_strength_is_per_sample_and_independent_of_the_batch():
    from sbm.guidance import per_sample_gamma

    torch.manual_seed(0)
    x = torch.randn(16, 2, 4)
    observed = torch.tensor([[True, False]]).expand(16, 2)
    score = torch.randn(16, 2, 4)
    gamma = per_sample_gamma()  # the paper's EBM-scale 1000 at batch 256
    assert gamma == pytest.approx(3.90625)
    assert per_sample_gamma(2000.0) == pytest.approx(7.8125)  # Table 10's CelebAMask-HQ scale
    assert per_sample_gamma(1000.0, batch_size=1) == 1000.0  # a batch of one: the scale itself
    with pytest.raises(ValueError, match="batch_size must be positive, got 0"):
        per_sample_gamma(1000.0, batch_size=0)
    guided = EnergyGuidance(lambda z, t: score[: len(z)], _QuadraticEnergy(), observed, gamma)(x, torch.full((16,), 0.3))
    torch.testing.assert_close(guided[:, 1], score[:, 1] - gamma * (x[:, 1] - x[:, 0]))
    torch.testing.assert_close(guided[:, 0], score[:, 0])
    alone = EnergyGuidance(lambda z, t: score[:1], _QuadraticEnergy(), observed[:1], gamma)(x[:1], torch.full((1,), 0.3))
    torch.testing.assert_close(alone[0], guided[0])


def test_guidance_leaves_samples_with_nothing_or_everything_observed_and_checks_its_mask():
    """Only a sample with an observed and an unobserved modality has a pair to guide (Eq. 8); the others keep
    the plain score exactly. The mask must be a (B, M) bool tensor, and the error names what it got."""
    torch.manual_seed(0)
    observed = torch.tensor([[True, True, True], [False, False, False], [True, False, True], [False, True, False]])
    x, score = torch.randn(4, 3, 5), torch.randn(4, 3, 5)
    guided = EnergyGuidance(lambda z, t: score, _QuadraticEnergy(), observed, 2.0)(x, torch.full((4,), 0.3))
    torch.testing.assert_close(guided[:2], score[:2], rtol=0, atol=0)
    torch.testing.assert_close(guided[2, [0, 2]], score[2, [0, 2]], rtol=0, atol=0)
    # E = ½‖z_a − z_b‖²: b's score moves by −γ(z_b − z_a), a drawn among the row's observed, b its unobserved
    assert any(torch.allclose(guided[2, 1], score[2, 1] - 2.0 * (x[2, 1] - x[2, a])) for a in (0, 2))
    moved = [b for b in (0, 2) if not torch.equal(guided[3, b], score[3, b])]
    assert len(moved) == 1 and torch.equal(guided[3, 1], score[3, 1])
    torch.testing.assert_close(guided[3, moved[0]], score[3, moved[0]] - 2.0 * (x[3, moved[0]] - x[3, 1]))
    for bad in (observed.float(), observed[0], observed[None]):
        with pytest.raises(ValueError, match=rf"observed must be a \(B, M\) bool mask, got {bad.dtype} "
                                             rf"{re.escape(str(tuple(bad.shape)))}"):
            EnergyGuidance(lambda z, t: z, _QuadraticEnergy(), bad, 1.0)


# --- reuse keys follow everything that trains a stage (a key that misses a field loads a wrong stage) ----
def _stage_key(model, name: str) -> str:
    return next(s.reuse_key for s in model.stages() if s.name == name)


@pytest.mark.parametrize(("name", "stage", "changes"), [
    ("sbm-vae", "ae/m0", {"ae_lr": 5e-4, "ae_steps": 3, "ae_batch_size": 8, "latent_dim": 64, "width": 0.25,
                          "vae_beta": 0.5, "seed": 2, "data_id": "xyz"}),
    ("sbm-rae", "ae/m0", {"ae_lr": 5e-4, "rae_l2": 1e-4, "rae_noise_var": 0.02}),
    ("sbm-vae", "score", {"score_lr": 1e-4, "score_steps": 3, "score_batch_size": 8, "sde_eps": 1e-3,
                          "loss_weighting": "unit", "beta_min": 0.5, "beta_max": 10.0, "missing_rate": 0.2,
                          "dim": 16, "time_scale": 1000.0, "attn_heads": 1, "ae_lr": 5e-4, "seed": 2}),
    ("sbm-vae-t", "aux", {"aux_lr": 5e-4, "aux_steps": 3, "aux_batch_size": 8, "aux_width": 0.25,
                          "aux_proj_dim": 8, "missing_rate": 0.2, "seed": 2, "data_id": "xyz"}),
])
def test_every_field_that_trains_a_stage_changes_its_reuse_key(name, stage, changes):
    """Each stage's key changes with its learning rate (and every other field that determines its trained
    state): a job with another lr must train, not load a stage trained with a different one."""
    data = {"data_id": "abc", "seed": 1}
    base = _stage_key(tiny(name, **data), stage)
    assert base
    keys = {field: _stage_key(tiny(name, **{**data, field: value}), stage) for field, value in changes.items()}
    assert [f for f, key in keys.items() if key == base] == []
    assert len(set(keys.values())) == len(keys)
