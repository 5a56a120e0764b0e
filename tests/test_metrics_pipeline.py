"""``evaluate`` end to end: oracle and shuffled models, the sample cache, keys, skips and provenance."""

from __future__ import annotations

import csv
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from classifiers.train import evaluate_classifier
from mmbench.contract import Capability, MultimodalModel
from mmbench.data.dataset import MultimodalDataset
from mmbench.dummy import DummyConfig, DummyModel
from mmbench.metrics import (
    EvalSettings,
    evaluate,
    expected_keys,
    higher_is_better,
    metric_names,
    metric_needs,
)
from mmbench.metrics.base import KEY_PATTERN
from mmbench.metrics.catalog import loo_given

FAST = {"batch_size": 50, "kid_subsets": 5, "grid_size": 4}


@dataclass(frozen=True)
class OracleConfig:
    shuffle: bool = False


class Oracle(MultimodalModel):
    """Returns the true tuple (or, with ``shuffle``, the batch's tuples in a random order)."""

    Config = OracleConfig
    capabilities = frozenset(Capability)

    def __init__(self, modalities, config: OracleConfig, data: MultimodalDataset | None = None) -> None:
        super().__init__(modalities, config)
        self.data = data
        self.served = 0  # unconditional samples are the data's tuples in order
        self.anchor = nn.Parameter(torch.zeros(1))

    def _order(self, n: int) -> torch.Tensor:
        return torch.randperm(n) if self.config.shuffle else torch.arange(n)

    def _sample_conditional_many(self, batch, queries):
        order = self._order(self.batch_size_of(batch))
        return [{t: batch[t][order].clone() for t in targets} for _, targets in queries]

    def _sample_unconditional(self, n):
        images, _ = self.data.batch((self.served + np.arange(n)) % len(self.data), self.modalities)
        self.served += n
        return images

    def _encode(self, batch, given):
        return torch.cat([batch[m].flatten(1) for m in sorted(given)], 1)

    def _infer_latent(self, batch, given, target):
        return batch[target].flatten(1)


class ConditionalOnly(Oracle):
    capabilities = frozenset({Capability.CONDITIONAL})


@pytest.fixture(scope="module")
def classifier_path(patterns_classifier, tmp_path_factory):
    from classifiers.store import save_classifier

    return str(save_classifier(patterns_classifier, "patterns3-eval", {}, tmp_path_factory.mktemp("clf")).path)


def _settings(classifier_path, **overrides) -> EvalSettings:
    base = {"n_conditional": 100, "n_unconditional": 100, "classifier": classifier_path, "substitute": classifier_path}
    return EvalSettings(**{**base, **FAST, **overrides})


def _all_keys(result) -> set[str]:
    return set(result.values) | {k for k in result.skipped if "/" in k}


# --- every metric on the dummy model ------------------------------------------------------------------
def test_every_metric_runs_on_the_dummy_model(patterns3, classifier_path, tmp_path):
    _, test = patterns3
    model = DummyModel(test.modalities, DummyConfig())
    settings = _settings(classifier_path, n_conditional=60, n_unconditional=60)
    result = evaluate(model, test, metric_names(), settings, tmp_path)
    assert set(result.skipped) == {"f1"} and "attribute" in result.skipped["f1"]
    expected = {k for name in metric_names() for k in expected_keys(name, test.modalities, settings)}
    assert set(result.values) == expected
    assert all(KEY_PATTERN.match(k) for k in result.values)
    assert all(isinstance(v, float) and np.isfinite(v) for v in result.values.values())
    assert all(higher_is_better(k) is not None for k in result.values if "_acc/" not in k)
    assert 0.0 <= result.values["coherence/loo/mean"] <= 0.35  # noise images: near chance
    assert all(path.is_file() for path in result.artifacts.values())
    assert {"samples_loo.png", "samples_uncond.png", "mode_coverage_counts.csv"} <= set(result.artifacts)
    for key in ("classifier/sha256", "fid/extractor", "fid/extractor_weights_sha256", "substitute/sha256",
                "eval/data_hash", "eval/n_conditional", "eval/model_hash", "fid/n_generated"):
        assert result.provenance[key]
    assert result.provenance["eval/n_conditional"] == "60"
    # coherence alone classifies with the classifier, not through the shared FID forward pass: same numbers
    alone = evaluate(model, test, ["coherence"], settings, tmp_path)
    assert alone.values == {k: v for k, v in result.values.items() if k.startswith("coherence/") and "uncond" not in k}


