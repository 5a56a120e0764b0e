"""One generation plan per evaluation: every clean conditional query packed into passes of ``batch_size``
samples, models that condition per sample answering a pass in one call, numbers equal to per-group
generation for a model whose samples depend only on (subset, tuple), FGSM's attacked pass on the clean
noise."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from mmbench import registry
from mmbench.contract import Capability, ConditionalAnswer, ConditionalRequest, MultimodalModel, evaluating
from mmbench.data.synthetic import make_patterns
from mmbench.dummy import DummyConfig, DummyModel
from mmbench.metrics import EvalSettings, evaluate
from mmbench.metrics.plan import GroupShape, mirror, pack, samples_of
from mmbench.metrics.samples import SampleCache

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

NAMES = ("m0", "m1", "m2")


# --- the packing ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 7, 50, 64, 1000])
def test_pack_fills_every_pass_and_covers_every_sample_once_in_order(batch):
    groups = [GroupShape("loo", 3, 60), GroupShape("curves", 2, 17), GroupShape("subsets", 1, 60)]
    passes = pack(groups, batch)
    total = samples_of(groups)
    assert total == 3 * 60 + 2 * 17 + 60
    assert len(passes) == math.ceil(total / batch)
    assert [p.index for p in passes] == list(range(len(passes)))
    assert all(p.size == batch for p in passes[:-1]) and 0 < passes[-1].size <= batch
    line = [(s.group, s.query, row) for p in passes for s in p.slots for row in range(s.start, s.stop)]
    assert line == [(g.name, q, r) for g in groups for q in range(g.queries) for r in range(g.rows)]


def test_mirror_keeps_the_layout_and_index_of_each_pass_holding_the_source():
    passes = pack([GroupShape("loo", 3, 10), GroupShape("curves", 2, 10)], 8)  # loo: samples 0-29, passes 0-3
    replayed = mirror(passes, "loo", "loo_fgsm")
    assert [p.index for p in replayed] == [0, 1, 2, 3]
    for p, q in zip(passes, replayed, strict=False):
        assert [(s.query, s.start, s.stop) for s in p.slots] == [(s.query, s.start, s.stop) for s in q.slots]
        assert [s.group for s in q.slots] == [{"loo": "loo_fgsm"}.get(s.group, s.group) for s in p.slots]
    assert {s.group for s in replayed[3].slots} == {"loo_fgsm", "curves"}  # the shared pass keeps its filler


def test_pack_refuses_an_empty_pass():
    with pytest.raises(ValueError, match="at least one sample"):
        pack([GroupShape("loo", 1, 3)], 0)


# --- a model whose samples depend only on (given subset, tuple) -----------------------------------------
@dataclass(frozen=True)
class ToyConfig:
    packs: bool = True


class Toy(MultimodalModel):
    """Target images a function of (given subset, tuple): the truth when an odd number of modalities is
    given, its negative otherwise; latents: per-channel means of the given images. Counts its calls."""

    Config = ToyConfig
    capabilities = frozenset(Capability)

    def __init__(self, modalities, config: ToyConfig = ToyConfig()) -> None:
        super().__init__(modalities, config)
        self.anchor = nn.Parameter(torch.zeros(1))
        self.calls: list[int] = []  # samples per model call
        self.many_calls: list[int] = []

    @property
    def packs_requests(self) -> bool:  # type: ignore[override]
        return self.config.packs

    def _image(self, batch, given, target):
        x = batch[target]
        return x.clone() if len(given) % 2 else 1.0 - x

    def _sample_conditional_many(self, batch, queries):
        self.many_calls.append(self.batch_size_of(batch) * len(queries))
        return [{t: self._image(batch, g, t) for t in targets} for g, targets in queries]

    def _sample_conditional_requests(self, requests):
        if not self.config.packs:
            return super()._sample_conditional_requests(requests)
        self.calls.append(sum(self.batch_size_of(r.batch) for r in requests))
        return [
            ConditionalAnswer(
                {t: self._image(r.batch, r.given, t) for t in r.targets},
                {t: self._infer_latent(r.batch, r.given, t) for t in r.targets} if r.latents else {},
            )
            for r in requests
        ]

    def _encode(self, batch, given):
        return torch.stack([batch[m].mean((2, 3)) for m in sorted(given)]).mean(0)

    def _infer_latent(self, batch, given, target):
        return self._encode(batch, given) * (1.0 if len(given) % 2 else -1.0)

    def _sample_unconditional(self, n):
        return {m: torch.full((n, 3, 28, 28), 0.5) for m in self.modalities}


@pytest.fixture(scope="module")
def classifier_path(patterns_classifier, tmp_path_factory):
    from classifiers.store import save_classifier

    return str(save_classifier(patterns_classifier, "patterns3-eval", {}, tmp_path_factory.mktemp("clf")).path)


def _settings(classifier_path, **overrides) -> EvalSettings:
    base = {
        "n_conditional": 60, "n_unconditional": 20, "classifier": classifier_path, "substitute": classifier_path,
        "batch_size": 50, "generation_batch": 50, "kid_subsets": 3, "grid_size": 0, "subsets": (("m1",),), "fgsm_epsilon": 0.1,
    }
    return EvalSettings(**{**base, **overrides})


CONDITIONAL_METRICS = ["coherence", "fid", "fgsm", "latent_cosine"]


def test_planned_values_equal_per_group_values_for_a_model_deterministic_in_subset_and_tuple(
    patterns3, classifier_path, tmp_path
):
    _, test = patterns3
    planned = evaluate(Toy(NAMES), test, CONDITIONAL_METRICS, _settings(classifier_path), tmp_path / "plan")
    direct = evaluate(
        Toy(NAMES), test, CONDITIONAL_METRICS, _settings(classifier_path, generation_plan=False), tmp_path / "direct"
    )
    assert planned.values == direct.values
    assert planned.skipped == direct.skipped
    assert len(planned.values) > 30
    # the toy makes the numbers differ between subsets, so a query answered from another's samples would show
    assert planned.values["coherence/loo/m0"] != planned.values["coherence/given/m1/m0"]
    assert planned.provenance["eval/sample_cache/loo"] != direct.provenance["eval/sample_cache/loo"]


def _clean_samples(n: int) -> int:
    """Samples of the clean plan for M = 3 at n tuples: 3 leave-one-out, 2 curve and 1 subset query."""
    return (3 + 2 + 1) * n


def test_a_packing_model_gets_one_call_per_pass_of_at_most_batch_size_samples(patterns3, classifier_path, tmp_path):
    """60 tuples, 6 clean queries = 360 samples: ceil(360 / 50) = 8 passes; FGSM's attacked leave-one-out
    replays the 4 passes holding the 180 clean leave-one-out samples. Per group (the old layout) the same
    batch size makes one call per 50 tuples of each group, each holding every query of the group."""
    _, test = patterns3
    model = Toy(NAMES)
    result = evaluate(model, test, CONDITIONAL_METRICS, _settings(classifier_path), tmp_path / "plan")
    clean = math.ceil(_clean_samples(60) / 50)
    assert clean == 8
    assert len(model.calls) == clean + math.ceil(3 * 60 / 50)
    assert len(model.calls) <= math.ceil(_clean_samples(60) / 50) + math.ceil(3 * 60 / 50)
    assert max(model.calls) <= 50 and sum(model.calls[:clean]) == _clean_samples(60)
    assert model.many_calls == []
    assert result.provenance["eval/sampler_calls/plan"] == "8"
    assert result.provenance["eval/sampler_calls/loo_fgsm"] == "4"

    old = Toy(NAMES)
    evaluate(old, test, CONDITIONAL_METRICS, _settings(classifier_path, generation_plan=False), tmp_path / "direct")
    # loo, curves, subsets and loo_fgsm: 2 chunks of 50 and 10 tuples each
    assert old.calls == [] and len(old.many_calls) == 8
    assert old.many_calls == [150, 30, 100, 20, 50, 10, 150, 30]


def test_a_model_that_cannot_pack_gets_one_call_per_query_piece(patterns3, classifier_path, tmp_path):
    _, test = patterns3
    model = Toy(NAMES, ToyConfig(packs=False))
    settings = _settings(classifier_path)
    result = evaluate(model, test, ["coherence"], settings, tmp_path)
    cache = SampleCache(tmp_path / "x", model, test.subset(60), n_unconditional=2, batch_size=50, seed=0,
                        subsets=settings.subsets, plan_batch=50)
    pieces = [s.size for p in cache.plan_passes() for s in p.slots]
    assert model.many_calls == pieces and sum(pieces) == _clean_samples(60)
    assert "one model call per query" in result.provenance["eval/generation"]


# --- seeds: determinism and FGSM's common noise -------------------------------------------------------------
def _planned_cache(root, model, data, seed=0, batch=7) -> SampleCache:
    return SampleCache(root, model, data, n_unconditional=4, batch_size=batch, seed=seed, subsets=(("m1",),), plan_batch=batch)


def test_planned_samples_are_deterministic_in_the_seed(tmp_path):
    data = make_patterns(3, n=20, seed=1)
    model = DummyModel(NAMES, DummyConfig())
    first = np.array(_planned_cache(tmp_path / "a", model, data).conditional(["m0"], "m2"))
    again = np.array(_planned_cache(tmp_path / "b", model, data).conditional(["m0"], "m2"))
    other = np.array(_planned_cache(tmp_path / "c", model, data, seed=1).conditional(["m0"], "m2"))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_unattacked_fgsm_replay_reproduces_the_clean_samples_of_a_random_model(tmp_path):
    """The dummy's samples are pure noise: only the same noise at the same place gives equal arrays."""
    data = make_patterns(3, n=20, seed=1)
    model = DummyModel(NAMES, DummyConfig())
    cache = _planned_cache(tmp_path, model, data)

    def identity(batch, labels):
        return {m: x.clone() for m, x in batch.items()}

    for m in NAMES:
        given = [n for n in NAMES if n != m]
        np.testing.assert_array_equal(cache.adversarial(m, identity, {"attack": "none"}), cache.conditional(given, m))
    assert cache.passes["loo_fgsm"] == math.ceil(3 * 20 / 7)


