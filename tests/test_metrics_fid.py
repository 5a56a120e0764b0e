"""FID/KID against independent numpy/scipy computations; the feature extractors and their weights."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
import torch

from mmbench.metrics.extractors import (
    CLASSIFIER,
    INCEPTION,
    INCEPTION_ENV,
    INCEPTION_FILES,
    InceptionWeightsError,
    build_extractor,
    ensure_registered,
    extract_features,
    identify,
    random_inception_weights,
    resolve_inception_weights,
)
from mmbench.metrics.fid import (
    covariance_sqrt,
    fid_from_features,
    frechet_distance,
    kid_from_features,
    statistics,
)


def reference_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance written independently (pytorch-fid's formula, scipy's matrix square root)."""
    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def reference_kid(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with the kernel (x·y/d + 1)³ over all samples (MMD-GAN's estimator), written out."""
    d, m = x.shape[1], len(x)
    k = lambda a, b: (a @ b.T / d + 1.0) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
    )


def _gaussians(seed: int = 0, n: int = 600, d: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    b = rng.normal(loc=0.5, size=(n, d)) @ rng.normal(size=(d, d)) * 0.7
    return a, b


@pytest.fixture(scope="module")
def classifier_path(patterns_classifier, tmp_path_factory):
    from classifiers.store import save_classifier

    return save_classifier(patterns_classifier, "patterns3-eval", {}, tmp_path_factory.mktemp("clf")).path


# --- the numbers --------------------------------------------------------------------------------------
def test_fid_equals_an_independent_frechet_distance():
    a, b = _gaussians()
    ours, reference = fid_from_features(a, b), reference_fid(a, b)
    assert reference > 1.0
    assert ours == pytest.approx(reference, rel=1e-6)


@pytest.mark.parametrize("n", [600, 12], ids=["full-rank", "rank-deficient"])
def test_fid_equals_torch_fidelitys_general_eigenvalue_formula(n):
    """Σ√eig(AΣ₁A), A = Σ₂^½, against torch-fidelity's Σ Re √eig(Σ₁Σ₂) — also when N < D (singular Σ)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    a, b = _gaussians(2, n=n)
    s1, s2 = statistics(a), statistics(b)
    reference = fid_statistics_to_metric(s1, s2, verbose=False)[KEY_METRIC_FID]
    assert frechet_distance(s1, s2) == pytest.approx(reference, rel=1e-6)
    assert frechet_distance(s1, s2, covariance_sqrt(s2["sigma"])) == pytest.approx(reference, rel=1e-6)


def test_covariance_sqrt_squares_back():
    a, _ = _gaussians(3, n=10)  # rank 9 in 16 dimensions
    sigma = statistics(a)["sigma"]
    root = covariance_sqrt(sigma)
    np.testing.assert_allclose(root, root.T, atol=1e-12)
    np.testing.assert_allclose(root @ root, sigma, atol=1e-8 * np.abs(sigma).max())


def test_fid_of_a_set_with_itself_is_zero():
    a, _ = _gaussians(1)
    stats = statistics(a)
    assert abs(frechet_distance(stats, stats)) < 1e-8 * np.trace(stats["sigma"])


def test_fid_is_symmetric_and_grows_with_a_mean_shift():
    a, b = _gaussians(2)
    assert fid_from_features(a, b) == pytest.approx(fid_from_features(b, a), rel=1e-6)
    # a pure mean shift by v adds |v|² exactly
    shift = np.full(a.shape[1], 0.25)
    assert fid_from_features(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-6)


def test_kid_equals_an_independent_unbiased_mmd():
    a, b = _gaussians(3, n=300)
    mean, std = kid_from_features(a, b, subsets=1, subset_size=300)  # one subset = every sample
    assert mean == pytest.approx(reference_kid(a, b), rel=1e-9)
    assert std == 0.0
    # subsets larger than the sets are clipped to the set size
    assert kid_from_features(a, b, subsets=1, subset_size=10_000)[0] == pytest.approx(mean, rel=1e-9)


def test_kid_of_one_distribution_is_near_zero_and_of_two_is_not():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    same, _ = kid_from_features(x, y, subsets=20, subset_size=200)
    different, _ = kid_from_features(x, y + 1.0, subsets=20, subset_size=200)
    assert abs(same) < 0.05 * different


def test_statistics_need_two_rows():
    with pytest.raises(ValueError, match="at least 2"):
        statistics(np.ones((1, 4)))


# --- the classifier extractor on real data ------------------------------------------------------------
def test_halves_of_real_data_are_close_and_noise_is_far(patterns3, classifier_path):
    _, test = patterns3
    identity = identify(CLASSIFIER, classifier_path, None)
    assert identity.weights_sha256 and identity.layer == "features"
    extractor = build_extractor(identity)
    real = extract_features(extractor, test.images["m0"], 128, "cpu")
    assert real.shape == (len(test), 512) and real.dtype == np.float32
    noise = np.random.default_rng(0).integers(0, 256, size=test.images["m0"].shape, dtype=np.uint8)
    noise_features = extract_features(extractor, noise, 128, "cpu")
    halves = fid_from_features(real[::2], real[1::2])
    to_noise = fid_from_features(real, noise_features)
    assert halves < 0.05 * to_noise


def test_classifier_extractor_features_are_the_penultimate_layer(patterns3, classifier_path, patterns_classifier):
    _, test = patterns3
    extractor = build_extractor(identify(CLASSIFIER, classifier_path, None))
    images = test.images["m1"][:8]
    with torch.no_grad():
        expected = patterns_classifier.features(torch.from_numpy(images).float() / 255).numpy()
    assert np.allclose(extract_features(extractor, images, 3, "cpu"), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        extract_features(extractor, images.astype(np.float32), 3, "cpu")


def test_registration_is_idempotent():
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    ensure_registered()
    ensure_registered()
    assert CLASSIFIER in FEATURE_EXTRACTORS_REGISTRY and INCEPTION in FEATURE_EXTRACTORS_REGISTRY


# --- Inception from a local file ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    return random_inception_weights(tmp_path_factory.mktemp("weights") / INCEPTION_FILES[0], seed=0)


def test_inception_loads_weights_from_the_local_file(inception_file):
    saved = torch.load(inception_file, weights_only=True)
    with pytest.warns(UserWarning, match="not the standard FID Inception"):
        identity = identify(INCEPTION, None, str(inception_file))
    assert identity.weights_path == str(inception_file) and identity.layer == "2048"
    assert identity.provenance()["fid/extractor_weights_standard"] == "false"
    extractor = build_extractor(identity)
    loaded = extractor.state_dict()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    images = np.random.default_rng(0).integers(0, 256, size=(2, 3, 28, 28), dtype=np.uint8)
    features = extract_features(extractor, images, 2, "cpu")
    assert features.shape == (2, 2048) and np.isfinite(features).all()


def test_inception_weights_from_the_environment(inception_file, monkeypatch):
    monkeypatch.setenv(INCEPTION_ENV, str(inception_file))
    assert resolve_inception_weights(None) == inception_file


def test_inception_default_location(inception_file, monkeypatch):
    from mmbench.metrics.extractors import default_inception_path

    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    target = default_inception_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(inception_file)
    assert resolve_inception_weights(None) == target


def test_missing_inception_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    with pytest.raises(InceptionWeightsError) as info:
        identify(INCEPTION, None, str(tmp_path / "nope.pth"))
    message = str(info.value)
    assert INCEPTION_FILES[0] in message and INCEPTION_FILES[1] in message
    assert INCEPTION_ENV in message and "never" in message and str(tmp_path / "nope.pth") in message


def _randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every tensor random, BatchNorm statistics included (default ones are all 0 or 1, so a swapped
    BatchNorm key would go unseen); He-scaled convolutions keep the 2048 pool3 features of order 1-50."""
    generator = torch.Generator().manual_seed(seed)

    def rand(t: torch.Tensor, scale: float = 1.0, offset: float = 0.0, uniform: bool = False) -> torch.Tensor:
        draw = torch.rand if uniform else torch.randn
        return draw(t.shape, generator=generator) * scale + offset

    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(rand(m.weight, (2 / m.weight[0].numel()) ** 0.5))
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(rand(m.weight, 1.0, 0.5, uniform=True))
                m.bias.copy_(rand(m.bias, 0.1))
                m.running_mean.copy_(rand(m.running_mean, 0.1))
                m.running_var.copy_(rand(m.running_var, 1.0, 0.5, uniform=True))
            elif isinstance(m, torch.nn.Linear):
                m.weight.copy_(rand(m.weight, 0.01))
                m.bias.copy_(rand(m.bias))
    return module


def _torch_fidelity_file(path) -> str:
    """torch-fidelity's format: the state_dict of its FeatureExtractorInceptionV3, built without download."""
    from unittest import mock

    from torch_fidelity import feature_extractor_inceptionv3 as tfi

    with mock.patch.object(tfi, "load_state_dict_from_url", return_value=None), mock.patch.object(
        tfi.FeatureExtractorInceptionV3, "load_state_dict", return_value=None
    ):
        net = tfi.FeatureExtractorInceptionV3(INCEPTION, ["2048"], feature_extractor_weights_path=None)
    torch.save(_randomise(net, seed=1).state_dict(), path)
    return str(path)


def _pytorch_fid_file(path) -> str:
    """pytorch-fid's format: the state_dict of ``fid_inception_v3()`` (torchvision's Inception3 with the
    FIDInceptionA/C/E patches, 1008 classes, no aux head), built as pytorch-fid builds it minus the download."""
    from unittest import mock

    import torchvision
    from pytorch_fid import inception as pfi

    with mock.patch.object(pfi, "load_state_dict_from_url", return_value=None), mock.patch.object(
        torchvision.models.inception.Inception3, "load_state_dict", return_value=None
    ):
        net = pfi.fid_inception_v3()
    torch.save(_randomise(net, seed=2).state_dict(), path)
    return str(path)


def _pytorch_fid_pool3(path: str, images: np.ndarray) -> np.ndarray:
    """pytorch-fid's own network (its InceptionV3 wrapper, block 3 = pool3) loading the file as it loads its
    published weights. Its input convention is float x in [0, 1] mapped to 2x - 1; torch-fidelity's (ours) is
    uint8 u mapped to (u - 128) / 128, so pytorch-fid is given x = u / 256: the same network input, exactly."""
    from unittest import mock

    from pytorch_fid import inception as pfi

    with mock.patch.object(pfi, "load_state_dict_from_url", return_value=torch.load(path, weights_only=True)):
        net = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    with torch.no_grad():
        return net(torch.from_numpy(images).float() / 256)[0].flatten(1).numpy()


def _torch_fidelity_pool3(path: str, images: np.ndarray) -> np.ndarray:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    net = FeatureExtractorInceptionV3(INCEPTION, ["2048"], feature_extractor_weights_path=path)
    with torch.no_grad():
        return net(torch.from_numpy(images))[0].numpy()


@pytest.mark.parametrize("layout", ["torch-fidelity", "pytorch-fid"])
def test_inception_weights_of_either_format_give_their_networks_features(layout, tmp_path):
    """``--inception-weights FILE`` (identify → build_extractor → extract_features) against the networks of
    pytorch-fid and torch-fidelity loading the same file, on the same 299×299 images: at 299 both resizes are
    the identity (ours, torch-fidelity's, copies TF1's bilinear resize; pytorch-fid uses torch's, which
    differs on upsampling by design), so the comparison is of the networks and their weights alone."""
    make = {"torch-fidelity": _torch_fidelity_file, "pytorch-fid": _pytorch_fid_file}[layout]
    path = make(tmp_path / f"{layout}.pth")
    images = np.random.default_rng(0).integers(0, 256, size=(2, 3, 299, 299), dtype=np.uint8)
    with pytest.warns(UserWarning, match="not the standard FID Inception"):
        identity = identify(INCEPTION, None, path)
    ours = extract_features(build_extractor(identity), images, 2, "cpu")
    assert ours.shape == (2, 2048) and np.abs(ours).max() > 1.0  # features of order 1, not vanishing
    np.testing.assert_allclose(ours, _pytorch_fid_pool3(path, images), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours, _torch_fidelity_pool3(path, images), rtol=1e-5, atol=1e-5)


def test_inception_files_of_unknown_formats_are_clear_errors(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not weights")
    pickled = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), pickled)
    checkpoint = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": {"fc.bias": torch.zeros(2)}, "epoch": 3}, checkpoint)
    wrapper = tmp_path / "wrapper.pth"
    torch.save({"blocks.0.0.conv.weight": torch.zeros(32, 3, 3, 3)}, wrapper)
    for path, message in ((text, "not a torch state_dict file"), (pickled, "not a torch state_dict file"),
                          (checkpoint, "holds a dict, not a state_dict of tensors"),
                          (wrapper, "pytorch-fid's InceptionV3 wrapper")):
        with pytest.warns(UserWarning):
            identity = identify(INCEPTION, None, str(path))
        with pytest.raises(ValueError, match=message) as info:
            build_extractor(identity)
        assert str(path) in str(info.value)


def test_a_wrong_weights_file_is_a_clear_error(tmp_path):
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.warns(UserWarning):
        identity = identify(INCEPTION, None, str(wrong))
    with pytest.raises(ValueError, match="does not hold weights"):
        build_extractor(identity)


def test_unknown_extractor():
    with pytest.raises(ValueError, match="unknown FID extractor"):
        identify("vgg", None, None)


def test_real_statistics_are_cached_with_their_square_root(tmp_path, monkeypatch):
    """The first call extracts features and stores mu, sigma and sigma's square root; the second reads
    them back without extracting (the same FID follows), and a file without the root still loads."""
    from types import SimpleNamespace

    from mmbench.metrics.fid import real_statistics

    monkeypatch.setenv("MMBENCH_HOME", str(tmp_path))
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    calls = []

    def extract(key, images):
        calls.append(key)
        return features

    ctx = SimpleNamespace(extractor_identity=SimpleNamespace(name="test-extractor", weights_sha256="0" * 64), features=extract)
    images = rng.integers(0, 256, size=(300, 1, 4, 4), dtype=np.uint8)
    first = real_statistics(ctx, images, "data", "m0")
    again = real_statistics(ctx, images, "data", "m0")
    assert len(calls) == 1 and again.path == first.path
    np.testing.assert_array_equal(again.sigma_sqrt, first.sigma_sqrt)
    for read in (first, again):  # KID needs the features, computed or read back (stored as float32)
        np.testing.assert_allclose(read.features, features, rtol=1e-6)
    with np.load(first.path) as stored:
        assert {"mu", "sigma", "sigma_sqrt", "features"} <= set(stored.files)
    np.testing.assert_allclose(first.sigma_sqrt @ first.sigma_sqrt, first.stats["sigma"], atol=1e-8)
    with np.load(first.path) as stored:
        np.savez(first.path, **{k: stored[k] for k in stored.files if k != "sigma_sqrt"})  # an older file
    old = real_statistics(ctx, images.copy(), "data", "m0")
    np.testing.assert_allclose(old.sigma_sqrt, first.sigma_sqrt, atol=1e-10)
    generated = statistics(features[:150] + 0.5)
    assert frechet_distance(generated, again.stats, again.sigma_sqrt) == pytest.approx(
        frechet_distance(generated, first.stats), rel=1e-9)


def test_real_statistics_of_other_images_with_the_same_name_and_size_are_recomputed(tmp_path, monkeypatch):
    """The cache name holds the images' content hash: another split (or a regenerated dataset) with the same
    dataset name, modality and N gets its own statistics, not the first one's."""
    from types import SimpleNamespace

    from mmbench.metrics.fid import real_statistics

    monkeypatch.setenv("MMBENCH_HOME", str(tmp_path))
    rng = np.random.default_rng(0)
    extracted = []

    def extract(key, images):
        extracted.append(rng.normal(size=(len(images), 4)) + len(extracted))  # each set its own features
        return extracted[-1]

    ctx = SimpleNamespace(extractor_identity=SimpleNamespace(name="test-extractor", weights_sha256="0" * 64), features=extract)
    first_images = rng.integers(0, 256, size=(50, 1, 4, 4), dtype=np.uint8)
    second_images = rng.integers(0, 256, size=(50, 1, 4, 4), dtype=np.uint8)
    first = real_statistics(ctx, first_images, "data", "m0")
    second = real_statistics(ctx, second_images, "data", "m0")
    assert len(extracted) == 2 and first.path != second.path
    np.testing.assert_allclose(second.stats["mu"], extracted[1].mean(0))
    again = real_statistics(ctx, first_images.copy(), "data", "m0")  # the same content: read back
    assert len(extracted) == 2
    np.testing.assert_allclose(again.stats["mu"], extracted[0].mean(0))


def test_kid_subset_size_seed_and_defaults_reach_torch_fidelity():
    """Subsets of min(subset_size, N1, N2) rows (either set may be the smaller), the given seed, and the
    defaults 100 subsets of 1000 from seed 0: the same numbers as torch-fidelity called directly."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric

    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(50, 6)), rng.normal(size=(30, 6)) + 0.3

    def reference(x, y, subsets, size, seed):
        out = kid_features_to_metric(torch.from_numpy(x), torch.from_numpy(y), kid_subsets=subsets,
                                     kid_subset_size=size, rng_seed=seed, verbose=False)
        return float(out[KEY_METRIC_KID_MEAN])

    assert kid_from_features(a, b, subsets=7, subset_size=10, seed=3)[0] == pytest.approx(reference(a, b, 7, 10, 3), rel=1e-12)
    assert kid_from_features(a, b, subsets=7, subset_size=1000, seed=3)[0] == pytest.approx(reference(a, b, 7, 30, 3), rel=1e-12)
    assert kid_from_features(b, a, subsets=7, subset_size=1000, seed=3)[0] == pytest.approx(reference(b, a, 7, 30, 3), rel=1e-12)
    assert kid_from_features(a, b)[0] == pytest.approx(reference(a, b, 100, 30, 0), rel=1e-12)
    assert np.isfinite(kid_from_features(a[:2], b[:2], subsets=2)[0])
    with pytest.raises(ValueError, match="KID needs at least 2 samples per set, got 1 and 30"):
        kid_from_features(a[:1], b)


def test_kid_of_float32_features_is_computed_in_float64():
    """Features arrive as float32 (the extractor's); KID's unbiased estimate cancels large kernel sums, so
    it is computed in float64: equal to the float64 reference on the same (float32-valued) inputs."""
    rng = np.random.default_rng(11)
    a = (rng.normal(size=(200, 32)) * 3 + 20).astype(np.float32)
    b = (rng.normal(size=(200, 32)) * 3 + 20.05).astype(np.float32)
    exact = reference_kid(a.astype(np.float64), b.astype(np.float64))
    mean, _ = kid_from_features(a, b, subsets=1, subset_size=200)
    assert mean == pytest.approx(exact, rel=1e-9, abs=1e-9)


def test_kid_subsets_are_a_thousand_rows_by_default():
    """The default subset size is 1000 (torch-fidelity's and the paper's), visible with more rows than that."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric

    rng = np.random.default_rng(12)
    a, b = rng.normal(size=(1100, 4)), rng.normal(size=(1100, 4)) + 0.2
    want = kid_features_to_metric(torch.from_numpy(a), torch.from_numpy(b), kid_subsets=3, kid_subset_size=1000,
                                  rng_seed=0, verbose=False)[KEY_METRIC_KID_MEAN]
    assert kid_from_features(a, b, subsets=3)[0] == pytest.approx(float(want), rel=1e-12)


def test_real_features_are_memoised_by_content_within_one_evaluation(tmp_path, monkeypatch):
    """Within one evaluation the real features are memoised under a key holding the images' content hash:
    two real sets of one modality (e.g. the test split and another subset) each get their own features."""
    from mmbench.metrics.context import EvalContext
    from mmbench.metrics.fid import real_statistics

    monkeypatch.setenv("MMBENCH_HOME", str(tmp_path))
    ctx = object.__new__(EvalContext)  # the real memo, with a feature map of closed form: mean and spread
    ctx._features, ctx._identity = {}, SimpleNamespace(name="test-extractor", weights_sha256="0" * 64)
    monkeypatch.setattr(EvalContext, "extractor_identity", property(lambda self: self._identity))

    def forward(self, key, images):
        flat = images.reshape(len(images), -1).astype(np.float64)
        self._features[key] = np.stack([flat.mean(1), flat.std(1), flat[:, 0]], 1)

    monkeypatch.setattr(EvalContext, "_forward", forward)
    rng = np.random.default_rng(3)
    dark = rng.integers(0, 100, size=(40, 1, 4, 4), dtype=np.uint8)
    bright = rng.integers(150, 256, size=(40, 1, 4, 4), dtype=np.uint8)
    for images in (dark, bright):
        stats = real_statistics(ctx, images, "data", "m0")
        flat = images.reshape(len(images), -1).astype(np.float64)
        np.testing.assert_allclose(stats.stats["mu"], [flat.mean(), flat.std(1).mean(), flat[:, 0].mean()])