def test_mode_coverage_counts_are_the_classifier_labels(patterns3, classifier_path, patterns_classifier, tmp_path):
    _, test = patterns3
    model = Oracle(test.modalities, OracleConfig(), data=test)
    result = evaluate(model, test, ["mode_coverage"], _settings(classifier_path), tmp_path)
    with open(result.artifacts["mode_coverage_counts.csv"]) as fh:
        rows = {r["modality"]: r for r in csv.DictReader(fh)}
    first, _ = test.batch(np.arange(100))
    for m in test.modalities:
        with torch.no_grad():
            predicted = patterns_classifier(first[m]).argmax(1).numpy()
        assert [int(rows[m][f"class_{c}"]) for c in range(10)] == np.bincount(predicted, minlength=10).tolist()
    assert result.values["mode_coverage/mean/classes_covered"] == 10


# --- coherence against the classifier's accuracy ------------------------------------------------------
def test_coherence_of_the_oracle_is_the_classifier_accuracy(patterns3, classifier_path, patterns_classifier, tmp_path):
    _, test = patterns3
    model = Oracle(test.modalities, OracleConfig())
    result = evaluate(model, test, ["coherence"], _settings(classifier_path, n_conditional=None), tmp_path)
    accuracy = evaluate_classifier(patterns_classifier, test)
    for m in test.modalities:
        assert result.values[f"coherence/loo/{m}"] == accuracy[m]
    assert result.values["coherence/loo/mean"] == pytest.approx(np.mean(list(accuracy.values())))
    assert result.values["coherence/last_given/k1"] == accuracy["m2"]  # last = m2
    assert result.values["coherence/first_given/k2"] == accuracy["m0"]


def test_curves_on_fewer_tuples_score_every_point_on_the_same_stratified_part(
    patterns3, classifier_path, patterns_classifier, tmp_path
):
    """``n_curves``: the k-curves (their leave-one-out end included) are scored on a class-stratified part
    of the tuples, generated only for those; leave-one-out keeps every tuple. The oracle's curve coherence
    is then the classifier's accuracy on exactly that part (an independent computation)."""
    from mmbench.data.dataset import stratified_first

    _, test = patterns3
    model = Oracle(test.modalities, OracleConfig())
    settings = _settings(classifier_path, n_conditional=None, n_curves=30)
    result = evaluate(model, test, ["coherence", "fid"], settings, tmp_path)
    part = stratified_first(test.labels, 30)
    assert np.bincount(test.labels[part]).max() - np.bincount(test.labels[part]).min() <= 1
    on_part = evaluate_classifier(patterns_classifier, MultimodalDataset(
        {m: test.images[m][part] for m in test.modalities}, test.labels[part], "part", "part"))
    assert result.values["coherence/loo/m2"] == evaluate_classifier(patterns_classifier, test)["m2"]
    assert result.values["coherence/last_given/k1"] == on_part["m2"]
    assert result.values["coherence/last_given/k2"] == on_part["m2"]  # the leave-one-out point, on the part
    assert result.values["coherence/first_given/k1"] == on_part["m0"]
    assert result.provenance["coherence/curves/n"] == "30" and result.provenance["fid/curves/n_generated"] == "30"
    curves = [f for f in (tmp_path / "samples").glob("curves-*/*.npy")]
    assert curves and all(np.load(f).shape[0] == 30 for f in curves)
    with open(result.artifacts["fid_conditional.csv"]) as f:
        sizes = {(row["kind"], row["num_given"]): int(row["n_generated"]) for row in csv.DictReader(f)}
    assert sizes[("loo", "2")] == len(test) and sizes[("last_given", "2")] == 30 and sizes[("first_given", "1")] == 30
    with pytest.raises(ValueError, match="n_curves must be at least 2"):
        EvalSettings(n_curves=1)


