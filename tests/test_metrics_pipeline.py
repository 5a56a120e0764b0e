"""``evaluate`` end to end: oracle and shuffled models, the sample cache, keys, skips and provenance."""

from __future__ import annotations

import csv
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from classifiers.store import load_classifier
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


def test_unconditional_coherence_keys_start_at_two_image_modalities():
    """Agreement needs two image modalities: one gives no keys (the metric skips), two give ``atleast_2`` and
    ``all_agree`` (the same share), M give ``atleast_2..M`` and ``all_agree``, whatever other kinds exist."""
    def keys(kinds: dict[str, str]) -> list[str]:
        return expected_keys("unconditional_coherence", kinds, None)

    assert keys({"m0": "image", "attrs": "attributes"}) == []
    assert keys({"m0": "image", "m1": "image"}) == ["coherence/uncond/atleast_2", "coherence/uncond/all_agree"]
    assert keys({"m0": "image", "mask": "mask", "m1": "image", "m2": "image"}) == [
        "coherence/uncond/atleast_2", "coherence/uncond/atleast_3", "coherence/uncond/all_agree"]


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
    assert result.provenance["mode_coverage/n"] == "100"  # how many unconditional samples the counts are of


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


@dataclass(frozen=True)
class KnownCoherenceConfig:
    p_own: float = 0.7  # conditional: the target shows the tuple's class with this probability
    p_all: float = 0.5  # unconditional: every modality shows one class
    p_pair: float = 0.3  # unconditional: m0 and m1 agree, the others each show another class


class KnownCoherence(Oracle):
    """Draws class prototypes so that coherence is known: a test double with a closed-form answer.

    Conditional: it reads the tuple's class from the bytes of a given image (a lookup into the evaluation data),
    and shows each target's prototype of that class with probability ``p_own``, else of a uniformly drawn other
    class; it records which tuples got their own class. Unconditional: a uniform class c for m0; with
    probability ``p_all`` every modality shows c, with ``p_pair`` m0 and m1 show c and modality k ≥ 2 shows
    c + k, else modality k shows c + k (all different). With a classifier that labels the prototypes right,
    coherence = the recorded share of own-class targets (≈ ``p_own``), "at least 2 agree" = p_all + p_pair,
    "all agree" = p_all.
    """

    Config = KnownCoherenceConfig
    capabilities = frozenset({Capability.CONDITIONAL, Capability.UNCONDITIONAL})

    def __init__(self, modalities, config: KnownCoherenceConfig, data: MultimodalDataset) -> None:
        super().__init__(modalities, config, data)
        first = [int(np.flatnonzero(data.labels == c)[0]) for c in range(10)]
        self.prototypes = {m: torch.from_numpy(data.images[m][first]).float() / 255.0 for m in modalities}
        self.rows = {m: {data.images[m][i].tobytes(): i for i in range(len(data))} for m in modalities}
        self.own: dict[tuple[frozenset, str], np.ndarray] = {}  # per query: did the target show the tuple's class?
        self.agreement: list[int] = []  # unconditional: 0 all agree, 1 a pair, 2 none

    def _tuples(self, batch, given) -> np.ndarray:
        m = sorted(given)[0]
        keys = (batch[m] * 255).round().to(torch.uint8).numpy()
        return np.array([self.rows[m][k.tobytes()] for k in keys])

    def _sample_conditional_many(self, batch, queries):
        out = []
        for given, targets in queries:
            rows = self._tuples(batch, given)
            classes = torch.from_numpy(self.data.labels[rows])
            generated = {}
            for t in sorted(targets):
                own = torch.rand(len(rows)) < self.config.p_own
                other = (classes + torch.randint(1, 10, (len(rows),))) % 10
                generated[t] = self.prototypes[t][torch.where(own, classes, other)]
                self.own.setdefault((given, t), np.zeros(len(self.data), dtype=bool))[rows] = own.numpy()
            out.append(generated)
        return out

    def _sample_unconditional(self, n):
        classes = torch.randint(0, 10, (n,))
        u = torch.rand(n)
        kind = (u >= self.config.p_all).long() + (u >= self.config.p_all + self.config.p_pair).long()
        self.agreement.extend(kind.tolist())
        out = {}
        for k, m in enumerate(self.modalities):
            agrees = kind == 0 if k >= 2 else kind <= 1  # m0 (k = 0, shift 0) always shows c
            out[m] = self.prototypes[m][(classes + torch.where(agrees, 0, k)) % 10]
        return out


