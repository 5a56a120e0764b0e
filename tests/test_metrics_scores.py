"""The metric functions against closed forms and independent computations (no model, no pipeline)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmbench.metrics.coherence import agreement_shares, coherence, largest_agreement
from mmbench.metrics.coverage import coverage_stats
from mmbench.metrics.f1 import binarise, f1_samples
from mmbench.metrics.fgsm import drop_pct, fgsm_attack, fgsm_transform
from mmbench.metrics.latent import cosine_rows


# --- coherence ----------------------------------------------------------------------------------------
def test_coherence_is_the_share_of_matches():
    assert coherence(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 0])) == 0.5
    with pytest.raises(ValueError, match="equal"):
        coherence(np.array([1, 2]), np.array([1, 2, 3]))


def test_agreement_matches_a_brute_force_count():
    rng = np.random.default_rng(0)
    predictions = rng.integers(0, 4, size=(300, 6))
    brute = np.array([max(Counter(row.tolist()).values()) for row in predictions])
    assert np.array_equal(largest_agreement(predictions), brute)
    shares = agreement_shares(predictions)
    assert list(shares) == [2, 3, 4, 5, 6]
    for k, share in shares.items():
        assert share == pytest.approx(np.mean(brute >= k))
    assert all(shares[k] >= shares[k + 1] for k in range(2, 6))  # at least k is monotone in k


def test_agreement_extremes():
    same = np.tile(np.arange(10)[:, None], (1, 5))  # every modality agrees
    assert agreement_shares(same) == {2: 1.0, 3: 1.0, 4: 1.0, 5: 1.0}
    distinct = np.tile(np.arange(5)[None, :], (10, 1))  # all different
    assert agreement_shares(distinct) == {2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0}


# --- mode coverage ------------------------------------------------------------------------------------
def test_coverage_of_a_uniform_label_set_is_maximal():
    labels = np.repeat(np.arange(10), 100)
    stats = coverage_stats(np.bincount(labels, minlength=10))
    assert stats["entropy_norm"] == pytest.approx(1.0)
    assert stats["kl_uniform"] == pytest.approx(0.0, abs=1e-12)
    assert stats["classes_covered"] == 10


def test_coverage_of_one_class_is_minimal():
    stats = coverage_stats(np.bincount(np.full(1000, 3), minlength=10))
    assert stats["entropy_norm"] == 0.0
    assert stats["kl_uniform"] == pytest.approx(np.log(10))
    assert stats["classes_covered"] == 1


def test_coverage_matches_scipy_entropy():
    from scipy.stats import entropy

    counts = np.array([5, 0, 1, 30, 7, 7, 0, 2, 1, 9])
    stats = coverage_stats(counts)
    p = counts / counts.sum()
    assert stats["entropy_norm"] == pytest.approx(entropy(p) / np.log(10))
    assert stats["kl_uniform"] == pytest.approx(entropy(p, np.full(10, 0.1)))
    assert stats["classes_covered"] == 8


# --- FGSM ---------------------------------------------------------------------------------------------
def test_fgsm_raises_the_substitute_loss_and_lowers_its_accuracy(patterns3, patterns_classifier):
    _, test = patterns3
    net = patterns_classifier.eval()
    batch, labels = test.batch(np.arange(300), ["m0"])
    x = batch["m0"]
    adv = fgsm_attack(net, x, labels, epsilon=0.05)
    assert adv.min() >= 0 and adv.max() <= 1
    assert (adv - x).abs().max() <= 0.05 + 1e-6
    with torch.no_grad():
        clean_logits, adv_logits = net(x), net(adv)
    assert F.cross_entropy(adv_logits, labels) > F.cross_entropy(clean_logits, labels)
    clean_acc = (clean_logits.argmax(1) == labels).float().mean()
    adv_acc = (adv_logits.argmax(1) == labels).float().mean()
    assert clean_acc > 0.9 and adv_acc < clean_acc
    assert net.training is False  # the attack restores the mode


def test_fgsm_is_one_signed_gradient_step_and_leaves_pixels_without_gradient_alone():
    """Closed form on a linear net that reads only the first channel: the attack adds ε·sign(∂loss/∂x) there
    (the gradient written out: W_y·(softmax − onehot)), and pixels the net never reads keep their value."""
    torch.manual_seed(0)
    weights = torch.randn(10, 28 * 28)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Unflatten(1, (3, 28 * 28)))
    reads_first_channel = torch.nn.Sequential(net, _FirstChannel(weights))
    x, labels = torch.rand(4, 3, 28, 28) * 0.5 + 0.25, torch.tensor([0, 3, 5, 9])
    adv = fgsm_attack(reads_first_channel, x, labels, epsilon=0.1)
    probs = torch.softmax(x[:, 0].flatten(1) @ weights.T, dim=1)
    grad = ((probs - F.one_hot(labels, 10).float()) @ weights).reshape(4, 28, 28)
    assert torch.allclose(adv[:, 0], x[:, 0] + 0.1 * grad.sign(), atol=1e-6)
    assert torch.equal(adv[:, 1:], x[:, 1:])  # no gradient, no change


class _FirstChannel(torch.nn.Module):
    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.weights = weights

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        return flat[:, 0] @ self.weights.T


def test_fgsm_with_zero_epsilon_is_the_identity(patterns3, patterns_classifier):
    _, test = patterns3
    batch, labels = test.batch(np.arange(16), ["m1"])
    assert torch.equal(fgsm_attack(patterns_classifier, batch["m1"], labels, 0.0), batch["m1"])


def test_fgsm_transform_attacks_the_named_modalities_only(patterns3, patterns_classifier):
    """The batch transform of the FGSM metric attacks the image modalities it names and hands every other
    modality (a mask, attributes, an image left observed clean) through as the same tensor."""
    _, test = patterns3
    batch, labels = test.batch(np.arange(16), ["m0", "m1"])
    attacked = fgsm_transform(patterns_classifier, 0.1, ["m0"], "cpu")(batch, labels)
    assert torch.equal(attacked["m0"], fgsm_attack(patterns_classifier, batch["m0"], labels, 0.1))
    assert not torch.equal(attacked["m0"], batch["m0"])
    assert attacked["m1"] is batch["m1"]


def test_fgsm_report_skips_the_relative_drop_of_a_zero_clean_score_with_its_reason():
    """A relative drop from a clean score of 0 is undefined: skipped with the reason, never a division."""
    from mmbench.metrics.base import MetricOutput
    from mmbench.metrics.fgsm import _report

    out = MetricOutput()
    _report(out, "coherence", {"m0": 0.0, "m1": 0.0}, {"m0": 0.0, "m1": 0.0})
    assert out.values == {"fgsm/coherence/clean/m0": 0.0, "fgsm/coherence/adv/m0": 0.0, "fgsm/coherence/clean/m1": 0.0,
                          "fgsm/coherence/adv/m1": 0.0, "fgsm/coherence/clean/mean": 0.0, "fgsm/coherence/adv/mean": 0.0}
    assert out.skipped == {"fgsm/coherence/drop_pct": "clean coherence is 0: a relative drop is undefined"}
    out = MetricOutput()
    _report(out, "f1", {"a": 0.8, "b": 0.4}, {"a": 0.6, "b": 0.3})
    assert out.values["fgsm/f1/drop_pct"] == pytest.approx(25.0) and out.skipped == {}


def test_drop_pct():
    assert drop_pct(0.8, 0.6) == pytest.approx(25.0)
    assert drop_pct(0.5, 0.5) == 0.0


# --- latent cosine ------------------------------------------------------------------------------------
def test_cosine_of_identical_latents_is_one_and_of_opposite_minus_one():
    z = np.random.default_rng(0).normal(size=(100, 64))
    assert np.allclose(cosine_rows(z, z), 1.0)
    assert np.allclose(cosine_rows(z, -3 * z), -1.0)


def test_cosine_of_independent_latents_is_near_zero():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2000, 64)), rng.normal(size=(2000, 64))
    # per-row cosine has std 1/sqrt(64); the mean of 2000 has std 0.0028
    assert abs(cosine_rows(a, b).mean()) < 0.015


def test_cosine_needs_equal_shapes():
    with pytest.raises(ValueError, match="same shape"):
        cosine_rows(np.ones((3, 4)), np.ones((3, 5)))


# --- F1 -----------------------------------------------------------------------------------------------
def _f1_by_hand(truth: np.ndarray, pred: np.ndarray) -> float:
    scores = []
    for t, p in zip(truth, pred, strict=True):
        tp = int((t & p).sum())
        denominator = int(t.sum() + p.sum())
        scores.append(0.0 if denominator == 0 else 2 * tp / denominator)
    return float(np.mean(scores))


def test_f1_samples_matches_the_per_sample_definition():
    rng = np.random.default_rng(2)
    truth = rng.random((200, 12)) < 0.3
    scores = np.clip(truth + rng.normal(0, 0.4, size=truth.shape), 0, 1)
    expected = _f1_by_hand(truth.astype(int), (scores > 0.5).astype(int))
    assert f1_samples(truth.astype(float), scores, "attributes") == pytest.approx(expected)
    # a perfect prediction scores 1 on every sample with a positive label, 0 on empty ones (sklearn's default)
    assert f1_samples(truth.astype(float), truth.astype(float)) == pytest.approx(truth.any(axis=1).mean())


def test_f1_of_masks_rounds_and_flattens_per_sample():
    truth = np.zeros((2, 1, 2, 2))
    truth[0, 0, 0, 0] = truth[1, 0, 1, :] = 1.0
    generated = np.zeros_like(truth)
    generated[0, 0, 0, 0] = 0.7  # rounds to 1: sample 0 has F1 1
    generated[1, 0, 1, 0] = 0.4  # rounds to 0: sample 1 has no positive prediction, F1 0
    assert binarise(generated, "mask").tolist() == [[1, 0, 0, 0], [0, 0, 0, 0]]
    assert f1_samples(truth, generated, "mask") == pytest.approx(0.5)


def test_f1_rejects_images_and_shape_mismatch():
    with pytest.raises(ValueError, match="attributes"):
        f1_samples(np.ones((2, 3)), np.ones((2, 3)), "image")
    with pytest.raises(ValueError, match="same"):
        f1_samples(np.ones((2, 3)), np.ones((2, 4)))


def test_coverage_input_checks_and_two_class_boundaries():
    """Two classes and a single sample are valid; no total, a negative count, one class or a table are not."""
    assert coverage_stats(np.array([3, 3])) == {"entropy_norm": 1.0, "kl_uniform": 0.0, "classes_covered": 2.0}
    assert coverage_stats(np.array([1, 0, 0])) == {"entropy_norm": 0.0, "kl_uniform": pytest.approx(np.log(3)), "classes_covered": 1.0}
    for bad in (np.zeros(3), np.array([2, -1, 1]), np.array([5]), np.ones((2, 3))):
        with pytest.raises(ValueError, match="non-negative counts over at least 2 classes with a positive total"):
            coverage_stats(bad)