def test_coherence_of_shuffled_tuples_is_chance(patterns3, classifier_path, tmp_path):
    _, test = patterns3
    model = Oracle(test.modalities, OracleConfig(shuffle=True))
    settings = _settings(classifier_path, n_conditional=None, batch_size=len(test), k_curves=False)
    result = evaluate(model, test, ["coherence"], settings, tmp_path)
    chance = float(np.sum((np.bincount(test.labels) / len(test)) ** 2))  # ≈ 0.1
    # N = 500: the share's std is about 0.013; 0.05 is ~4 std
    assert abs(result.values["coherence/loo/mean"] - chance) < 0.05


def test_unconditional_coherence_of_real_tuples(patterns3, classifier_path, patterns_classifier, tmp_path):
    _, test = patterns3
    model = Oracle(test.modalities, OracleConfig(), data=test)
    result = evaluate(model, test, ["unconditional_coherence"], _settings(classifier_path), tmp_path)
    images, _ = test.batch(np.arange(100))
    with torch.no_grad():
        predicted = np.stack([patterns_classifier(images[m]).argmax(1).numpy() for m in test.modalities], 1)
    all_agree = float(np.mean((predicted == predicted[:, :1]).all(axis=1)))
    assert result.values["coherence/uncond/all_agree"] == pytest.approx(all_agree)
    assert result.values["coherence/uncond/atleast_3"] == result.values["coherence/uncond/all_agree"]
    assert result.values["coherence/uncond/atleast_2"] >= result.values["coherence/uncond/atleast_3"] > 0.9


def test_explicit_subsets(patterns3, classifier_path, patterns_classifier, tmp_path):
    _, test = patterns3
    model = Oracle(test.modalities, OracleConfig())
    settings = _settings(classifier_path, subsets=(("m0",), ("m2", "m1")), k_curves=False)
    result = evaluate(model, test, ["coherence"], settings, tmp_path)
    assert {"coherence/given/m0/m1", "coherence/given/m0/m2", "coherence/given/m1.m2/m0"} <= set(result.values)
    assert set(result.values) == set(expected_keys("coherence", test.modalities, settings))
    with pytest.raises(ValueError, match="proper subset"):
        evaluate(model, test, ["coherence"], _settings(classifier_path, subsets=(("m0", "m9"),)), tmp_path)


# --- FGSM, latent cosine, F1 --------------------------------------------------------------------------
def test_fgsm_lowers_the_coherence_of_a_model_that_copies_its_input(patterns3, classifier_path, tmp_path):
    _, test = patterns3
    # the oracle copies the (attacked) input, and the substitute is the evaluation classifier: white box
    model = Oracle(test.modalities, OracleConfig())
    result = evaluate(model, test, ["fgsm"], _settings(classifier_path, fgsm_epsilon=0.1), tmp_path)
    v = result.values
    assert v["fgsm/coherence/adv/mean"] < v["fgsm/coherence/clean/mean"]
    assert v["fgsm/coherence/drop_pct"] == pytest.approx(
        100 * (v["fgsm/coherence/clean/mean"] - v["fgsm/coherence/adv/mean"]) / v["fgsm/coherence/clean/mean"]
    )
    assert v["fgsm/substitute_acc/adv"] < v["fgsm/substitute_acc/clean"]
    assert v["fgsm/eval_acc/adv"] == pytest.approx(v["fgsm/coherence/adv/mean"])  # the copy is the attacked input
    assert result.provenance["fgsm/epsilon"] == "0.1"