def test_a_damaged_planned_group_is_generated_again_alone_and_equal(tmp_path, capsys):
    data = make_patterns(3, n=20, seed=1)
    model = DummyModel(NAMES, DummyConfig())
    first = np.array(_planned_cache(tmp_path, model, data).conditional(["m0"], "m2"))  # a curve query
    (folder,) = tmp_path.glob("curves-*")
    (array,) = folder.glob("m0__m2.npy")
    array.write_bytes(array.read_bytes()[:-10])
    capsys.readouterr()
    cache = _planned_cache(tmp_path, model, data)
    again = np.array(cache.conditional(["m0"], "m2"))
    assert "generating them again" in capsys.readouterr().err
    np.testing.assert_array_equal(again, first)
    assert cache.seconds["loo"] == 0.0 and cache.seconds["curves"] > 0.0  # the intact group was reused


# --- SBM and MLD: mixed subsets in one sampler pass -----------------------------------------------------------------
TINY_SBM = {
    "width": 0.125, "latent_dim": 16, "dim": 8, "dim_mults": (1,), "attn_heads": 2, "attn_dim_head": 8,
    "aux_width": 0.125, "aux_proj_dim": 16, "energy_width": 16, "sampler_steps": 2,
}
TINY_MLD = {"width": 0.125, "latent_dim": 16, "dim": 16, "time_dim": 16, "groups": 4, "sampler_steps": 2}


