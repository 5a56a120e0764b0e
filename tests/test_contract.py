"""The model contract, checked for every registered model on a tiny synthetic 3-modality dataset.

Each model is built with a tiny config (small nets, two optimiser steps per stage, few sampler steps),
trained through the real trainer, and then must: return images of the right shape in [0, 1] for every
(given, targets) pair; sample unconditionally; give latents of consistent shapes; repeat itself exactly
under a seed; survive a save/load round trip unchanged; do what it declares and refuse (with
``CapabilityError``) what it does not; leave its train/eval state as it found it.

Adding a model to the registry adds it here. Tiny configs come from the model's own ``Config`` fields
(``*steps`` → at most 2, ``*batch_size`` → 8, float ``*width`` → 0.125) plus the per-name extras below.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from latentdiff.base import LatentGenerativeModel
from mmbench import registry
from mmbench.contract import Capability, CapabilityError, MultimodalModel, evaluating
from mmbench.data.synthetic import make_patterns
from mmbench.persist import load_model, save_model
from mmbench.seeding import seed_everything
from mmbench.training.trainer import TrainerOptions, train_model

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


MODALITIES = ("m0", "m1", "m2")
SUBSETS = [frozenset(c) for k in range(1, 4) for c in itertools.combinations(MODALITIES, k)]
B = 4

_SBM_TINY = {
    "latent_dim": 16, "dim": 16, "dim_mults": (1, 2), "attn_heads": 1, "attn_dim_head": 8,
    "energy_width": 16, "aux_proj_dim": 16,
}
# Size fields the generic rules do not cover (network sizes that are not called width/steps/batch).
EXTRAS: dict[str, dict[str, object]] = {
    "mvae": {"latent_per_modality": 8},
    "mmvae": {"latent_per_modality": 8},
    "mopoe": {"latent_per_modality": 8},
    "mvtcae": {"latent_per_modality": 8},
    "mmvaeplus": {"shared_dim": 8, "private_dim": 8},
    "mld": {"latent_dim": 16, "dim": 32, "time_dim": 16, "groups": 4},
    **{name: dict(_SBM_TINY) for name in ("sbm-vae", "sbm-rae", "sbm-vae-c", "sbm-rae-c", "sbm-vae-t", "sbm-rae-t")},
}


def tiny_overrides(name: str) -> dict[str, object]:
    """Small nets, 2 steps per stage, batches of 8: derived from the model's Config fields, plus EXTRAS."""
    config = registry.model_config(name)
    out: dict[str, object] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, bool):
            continue
        if (f.name == "steps" or f.name.endswith("_steps")) and isinstance(value, int):
            out[f.name] = min(value, 2)
        elif (f.name == "batch_size" or f.name.endswith("_batch_size")) and isinstance(value, int):
            out[f.name] = 8
        elif (f.name == "width" or f.name.endswith("_width")) and isinstance(value, float):
            out[f.name] = 0.125
    out.update(EXTRAS.get(name, {}))
    return out


@pytest.fixture(scope="module")
def data():
    return make_patterns(3, n=32, seed=0)


@pytest.fixture(scope="module")
def batch(data):
    return data.batch(range(B))[0]


# the supervised reference row maps an image to attribute and mask modalities, the F1 floors answer those alone:
# no PolyMNIST build (their contracts on the CelebA twin: tests/test_table1.py, tests/test_floors.py)
IMAGE_ONLY_MODELS = [n for n in registry.names() if n not in ("supervised", "majority", "marginal")]


@pytest.fixture(scope="module", params=IMAGE_ONLY_MODELS)
def trained(request, data, tmp_path_factory):
    """(name, model trained 2 steps per stage, the trainer's reports)."""
    name = request.param
    seed_everything(0)
    model = registry.build(name, MODALITIES, tiny_overrides(name))
    options = TrainerOptions(workdir=tmp_path_factory.mktemp(name), config_hash=name, seed=0, quiet=True, model_name=name)
    reports = train_model(model, data, None, options)
    return name, model, reports


def _check_images(out: dict[str, torch.Tensor], names: frozenset[str], n: int) -> None:
    assert set(out) == set(names)
    for m, x in out.items():
        assert x.shape == (n, 3, 28, 28), (m, x.shape)
        assert x.dtype == torch.float32
        assert torch.isfinite(x).all()
        assert x.min() >= 0.0 and x.max() <= 1.0, (m, float(x.min()), float(x.max()))