def test_latent_cosine_of_a_model_that_infers_the_true_latent_is_one(patterns3, classifier_path, tmp_path):
    _, test = patterns3
    result = evaluate(Oracle(test.modalities, OracleConfig()), test, ["latent_cosine"], _settings(classifier_path), tmp_path)
    assert result.values["latent_cosine/mean"] == pytest.approx(1.0)
    dummy = evaluate(DummyModel(test.modalities, DummyConfig()), test, ["latent_cosine"], _settings(classifier_path), tmp_path)
    assert abs(dummy.values["latent_cosine/mean"]) < 0.15  # random latents: ~0 (std 0.025 per modality)


def _attribute_data(n: int = 120, seed: int = 0) -> MultimodalDataset:
    """A synthetic multi-label dataset: a pattern image and 6 binary attributes (the label's bits + noise bits)."""
    from mmbench.data.synthetic import make_patterns

    images = make_patterns(1, n=n, seed=seed)
    rng = np.random.default_rng(seed)
    bits = (images.labels[:, None] >> np.arange(4)) & 1
    attributes = np.concatenate([bits, rng.integers(0, 2, size=(n, 2))], axis=1).astype(np.uint8) * 255
    data = MultimodalDataset(
        {"img": images.images["m0"], "attrs": attributes[:, :, None, None]}, images.labels, "attrs6", f"attrs6-{seed}"
    )
    data.modality_kinds = {"img": "image", "attrs": "attributes"}
    return data


class AllOnes(Oracle):
    def _sample_conditional_many(self, batch, queries):
        return [{t: torch.ones_like(batch[t]) for t in targets} for _, targets in queries]


def test_f1_on_synthetic_attribute_data(tmp_path):
    data = _attribute_data()
    kinds = {"img": "image", "attrs": "attributes"}
    settings = EvalSettings(n_conditional=None, batch_size=64)
    oracle = evaluate(Oracle(["img", "attrs"], OracleConfig()), data, ["f1"], settings, tmp_path / "a")
    assert set(oracle.values) == set(expected_keys("f1", kinds, settings)) == {"f1/loo/attrs", "f1/loo/mean"}
    truth = data.images["attrs"].reshape(len(data), -1) > 127
    assert oracle.values["f1/loo/attrs"] == pytest.approx(truth.any(axis=1).mean())  # empty rows score 0
    ones = evaluate(AllOnes(["img", "attrs"], OracleConfig()), data, ["f1"], settings, tmp_path / "b")
    per_sample = 2 * truth.sum(1) / (truth.sum(1) + truth.shape[1])  # precision |T|/L, recall 1
    assert ones.values["f1/loo/mean"] == pytest.approx(per_sample.mean())