def _binomial_tolerance(p: float, n: int) -> float:
    return 4 * (p * (1 - p) / n) ** 0.5


def test_conditional_coherence_of_a_model_with_known_coherence(patterns3, classifier_path, patterns_classifier, tmp_path):
    _, test = patterns3
    model = KnownCoherence(test.modalities, KnownCoherenceConfig(), test)
    for m in test.modalities:  # the premise: the classifier labels every prototype right
        with torch.no_grad():
            assert patterns_classifier(model.prototypes[m]).argmax(1).tolist() == list(range(10))
    settings = _settings(classifier_path, n_conditional=None, k_curves=False, subsets=(("m0",),))
    result = evaluate(model, test, ["coherence"], settings, tmp_path)
    p, n = model.config.p_own, len(test)
    queries = {f"coherence/loo/{m}": (loo_given(test.modalities, m), m) for m in test.modalities}
    queries |= {f"coherence/given/m0/{m}": (("m0",), m) for m in ("m1", "m2")}
    for key in queries:
        assert abs(result.values[key] - p) < _binomial_tolerance(p, n), key  # p up to sampling
    expected = {key: model.own[(frozenset(given), target)].mean() for key, (given, target) in queries.items()}
    for key, share in expected.items():
        assert result.values[key] == share, key  # exactly the recorded share of own-class targets
    assert result.values["coherence/loo/mean"] == pytest.approx(np.mean([expected[f"coherence/loo/{m}"] for m in test.modalities]))


def test_unconditional_coherence_of_a_model_with_known_agreement(patterns3, classifier_path, tmp_path):
    _, test = patterns3
    config = KnownCoherenceConfig()
    model = KnownCoherence(test.modalities, config, test)
    n = 1000
    result = evaluate(model, test, ["unconditional_coherence"], _settings(classifier_path, n_unconditional=n), tmp_path)
    kinds = np.array(model.agreement)
    assert len(kinds) == n
    v = result.values
    assert v["coherence/uncond/all_agree"] == v["coherence/uncond/atleast_3"] == pytest.approx(np.mean(kinds == 0))
    assert v["coherence/uncond/atleast_2"] == pytest.approx(np.mean(kinds <= 1))
    assert abs(v["coherence/uncond/all_agree"] - config.p_all) < _binomial_tolerance(config.p_all, n)
    both = config.p_all + config.p_pair
    assert abs(v["coherence/uncond/atleast_2"] - both) < _binomial_tolerance(both, n)


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
FGSM_EPSILON = 0.1


@pytest.fixture(scope="module")
def substitute_path(patterns3, tmp_path_factory):
    """A substitute of the recipe's other architecture and seed (classifiers.train.RECIPES), trained briefly."""
    from classifiers.store import save_classifier
    from classifiers.train import RECIPES, train_classifier

    train, _ = patterns3
    recipe = RECIPES["substitute"]
    net = train_classifier(recipe.arch, train, None, epochs=1, batch_size=128, lr=1e-3, seed=recipe.seed, device="cpu")
    return str(save_classifier(net, "patterns3-substitute", {}, tmp_path_factory.mktemp("sub")).path)


