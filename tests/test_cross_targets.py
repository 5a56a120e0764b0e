"""Sub-sampled cross reconstructions of MMVAE and MMVAE+ (``cross_targets``, ``baselines.cross_targets``).

The option must (a) compute the exact objective when every other target is kept, (b) estimate the exact
objective without bias and (c) its gradient too, (d) be off by default. Unbiasedness is checked with
paired draws: under one seed the exact loss and the sub-sampled one share every latent sample (the
targets are drawn last), so their difference isolates the draw of the targets; its mean over seeds must
be zero within a few standard errors computed from the draws.
"""

from __future__ import annotations

import math

import pytest
import torch

from baselines.cross_targets import cross_target_weights, sources_per_target
from mmbench import registry
from mmbench.data.synthetic import make_patterns

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

MODALITIES = ("m0", "m1", "m2")
TINY = {
    "mmvae": {"width": 0.125, "latent_per_modality": 4, "beta": 1.3},
    "mmvaeplus": {"width": 0.125, "shared_dim": 4, "private_dim": 4},
    "mmvaeplus-dreg": {"width": 0.125, "shared_dim": 4, "private_dim": 4, "estimator": "dreg"},
}
DRAWS = 80


def build(variant: str, **extra):
    torch.manual_seed(0)
    return registry.build(variant.split("-")[0], MODALITIES, {**TINY[variant], **extra}).train()


@pytest.fixture(scope="module")
def batch():
    data = make_patterns(len(MODALITIES), n=8, seed=4)
    return data.batch(range(5))


def loss_and_gradient(model, batch, seed: int) -> tuple[float, torch.Tensor]:
    """The loss under ``seed`` and its gradient projected on fixed directions (a few scalars)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = model.loss(*batch)["loss"]
    loss.backward()
    projections = []
    for group in (model.encoders, model.decoders):
        grad = torch.cat([p.grad.flatten() for p in group.parameters()])
        direction = torch.randn(grad.numel(), generator=torch.Generator().manual_seed(grad.numel()))
        projections.append(grad @ direction)
    last_decoder = list(model.decoders[MODALITIES[1]].parameters())[-1].grad.flatten()[0]
    return loss.item(), torch.stack([*projections, last_decoder])


# --- the draw -------------------------------------------------------------------------------------------


def test_weights_keep_the_own_target_and_k_others_weighted_m_minus_1_over_k():
    """Every source keeps k others and every target is kept by k sources (balanced), each cross term with
    probability k/(M−1), so every weight has mean 1."""
    torch.manual_seed(1)
    m, k = 6, 2
    total = torch.zeros(m, m)
    off_diagonal = ~torch.eye(m, dtype=torch.bool)
    for _ in range(3000):
        w = cross_target_weights(m, k)
        assert torch.equal(torch.diagonal(w), torch.ones(m))
        kept = (w > 0) & off_diagonal
        assert torch.equal(kept.sum(1), torch.full((m,), k))
        assert torch.equal(kept.sum(0), torch.full((m,), k))
        assert torch.allclose(w[kept], torch.tensor((m - 1) / k))
        total += w
    inclusion = (total / 3000)[off_diagonal]  # E[w] = 1 for every cross term
    spread = (m - 1) / k * math.sqrt(k / (m - 1) * (1 - k / (m - 1)) / 3000)
    assert (inclusion - 1).abs().max() < 4.5 * spread


def test_k_zero_is_every_target_and_draws_nothing():
    torch.manual_seed(2)
    state = torch.get_rng_state()
    assert torch.equal(cross_target_weights(5, 0), torch.ones(5, 5))
    assert torch.equal(torch.get_rng_state(), state)
    assert [r.tolist() for r in sources_per_target(torch.ones(3, 3))] == [[0, 1, 2]] * 3


@pytest.mark.parametrize("k", [-1, 4])
def test_out_of_range_k_is_refused_naming_the_field(k):
    with pytest.raises(ValueError, match="cross_targets"):
        cross_target_weights(4, k)
    with pytest.raises(ValueError, match="cross_targets"):
        build("mmvae", cross_targets=k)


def test_mmvaeplus_refuses_sub_sampling_with_several_iwae_samples():
    with pytest.raises(ValueError, match="k = 1"):
        build("mmvaeplus", cross_targets=1, k=2)


# --- (d) off by default; (a) K = M − 1 is the exact objective ----------------------------------------------


@pytest.mark.parametrize("name", ["mmvae", "mmvaeplus"])
def test_the_default_is_the_exact_objective(name):
    assert registry.model_config(name).cross_targets == 0
    assert registry.build(name, MODALITIES, TINY[name]).config.cross_targets == 0


@pytest.mark.parametrize("variant", list(TINY))
def test_every_other_target_kept_is_the_exact_objective(variant, batch):
    exact = loss_and_gradient(build(variant), batch, seed=3)
    full = loss_and_gradient(build(variant, cross_targets=len(MODALITIES) - 1), batch, seed=3)
    assert full[0] == pytest.approx(exact[0], rel=1e-6)
    torch.testing.assert_close(full[1], exact[1], rtol=1e-4, atol=1e-4)


def test_mmvae_decodes_own_target_and_k_others_per_expert_sample(batch):
    """M(K + 1) decoder calls of the batch instead of M², one per (expert sample, target) kept, K + 1 per
    decoder."""
    model = build("mmvae", cross_targets=1)
    calls: dict[str, list[int]] = {m: [] for m in MODALITIES}
    for m, decoder in model.decoders.items():
        decoder.register_forward_hook(lambda _m, args, _o, m=m: calls[m].append(args[0].shape[0]))
    torch.manual_seed(4)
    model.loss(*batch)
    assert calls == {m: [5, 5] for m in MODALITIES}  # its own source and exactly K = 1 other, whole batches


# --- (b), (c) unbiased for the value and the gradient ------------------------------------------------------


@pytest.fixture(scope="module", params=["mmvae", "mmvaeplus"])
def paired_differences(request, batch):
    """(sub-sampled − exact) loss and projected gradient under the same seed, K = 1 of M − 1 = 2, for DRAWS
    seeds; and the exact values."""
    exact_model, sampled_model = build(request.param), build(request.param, cross_targets=1)
    values, grads, exact_values = [], [], []
    for seed in range(DRAWS):
        exact = loss_and_gradient(exact_model, batch, seed)
        sampled = loss_and_gradient(sampled_model, batch, seed)
        values.append(sampled[0] - exact[0])
        grads.append(sampled[1] - exact[1])
        exact_values.append(exact[0])
    return torch.tensor(values, dtype=torch.float64), torch.stack(grads).double(), torch.tensor(exact_values)


def _z_scores(differences: torch.Tensor) -> torch.Tensor:
    return differences.mean(0) / (differences.std(0) / math.sqrt(len(differences)))


def test_sub_sampled_loss_is_unbiased(paired_differences):
    values, _, _ = paired_differences
    assert values.std() > 0  # the draw does change the estimate
    assert _z_scores(values).abs() < 4.0, _z_scores(values)


def test_sub_sampled_gradient_is_unbiased(paired_differences):
    _, grads, _ = paired_differences
    assert (grads.std(0) > 0).all()
    assert (_z_scores(grads).abs() < 4.0).all(), _z_scores(grads)