# --- the sample cache ---------------------------------------------------------------------------------
def _forbid_sampling(model, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the sample cache should have answered")

    for name in ("sample_conditional_many", "sample_unconditional", "infer_latent", "encode"):
        monkeypatch.setattr(model, name, fail)


def test_rerun_reuses_the_cache_and_same_seed_gives_same_samples(patterns3, classifier_path, tmp_path, monkeypatch):
    _, test = patterns3
    metrics = ["coherence", "unconditional_coherence", "latent_cosine", "mode_coverage"]
    model = DummyModel(test.modalities, DummyConfig())
    settings = _settings(classifier_path, n_conditional=40, n_unconditional=40)
    first = evaluate(model, test, metrics, settings, tmp_path / "a")
    fresh = evaluate(model, test, metrics, settings, tmp_path / "b")  # same seed, new workdir
    assert fresh.values == first.values
    other_seed = evaluate(model, test, metrics, EvalSettings(**{**settings.__dict__, "seed": 1}), tmp_path / "c")
    assert other_seed.values != first.values
    _forbid_sampling(model, monkeypatch)
    again = evaluate(model, test, metrics, settings, tmp_path / "a")
    assert again.values == first.values
    assert all(float(again.provenance[f"seconds/samples/{g}"]) == 0.0 for g in ("loo", "uncond"))


def test_cache_key_follows_the_model_state(patterns3, classifier_path, tmp_path):
    _, test = patterns3
    model = DummyModel(test.modalities, DummyConfig())
    settings = _settings(classifier_path, n_conditional=40, n_unconditional=40)
    before = evaluate(model, test, ["coherence"], settings, tmp_path)
    with torch.no_grad():
        model.anchor.add_(1.0)
    after = evaluate(model, test, ["coherence"], settings, tmp_path)
    assert after.provenance["eval/sample_cache/loo"] != before.provenance["eval/sample_cache/loo"]
    assert float(after.provenance["seconds/samples/loo"]) > 0.0


def test_sample_files_are_uint8(patterns3, classifier_path, tmp_path):
    _, test = patterns3
    settings = _settings(classifier_path, n_conditional=40, n_unconditional=40)
    evaluate(DummyModel(test.modalities, DummyConfig()), test, ["coherence"], settings, tmp_path)
    files = [f for f in (tmp_path / "samples").glob("loo-*/*.npy") if "__" in f.name and not f.name.startswith(("inferred", "encoded"))]
    assert len(files) == 3
    assert all(np.load(f).dtype == np.uint8 and np.load(f).shape == (40, 3, 28, 28) for f in files)
    latents = sorted(f.name for f in (tmp_path / "samples").glob("loo-*/*.npy") if f.name.startswith(("inferred", "encoded")))
    assert latents == [f"{kind}__{m}.npy" for kind in ("encoded", "inferred") for m in test.modalities]


def test_cached_latents_come_from_the_leave_one_out_pass(patterns3, tmp_path):
    """The cache's inferred latents and leave-one-out samples are one call's: under the loo stream's seed,
    ``sample_with_latents_many`` on the first batch gives exactly the stored rows."""
    from mmbench.metrics.samples import SampleCache
    from mmbench.seeding import derive_seed, seeded

    _, test = patterns3
    model = DummyModel(test.modalities, DummyConfig())
    data = test.subset(20, stratified=False)
    cache = SampleCache(tmp_path, model, data, n_unconditional=4, batch_size=8, seed=3)
    names = list(test.modalities)
    batch, _ = data.batch(np.arange(8), names)
    queries = [(frozenset(loo_given(names, m)), m) for m in names]
    with seeded(derive_seed(3, "conditional", 0), model.device):
        images, latents = model.sample_with_latents_many(batch, queries)
    for (given, m), image, z in zip(queries, images, latents, strict=True):
        inferred, encoded = cache.latents(m)
        np.testing.assert_array_equal(inferred[:8], z.numpy())
        np.testing.assert_array_equal(encoded[:8], model.encode(batch, frozenset({m})).numpy())
        np.testing.assert_array_equal(cache.conditional(sorted(given), m)[:8], (image.clamp(0, 1) * 255).round().byte().numpy())
    assert set(cache.seconds) == {"loo"}  # no second sampler pass for the latents


# --- skips, names, needs ------------------------------------------------------------------------------
def test_metrics_a_model_cannot_serve_are_skipped_with_a_reason(patterns3, classifier_path, tmp_path):
    _, test = patterns3
    model = ConditionalOnly(test.modalities, OracleConfig())
    unserved = ["unconditional_coherence", "unconditional_fid", "mode_coverage", "latent_cosine"]
    result = evaluate(model, test, ["coherence", *unserved], _settings(classifier_path, n_conditional=40), tmp_path)
    for name in unserved:
        assert "lacks capabilities" in result.skipped[name] and name in result.skipped[name]
    assert set(result.values) == set(expected_keys("coherence", test.modalities, _settings(classifier_path)))


def test_metric_needs_and_unknown_names():
    assert metric_needs("coherence") == frozenset({Capability.CONDITIONAL})
    assert metric_needs("latent_cosine") == frozenset({Capability.CONDITIONAL, Capability.ENCODE, Capability.LATENT_INFERENCE})
    with pytest.raises(KeyError, match="Did you mean 'coherence'"):
        metric_needs("coherense")


def test_expected_keys_are_valid_and_directed():
    settings = EvalSettings(subsets=(("m0", "m1"),))
    names = [f"m{i}" for i in range(10)]
    for name in metric_names():
        for key in expected_keys(name, names, settings):
            assert KEY_PATTERN.match(key), key
            assert higher_is_better(key) is not None or "_acc/" in key, key
    assert "coherence/uncond/atleast_5" in expected_keys("unconditional_coherence", names, settings)
    assert "fgsm/coherence/drop_pct" in expected_keys("fgsm", names, settings)
    assert higher_is_better("fid/loo/mean") is False and higher_is_better("coherence/loo/m3") is True
    assert higher_is_better("fgsm/coherence/drop_pct") is False
    assert higher_is_better("not/a/metric") is None
    with pytest.raises(ValueError, match="metric key"):
        expected_keys("coherence", ["a:b", "c"], settings)


def test_check_resources_fails_early(tmp_path, monkeypatch):
    from classifiers.store import ClassifierNotFoundError
    from mmbench.metrics import check_resources
    from mmbench.metrics.extractors import INCEPTION_ENV, InceptionWeightsError

    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    with pytest.raises(ClassifierNotFoundError, match="mmbench classifier train"):
        check_resources(["coherence"], EvalSettings(classifier=str(tmp_path / "none.pt")))
    with pytest.raises(InceptionWeightsError):
        check_resources(["fid"], EvalSettings(fid_extractor="inception-v3-compat"))
    check_resources(["latent_cosine", "f1"], EvalSettings(classifier=str(tmp_path / "none.pt")))  # need nothing


def test_loo_given_order():
    assert loo_given(["a", "b", "c"], "b") == ("a", "c")


def test_planned_generation_counts_the_sampler_passes_by_hand():
    """M = 10: 10 leave-one-out givens; the k-curves add the first k and the last k for k = 1..8 (16
    givens, k = 9 is leave-one-out), on n_curves tuples; FGSM repeats leave-one-out; an explicit subset adds one."""
    from mmbench.metrics.catalog import planned_generation

    names = [f"m{i}" for i in range(10)]
    settings = EvalSettings(n_curves=300, n_unconditional=2000)
    assert planned_generation(names, ["coherence", "fgsm", "mode_coverage"], settings, 1000) == (
        10 * 1000 + 16 * 300 + 10 * 1000, 2000)
    assert planned_generation(names, ["coherence"], EvalSettings(), 1000) == (26 * 1000, 0)
    assert planned_generation(names, ["coherence"], EvalSettings(n_curves=5000), 1000) == (26 * 1000, 0)
    with_subset = EvalSettings(k_curves=False, subsets=(("m0", "m1"),))
    assert planned_generation(names, ["coherence"], with_subset, 100) == (11 * 100, 0)
    assert planned_generation(names, ["unconditional_fid"], settings, 1000) == (0, 2000)



# --- gaps a mutation campaign found ---------------------------------------------------------------------
# Every direction rule of every registered metric, written out by hand: a flipped direction ranks models
# backwards in every report, so each one is pinned here (a new metric must add its rules).
DIRECTIONS = {
    "coherence": (("coherence/*", True),),
    "unconditional_coherence": (("coherence/uncond/*", True),),
    "fid": (("fid/*", False), ("kid/*", False)),
    "unconditional_fid": (("fid/uncond/*", False), ("kid/uncond/*", False)),
    "mode_coverage": (("mode_coverage/*/entropy_norm", True), ("mode_coverage/*/kl_uniform", False),
                      ("mode_coverage/*/classes_covered", True)),
    "fgsm": (("fgsm/*/drop_pct", False), ("fgsm/coherence/*", True), ("fgsm/f1/*", True),
             ("fgsm/substitute_acc/*", None), ("fgsm/eval_acc/*", None)),
    "latent_cosine": (("latent_cosine/*", True),),
    "f1": (("f1/*", True),),
}


def test_every_catalog_rule_has_its_pinned_direction():
    from mmbench.metrics.base import get_metric

    assert set(metric_names()) == set(DIRECTIONS)
    for name, rules in DIRECTIONS.items():
        assert get_metric(name).rules == rules, name
    by_key = {
        "coherence/loo/m0": True, "coherence/last_given/k2": True, "coherence/uncond/all_agree": True,
        "fid/loo/mean": False, "kid/loo/m1": False, "fid/uncond/m0": False, "kid/uncond/mean": False,
        "mode_coverage/m0/entropy_norm": True, "mode_coverage/mean/kl_uniform": False,
        "mode_coverage/mean/classes_covered": True, "fgsm/coherence/drop_pct": False, "fgsm/f1/drop_pct": False,
        "fgsm/coherence/adv/mean": True, "fgsm/f1/clean/attrs": True, "fgsm/substitute_acc/adv": None,
        "fgsm/eval_acc/clean": None, "latent_cosine/mean": True, "f1/loo/attrs": True,
    }
    assert {key: higher_is_better(key) for key in by_key} == by_key


class MissingLastClass(Oracle):
    """Unconditional samples are test tuples the classifier labels 0-8 in every modality: class 9 never shows."""

    def __init__(self, modalities, config, data, keep: np.ndarray) -> None:
        super().__init__(modalities, config, data)
        self.keep = keep

    def _sample_unconditional(self, n):
        images, _ = self.data.batch(self.keep[(self.served + np.arange(n)) % len(self.keep)], self.modalities)
        self.served += n
        return images


def test_mode_coverage_of_a_model_that_never_produces_the_last_class(patterns3, classifier_path, patterns_classifier, tmp_path):
    """Counts have a column for every class (class_9 = 0) and the KL to uniform uses K = 10, not the
    number of classes that happened to appear: KL = log 10 - H(p), entropy normalised by log 10."""
    _, test = patterns3
    with torch.no_grad():
        labels = {m: patterns_classifier(torch.from_numpy(test.images[m]).float() / 255).argmax(1).numpy()
                  for m in test.modalities}
    keep = np.flatnonzero(np.all([labels[m] < 9 for m in test.modalities], axis=0))
    assert len(keep) >= 100
    model = MissingLastClass(test.modalities, OracleConfig(), test, keep)
    result = evaluate(model, test, ["mode_coverage"], _settings(classifier_path), tmp_path)
    with open(result.artifacts["mode_coverage_counts.csv"]) as fh:
        rows = {r["modality"]: r for r in csv.DictReader(fh)}
    for m in test.modalities:
        counts = np.bincount(labels[m][keep[:100]], minlength=10)
        p = counts[counts > 0] / 100
        entropy = -(p * np.log(p)).sum()
        assert result.values[f"mode_coverage/{m}/kl_uniform"] == pytest.approx(np.log(10) - entropy)
        assert result.values[f"mode_coverage/{m}/entropy_norm"] == pytest.approx(entropy / np.log(10))
        assert result.values[f"mode_coverage/{m}/classes_covered"] == 9
        assert [rows[m][f"class_{c}"] for c in range(10)] == [str(c) for c in counts], "one column per class"
        assert counts[9] == 0 and counts.sum() == 100


def test_fgsm_epsilon_is_part_of_the_adversarial_cache_key(patterns3, classifier_path, tmp_path):
    """Two evaluations in one work folder, ε = 0.1 then ε = 0: the second attacks afresh, and at ε = 0 the
    attacked inputs are the clean ones, so adversarial coherence equals clean coherence."""
    _, test = patterns3
    model = Oracle(test.modalities, OracleConfig())
    attacked = evaluate(model, test, ["fgsm"], _settings(classifier_path, fgsm_epsilon=0.1), tmp_path).values
    unattacked = evaluate(model, test, ["fgsm"], _settings(classifier_path, fgsm_epsilon=0.0), tmp_path).values
    assert attacked["fgsm/coherence/adv/mean"] < attacked["fgsm/coherence/clean/mean"]
    assert unattacked["fgsm/coherence/adv/mean"] == unattacked["fgsm/coherence/clean/mean"]
    assert unattacked["fgsm/coherence/clean/mean"] == attacked["fgsm/coherence/clean/mean"]
    assert unattacked["fgsm/coherence/drop_pct"] == 0.0