def _attacked_accuracy(net: nn.Module, data: MultimodalDataset, epsilon: float, attacker: nn.Module | None = None) -> float:
    """``net``'s accuracy, every modality, on images FGSM-attacked with ``attacker``'s gradient (default ``net``'s
    own: the white-box attack; ε = 0: the clean images)."""
    from mmbench.metrics.fgsm import fgsm_attack

    images, labels = data.batch(np.arange(len(data)))
    correct = 0
    for m in data.modalities:
        with torch.no_grad():
            attacked = fgsm_attack(attacker or net, images[m], labels, epsilon)
            correct += int((net(attacked).argmax(1) == labels).sum())
    return correct / (len(data) * len(data.modalities))


def test_black_box_fgsm_transfers_but_less_than_a_white_box_attack(
    patterns3, classifier_path, substitute_path, patterns_classifier, tmp_path
):
    """The substitute (another architecture and seed) crafts the attack; the oracle copies the attacked input.

    Measured at ε = 0.1 on the pattern data, 3 evaluation seeds × 3 substitute seeds × 1-2 epochs (18 pairs):
    the substitute's own accuracy falls from 1.0 to 0.60-0.81, the evaluator's to 0.51-0.94 (the attack
    transfers) while the evaluator's own white-box attack leaves it 0.11-0.17 (black box ≥ white box + 0.34).
    "The substitute suffers more than the evaluator" is NOT true here (the recipe's substitute, seed 1:
    0.71 vs the evaluator's 0.72; against evaluation seed 1, 0.71 vs 0.60): on this easy data the attack
    transfers almost fully, so the test asserts the properties that held on every pair, with margins.
    """
    _, test = patterns3
    model = Oracle(test.modalities, OracleConfig())
    settings = _settings(classifier_path, substitute=substitute_path, fgsm_epsilon=FGSM_EPSILON, n_conditional=None)
    result = evaluate(model, test, ["fgsm"], settings, tmp_path)
    v = result.values
    assert v["fgsm/substitute_acc/clean"] > 0.95 and v["fgsm/eval_acc/clean"] > 0.95
    # the attack works on the net whose gradient it follows (min drop over the 18 pairs: 0.19)
    assert v["fgsm/substitute_acc/adv"] < v["fgsm/substitute_acc/clean"] - 0.15
    # it transfers to the evaluator (min drop 0.065) ...
    assert v["fgsm/eval_acc/adv"] < v["fgsm/eval_acc/clean"] - 0.05
    # ... but is a black-box attack: far weaker than the evaluator's own gradient (min gap 0.34)
    assert v["fgsm/eval_acc/adv"] > _attacked_accuracy(patterns_classifier, test, FGSM_EPSILON) + 0.25
    # the copy is the attacked input, stored as uint8: rounding may flip a borderline image or two of 1,500
    assert v["fgsm/coherence/adv/mean"] == pytest.approx(v["fgsm/eval_acc/adv"], abs=0.005)
    assert v["fgsm/coherence/clean/mean"] == pytest.approx(v["fgsm/eval_acc/clean"])
    assert v["fgsm/coherence/drop_pct"] == pytest.approx(
        100 * (v["fgsm/coherence/clean/mean"] - v["fgsm/coherence/adv/mean"]) / v["fgsm/coherence/clean/mean"]
    )
    assert result.provenance["fgsm/epsilon"] == str(FGSM_EPSILON)
    # the four accuracies are exactly the share of correct labels over every tuple and modality
    substitute, _ = load_classifier(substitute_path)
    assert v["fgsm/substitute_acc/clean"] == _attacked_accuracy(substitute, test, 0.0)
    assert v["fgsm/substitute_acc/adv"] == _attacked_accuracy(substitute, test, FGSM_EPSILON)
    assert v["fgsm/eval_acc/clean"] == _attacked_accuracy(patterns_classifier, test, 0.0)
    assert v["fgsm/eval_acc/adv"] == _attacked_accuracy(patterns_classifier, test, FGSM_EPSILON, substitute)


