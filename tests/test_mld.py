"""MLD: multi-time masking, per-modality times, standardisation, clamped conditional sampling, sharing."""

from __future__ import annotations

import pytest
import torch

from baselines.mld.model import MLD, MLPUNet, random_clean_subsets
from mmbench import registry
from mmbench.data.synthetic import make_patterns

MODALITIES = ("m0", "m1", "m2")
TINY = {"width": 0.125, "latent_dim": 16, "dim": 16, "time_dim": 16, "groups": 4, "ae_steps": 2,
        "score_steps": 2, "ae_batch_size": 16, "score_batch_size": 16, "sampler_steps": 3}


def tiny(**overrides) -> MLD:
    return registry.build("mld", MODALITIES, {**TINY, **overrides})


def images(n: int = 4):
    return make_patterns(3, n=max(n, 10), seed=3).batch(range(n))[0]


def test_defaults_follow_the_reference_code():
    cfg = registry.model_config("mld")
    assert (cfg.beta_min, cfg.beta_max, cfg.clean_prob, cfg.sampler, cfg.sampler_steps) == (0.1, 20.0, 0.2, "euler", 250)
    assert (cfg.dim, cfg.time_dim, cfg.dim_mults, cfg.score_lr) == (1536, 512, (1, 1), 1e-4)


def test_clean_subsets_are_never_empty_or_full():
    torch.manual_seed(0)
    clean = random_clean_subsets(20000, 3, 0.2, torch.device("cpu"))
    chosen = clean.any(1)
    assert chosen.float().mean().item() == pytest.approx(0.2, abs=0.01)
    assert not clean.all(1).any()
    sizes = clean.sum(1)[chosen]
    # 6 non-empty, non-full subsets of 3: three of size 1, three of size 2
    assert (sizes == 1).float().mean().item() == pytest.approx(0.5, abs=0.03)


def test_net_takes_one_time_per_modality():
    net = MLPUNet(data_dim=12, num_modalities=3, dim=16, time_dim=8, dim_mults=(1, 1), groups=4)
    torch.nn.init.normal_(net.out[-1].weight)  # the output layer starts at zero, as MLD's
    x = torch.randn(2, 12)
    a = net(x, torch.tensor([[0.5, 0.5, 0.5]] * 2))
    b = net(x, torch.tensor([[0.5, 0.0, 0.5]] * 2))
    assert a.shape == (2, 12) and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="divisible by groups"):
        MLPUNet(12, 3, dim=10, time_dim=8, dim_mults=(1,), groups=4)


def test_clean_modalities_are_masked_out_of_the_loss_and_told_time_zero():
    torch.manual_seed(0)
    model = tiny(clean_prob=1.0)
    model.eval()
    model._prepare(lambda: iter([(images(12), None)]))
    cache = model.cache
    torch.testing.assert_close(model.score_model.mean, cache.mu.mean(0))
    seen = {}

    def hook(_module, args, output):
        seen["times"] = args[1].detach().clone()
        output.retain_grad()
        seen["out"] = output

    model.score_model.net.register_forward_hook(hook)
    model.score_model.train()
    model._loss({}, torch.zeros(0))["loss"].backward()
    times, grad = seen["times"], seen["out"].grad.reshape(-1, 3, 16)
    clean = times == 0
    assert clean.any(1).all() and not clean.all(1).any(), "clean_prob=1: every tuple has a clean, non-full subset"
    assert torch.all(grad[clean] == 0), "clean modalities do not enter the loss"
    assert torch.all(grad[~clean].abs().sum(-1) > 0)


def test_conditional_sampling_clamps_observed_latents_and_zeroes_their_time():
    torch.manual_seed(0)
    model = tiny()
    model.score_model.mean.normal_()
    model.score_model.std.uniform_(0.5, 2.0)
    times = []
    model.score_model.net.register_forward_hook(lambda _m, args, _o: times.append(args[1].clone()))
    batch = images(4)
    given = frozenset({"m1"})
    known = model.encode_latents(batch, given)
    z = model._generate(known, torch.tensor([[False, True, False]] * 4), None)
    torch.testing.assert_close(z[:, 1], known[:, 1])
    assert len(times) == 3 and all(torch.all(t[:, 1] == 0) and torch.all(t[:, 0] > 0) for t in times)
    out = model.sample_conditional(batch, given)
    assert set(out) == {"m0", "m2"}


def test_standardisation_is_saved_with_the_score_stage():
    model = tiny()
    model._prepare(lambda: iter([(images(12), None)]))
    state = model.stages()[-1].module.state_dict()
    assert {"mean", "std"} <= set(state)
    other = tiny()
    other.score_model.load_state_dict(state)
    torch.testing.assert_close(other.score_model.std, model.score_model.std)


def test_the_score_stage_warms_its_learning_rate_up_when_asked():
    from mmbench.training.trainer import _make_scheduler

    stage = tiny(score_lr=1e-3, score_warmup_steps=4).stages()[-1]
    optimizer = torch.optim.Adam(stage.module.parameters(), lr=stage.hparams.lr)
    scheduler = _make_scheduler(stage, optimizer)
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert tiny().stages()[-1].hparams.warmup_steps == 0  # MLD's own recipe: a constant rate