def _everything(model: MultimodalModel, batch) -> list[torch.Tensor]:
    """One output of every declared capability, in a fixed order (for determinism and round trips)."""
    outs: list[torch.Tensor] = []
    given, target = frozenset({"m0", "m1"}), "m2"
    if model.has(Capability.CONDITIONAL):
        outs += list(model.sample_conditional(batch, given).values())
    if model.has(Capability.UNCONDITIONAL):
        outs += list(model.sample_unconditional(3).values())
    if model.has(Capability.ENCODE):
        latent = model.encode(batch, given)
        outs += [latent, *model.decode(model.encode(batch, frozenset({target})), frozenset({target})).values()]
    if model.has(Capability.LATENT_INFERENCE):
        outs.append(model.infer_latent(batch, given, target))
    return outs


def test_training_runs_every_stage(trained):
    name, model, reports = trained
    assert [r.name for r in reports] == [s.name for s in model.stages()]
    for p in model.parameters():
        assert torch.isfinite(p).all(), name


def test_conditional_samples_for_every_given_and_every_target_subset(trained, batch):
    """Every given subset (targets: all modalities) and every target subset (given: one modality);
    the default targets are exercised by the determinism test."""
    name, model, _ = trained
    if not model.has(Capability.CONDITIONAL):
        pytest.skip(f"{name} declares no conditional sampling (refusal is checked below)")
    everything = frozenset(MODALITIES)
    for given in SUBSETS:
        _check_images(model.sample_conditional(batch, given, everything), everything, B)
    for targets in SUBSETS[:-1]:
        _check_images(model.sample_conditional(batch, frozenset({"m0"}), targets), targets, B)


def test_unconditional_samples(trained):
    name, model, _ = trained
    if not model.has(Capability.UNCONDITIONAL):
        pytest.skip(f"{name} declares no unconditional sampling (refusal is checked below)")
    _check_images(model.sample_unconditional(5), frozenset(MODALITIES), 5)


def test_latents_have_consistent_shapes(trained, batch):
    name, model, _ = trained
    if model.has(Capability.ENCODE):
        for given in SUBSETS:
            latent = model.encode(batch, given)
            assert latent.dim() == 2 and latent.shape[0] == B and torch.isfinite(latent).all()
        _check_images(model.decode(model.encode(batch, frozenset({"m1"})), frozenset({"m1"})), frozenset({"m1"}), B)
    if model.has(Capability.LATENT_INFERENCE):
        inferred = model.infer_latent(batch, frozenset({"m1", "m2"}), "m0")
        assert inferred.dim() == 2 and inferred.shape[0] == B and torch.isfinite(inferred).all()
        if model.has(Capability.ENCODE):  # the latent cosine similarity compares these two
            assert inferred.shape == model.encode(batch, frozenset({"m0"})).shape


def test_batched_latent_inference_is_the_latent_the_samples_come_from(trained, batch):
    """``infer_latent_many`` answers every query; under one seed, its latents decode to exactly the images
    ``sample_conditional_many`` generates for the same queries (latent-diffusion models, whose generation
    is sample latent -> decode); the others answer the queries one by one: separate ``infer_latent``
    calls in order under the same seed give the same latents."""
    name, model, _ = trained
    if not model.has(Capability.LATENT_INFERENCE):
        pytest.skip(f"{name} declares no latent inference")
    queries = [(frozenset(MODALITIES) - {m}, m) for m in MODALITIES]
    torch.manual_seed(3)
    batched = model.infer_latent_many(batch, queries)
    assert [z.shape for z in batched] == [model.infer_latent(batch, g, t).shape for g, t in queries]
    if isinstance(model, LatentGenerativeModel):
        torch.manual_seed(3)
        samples = model.sample_conditional_many(batch, [(g, frozenset({t})) for g, t in queries])
        for z, (_, t), sample in zip(batched, queries, samples, strict=True):
            with evaluating(model):
                decoded = model.decode_latents(_spread(model, z, t), frozenset({t}))[t]
            torch.testing.assert_close(decoded, sample[t])
    else:
        torch.manual_seed(3)
        separate = [model.infer_latent(batch, g, t) for g, t in queries]
        for z, ref in zip(batched, separate, strict=True):
            torch.testing.assert_close(z, ref)