# angles between the inferred and the encoded latent, per modality: the metric must give their cosines
ROTATIONS = {"m0": 0.4, "m1": 1.1, "m2": 2.0}


@dataclass(frozen=True)
class RotatedLatentConfig(OracleConfig):
    latent_dim: int = 8


class RotatedLatent(Oracle):
    """Encodes modality m by its own fixed random projection; infers m's latent as that encoding rotated by
    ``ROTATIONS[m]`` in every coordinate pair (0, 1), (2, 3), ...: ``cos(inferred, encoded) = cos θ_m`` exactly."""

    Config = RotatedLatentConfig
    capabilities = frozenset({Capability.CONDITIONAL, Capability.ENCODE, Capability.LATENT_INFERENCE})

    def __init__(self, modalities, config: RotatedLatentConfig) -> None:
        super().__init__(modalities, config)
        generator = torch.Generator().manual_seed(0)
        self.projections = {m: torch.randn(3 * 28 * 28, config.latent_dim, generator=generator) for m in modalities}

    def _encode(self, batch, given):
        return torch.stack([batch[m].flatten(1) @ self.projections[m] for m in sorted(given)]).mean(0)

    def _infer_latent(self, batch, given, target):
        z = self._encode(batch, frozenset({target})).reshape(-1, self.config.latent_dim // 2, 2)
        c, s = np.cos(ROTATIONS[target]), np.sin(ROTATIONS[target])
        return torch.stack([c * z[..., 0] - s * z[..., 1], s * z[..., 0] + c * z[..., 1]], -1).flatten(1)


def test_latent_cosine_is_the_cosine_of_a_known_rotation(patterns3, classifier_path, tmp_path):
    _, test = patterns3
    result = evaluate(RotatedLatent(test.modalities, RotatedLatentConfig()), test, ["latent_cosine"],
                      _settings(classifier_path), tmp_path)
    for m, angle in ROTATIONS.items():
        assert result.values[f"latent_cosine/{m}"] == pytest.approx(np.cos(angle), abs=1e-5)
    assert result.values["latent_cosine/mean"] == pytest.approx(np.mean(np.cos(list(ROTATIONS.values()))), abs=1e-5)
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


def test_image_metrics_on_data_without_images_are_skipped_with_their_reason(classifier_path, tmp_path):
    """Mode coverage and FGSM need image modalities (a classifier reads them): on mask and attribute
    modalities alone each is skipped with the sentence that says so, never computed on nothing."""
    from mmbench.data.celebatwin import generate_split

    arrays, labels = generate_split(0, "test", 24)
    kinds = {"mask": "mask", "attributes": "attributes"}
    data = MultimodalDataset({m: arrays[m] for m in kinds}, labels, "celeba-twin.test", "no-images", kinds)
    model = Oracle(data.modalities, OracleConfig(), data)
    result = evaluate(model, data, ["mode_coverage", "fgsm"], _settings(classifier_path), tmp_path)
    assert result.values == {}
    assert result.skipped["mode_coverage"] == "mode coverage needs an image modality; the data has none"
    assert result.skipped["fgsm"] == "FGSM attacks image modalities; the data has none"


class LooBlind(Oracle):
    """Answers every query except m2 given all the others (as a model that declares only some queries)."""

    def answers(self, given, target):
        return not (target == "m2" and set(given) == {"m0", "m1"})


def test_fgsm_on_a_model_that_does_not_answer_a_leave_one_out_query_is_skipped_naming_the_gap(
    patterns3, classifier_path, tmp_path
):
    _, test = patterns3
    model = LooBlind(test.modalities, OracleConfig())
    result = evaluate(model, test, ["fgsm"], _settings(classifier_path, n_conditional=40), tmp_path)
    assert not any(k.startswith("fgsm/") for k in result.values)
    assert result.skipped["fgsm"] == ("FGSM compares leave-one-out generation from clean and attacked inputs; "
                                      "LooBlind does not answer it for ['m2']")


def _binary(kind: str, pixels: np.ndarray) -> np.ndarray:
    """What F1 scores of an attribute (bit > 127.5) or mask (rounded pixel) array, one row per tuple: written
    out here, not taken from mmbench.metrics.f1."""
    flat = pixels.reshape(len(pixels), -1)
    return (flat > 127.5 if kind == "attributes" else np.rint(flat / 255.0)).astype(int)


class ImageReader(Oracle):
    """Generates every non-image target from the given image alone (its first pixels, thresholded at 0.5),
    so an attack on the image changes what it generates; an image target is returned as it is."""

    def _sample_conditional_many(self, batch, queries):
        pixels = batch["image"].flatten(1)
        return [{t: batch[t].clone() if t == "image" else
                 (pixels[:, : batch[t][0].numel()] > 0.5).float().reshape(batch[t].shape) for t in targets}
                for _, targets in queries]


def test_attribute_fgsm_f1_equals_an_independent_computation_from_the_cached_samples(tmp_path):
    """On CelebA-shaped data FGSM also scores the attribute and mask modalities generated from the clean and
    from the attacked rest (paper Table 3): each F1 equals sklearn's sample-averaged F1 of the stored samples
    against the test tuples, and the drop is their relative difference in percent."""
    from sklearn.metrics import f1_score
    from test_table1 import KINDS, twin
    from test_table1 import settings as twin_settings

    from classifiers.nets import build_classifier
    from classifiers.store import save_classifier

    torch.manual_seed(0)  # an untrained net's gradient signs attack the images as well as a trained one's
    oracle = str(save_classifier(build_classifier("substitute-cnn"), "twin-untrained", {}, tmp_path / "clf").path)
    test = twin("test", 24)
    result = evaluate(ImageReader(test.modalities, OracleConfig(), test), test, ["fgsm"],
                      twin_settings(classifier=oracle, substitute=oracle, fgsm_epsilon=0.3), tmp_path / "eval")
    values, samples = result.values, tmp_path / "eval" / "samples"
    clean, adv = {}, {}
    for target in ("mask", "attributes"):
        name = f"{'.'.join(m for m in KINDS if m != target)}__{target}.npy"
        truth = _binary(KINDS[target], test.images[target])
        (clean_file,), (adv_file,) = samples.glob(f"loo-*/{name}"), samples.glob(f"loo_fgsm-*/{name}")
        clean[target] = f1_score(truth, _binary(KINDS[target], np.load(clean_file)), average="samples", zero_division=0)
        adv[target] = f1_score(truth, _binary(KINDS[target], np.load(adv_file)), average="samples", zero_division=0)
        assert values[f"fgsm/f1/clean/{target}"] == pytest.approx(clean[target], abs=1e-12), target
        assert values[f"fgsm/f1/adv/{target}"] == pytest.approx(adv[target], abs=1e-12), target
    assert all(adv[t] != pytest.approx(clean[t], abs=0.01) for t in clean)  # the attack changed what was generated
    mean_clean, mean_adv = np.mean(list(clean.values())), np.mean(list(adv.values()))
    assert values["fgsm/f1/clean/mean"] == pytest.approx(mean_clean) and values["fgsm/f1/adv/mean"] == pytest.approx(mean_adv)
    assert values["fgsm/f1/drop_pct"] == pytest.approx(100 * (mean_clean - mean_adv) / mean_clean)
    assert result.provenance["fgsm/n"] == str(len(test)) and result.artifacts["fgsm.csv"].name == "fgsm.csv"
    with open(result.artifacts["fgsm.csv"]) as fh:  # the run's artifact holds every FGSM number, as logged
        assert {row["key"]: float(row["value"]) for row in csv.DictReader(fh)} == {
            k: pytest.approx(v) for k, v in values.items() if k.startswith("fgsm/")}