@pytest.mark.parametrize("name", ["sbm-vae", "sbm-rae-c", "sbm-vae-t", "mld"])
def test_latent_diffusion_answers_a_pass_of_mixed_subsets_with_one_sampler_call(name, monkeypatch):
    model = registry.build(name, NAMES, TINY_MLD if name == "mld" else TINY_SBM)
    data = make_patterns(3, n=12, seed=2)
    seen = []
    generate = model._generate

    def spy(known, observed, context):
        seen.append((known.clone(), observed.clone(), context))
        return generate(known, observed, context)

    monkeypatch.setattr(model, "_generate", spy)
    batch_a, _ = data.batch(np.arange(0, 5), list(NAMES))
    batch_b, _ = data.batch(np.arange(5, 12), list(NAMES))
    requests = [
        ConditionalRequest(batch_a, frozenset({"m1", "m2"}), frozenset({"m0"}), latents=True),
        ConditionalRequest(batch_b, frozenset({"m0"}), frozenset({"m1", "m2"})),
    ]
    answers = model.sample_conditional_requests(requests)
    assert len(seen) == 1
    known, observed, context = seen[0]
    assert observed.tolist() == [[False, True, True]] * 5 + [[True, False, False]] * 7
    with evaluating(model):
        torch.testing.assert_close(known[:5], model.encode_latents(batch_a, {"m1", "m2"}))
        torch.testing.assert_close(known[5:], model.encode_latents(batch_b, {"m0"}))
    assert (context is not None) == name.endswith("-t")  # contrastive guidance reads the given images
    if context is not None:
        with evaluating(model):
            torch.testing.assert_close(context[:5], model._context(batch_a, frozenset({"m1", "m2"})))
            torch.testing.assert_close(context[5:], model._context(batch_b, frozenset({"m0"})))
    assert set(answers[0].images) == {"m0"} and answers[0].images["m0"].shape == (5, 3, 28, 28)
    assert set(answers[1].images) == {"m1", "m2"} and answers[1].images["m2"].shape == (7, 3, 28, 28)
    assert set(answers[0].latents) == {"m0"} and answers[1].latents == {}
    assert model.packs_requests