def test_samples_with_latents_are_the_two_separate_calls_in_one(trained, batch):
    """``sample_with_latents_many`` from one RNG state gives the images ``sample_conditional_many`` gives
    from that state, the latents ``infer_latent_many`` gives from it, and leaves the RNG where sampling
    alone leaves it (the sample cache stores leave-one-out samples and latents from this one call)."""
    name, model, _ = trained
    if not (model.has(Capability.LATENT_INFERENCE) and model.has(Capability.CONDITIONAL)):
        pytest.skip(f"{name} declares no latent inference")
    queries = [(frozenset(MODALITIES) - {m}, m) for m in MODALITIES]
    torch.manual_seed(5)
    images, latents = model.sample_with_latents_many(batch, queries)
    after = torch.rand(3)
    torch.manual_seed(5)
    samples = model.sample_conditional_many(batch, [(g, frozenset({t})) for g, t in queries])
    after_sampling = torch.rand(3)
    torch.manual_seed(5)
    inferred = model.infer_latent_many(batch, queries)
    for (_, t), image, sample, z, ref in zip(queries, images, samples, latents, inferred, strict=True):
        torch.testing.assert_close(image, sample[t])
        torch.testing.assert_close(z, ref)
    torch.testing.assert_close(after, after_sampling)
    with pytest.raises(ValueError, match="unknown modalities"):
        model.sample_with_latents_many(batch, [(frozenset({"m0"}), "nope")])


def _spread(model, z: torch.Tensor, target: str) -> torch.Tensor:
    """A target's latent placed in the (B, M, D) layout ``decode_latents`` reads."""
    full = z.new_zeros(z.shape[0], model.num_modalities, model.latent_dim)
    full[:, model.modalities.index(target)] = z
    return full


def test_same_seed_same_outputs_in_any_mode_and_after_save_load(trained, batch, tmp_path):
    """One seed, three runs: in train mode, in eval mode, and from a saved-and-loaded copy. Public methods
    run in eval mode, so all three are identical; and each run leaves the train/eval state as it was."""
    name, model, _ = trained
    runs = []
    for mode in (True, False):
        model.train(mode)
        before = {n: m.training for n, m in model.named_modules()}
        seed_everything(11)
        runs.append(_everything(model, batch))
        assert {n: m.training for n, m in model.named_modules()} == before, f"{name} changed train/eval state"
    save_model(model, tmp_path / "model.pt", name)
    loaded = load_model(tmp_path / "model.pt")
    assert type(loaded) is type(model) and loaded.config == model.config
    seed_everything(11)
    runs.append(_everything(loaded, batch))
    for label, run in zip(("eval mode", "save/load"), runs[1:], strict=True):
        assert len(run) == len(runs[0])
        for a, b in zip(runs[0], run, strict=True):
            assert torch.equal(a, b), f"{name}: outputs differ ({label})"


def test_undeclared_capabilities_raise(trained, batch):
    """Declared capabilities work (the tests above); undeclared ones raise CapabilityError."""
    _, model, _ = trained
    calls = {
        Capability.CONDITIONAL: lambda: model.sample_conditional(batch, frozenset({"m0"})),
        Capability.UNCONDITIONAL: lambda: model.sample_unconditional(2),
        Capability.ENCODE: lambda: model.encode(batch, frozenset({"m0"})),
        Capability.LATENT_INFERENCE: lambda: model.infer_latent(batch, frozenset({"m0"}), "m1"),
    }
    for capability, call in calls.items():
        if not model.has(capability):
            with pytest.raises(CapabilityError):
                call()


def test_bad_subsets_are_refused(trained, batch):
    _, model, _ = trained
    if not model.has(Capability.CONDITIONAL):
        pytest.skip("no conditional sampling")
    with pytest.raises(ValueError, match="unknown modalities"):
        model.sample_conditional(batch, frozenset({"nope"}))
    with pytest.raises(ValueError, match="at least one"):
        model.sample_conditional(batch, frozenset())


def test_many_queries_match_single_queries(trained, batch):
    """Same shapes always; the same values when the model is deterministic (the baselines' exact match
    under a seed is tested in test_baselines.py)."""
    name, model, _ = trained
    if not model.has(Capability.CONDITIONAL):
        pytest.skip("no conditional sampling")
    queries = [(frozenset({"m0"}), frozenset({"m1", "m2"})), (frozenset({"m1", "m2"}), frozenset({"m0"}))]
    seed_everything(2)
    many = model.sample_conditional_many(batch, queries)
    seed_everything(2)
    single = [model.sample_conditional(batch, g, t) for g, t in queries]
    seed_everything(3)
    other_seed = model.sample_conditional(batch, *queries[0])
    deterministic = all(torch.equal(single[0][k], other_seed[k]) for k in other_seed)
    for (_, targets), a, b in zip(queries, many, single, strict=True):
        _check_images(a, targets, B)
        if deterministic:
            assert all(torch.equal(a[k], b[k]) for k in a), name