def test_an_sbm_evaluation_makes_one_sampler_run_per_planned_pass(patterns3, classifier_path, tmp_path, monkeypatch):
    """20 tuples, 6 clean queries: 120 samples in 5 passes of 25; FGSM replays the 3 passes holding the 60
    leave-one-out samples; the latent cosine reads the latents of the leave-one-out requests."""
    _, test = patterns3
    model = registry.build("sbm-vae", NAMES, {
        "width": 0.125, "latent_dim": 16, "dim": 8, "dim_mults": (1,), "attn_heads": 2, "attn_dim_head": 8,
        "sampler_steps": 2,
    })
    sizes = []
    generate = model._generate

    def spy(known, observed, context):
        sizes.append(known.shape[0])
        return generate(known, observed, context)

    monkeypatch.setattr(model, "_generate", spy)
    settings = _settings(classifier_path, n_conditional=20, generation_batch=25)
    result = evaluate(model, test, ["coherence", "fgsm", "latent_cosine"], settings, tmp_path)
    assert sizes == [25, 25, 25, 25, 20] + [25, 25, 25]
    assert result.skipped == {} or all("drop_pct" in k for k in result.skipped)
    assert 0.0 <= result.values["coherence/loo/mean"] <= 1.0
    assert -1.0 <= result.values["latent_cosine/mean"] <= 1.0
    assert result.provenance["eval/generation"] == "plan of 25-sample passes"


# --- what a metric reads is declared by the metric -------------------------------------------------------
@pytest.fixture
def toy_metric():
    from mmbench.metrics.base import METRICS, MetricSpec, register_metric

    register_metric(MetricSpec(
        "toy_transfer", "a metric that reads only attacked samples", "none", frozenset({"conditional"}),
        "mmbench.metrics.fgsm:compute_fgsm", lambda kinds, settings: [], (("toy/*", True),),
        samples=frozenset({"transformed"}), resources=frozenset({"substitute"}),
    ))
    yield "toy_transfer"
    del METRICS["toy_transfer"]


def test_check_resources_and_planned_generation_follow_the_declarations(toy_metric, tmp_path):
    from classifiers.store import ClassifierNotFoundError
    from mmbench.metrics import check_resources
    from mmbench.metrics.catalog import planned_generation

    settings = EvalSettings(classifier=str(tmp_path / "none.pt"), substitute=str(tmp_path / "missing-substitute.pt"))
    with pytest.raises(ClassifierNotFoundError, match="missing-substitute"):
        check_resources([toy_metric], settings)
    # 3 leave-one-out + 2 curve queries, and the leave-one-out again from transformed inputs
    assert planned_generation(list(NAMES), [toy_metric], EvalSettings(), 10) == ((3 + 2 + 3) * 10, 0)


def test_a_metric_declaring_an_unknown_sample_set_is_refused():
    from mmbench.metrics.base import MetricSpec

    with pytest.raises(ValueError, match="unknown samples"):
        MetricSpec("bad", "", "", frozenset(), "x:y", lambda k, s: [], (), samples=frozenset({"conditonal"}))
