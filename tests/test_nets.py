"""Per-kind networks and likelihoods (mmbench.nets.modality) and every model on image, mask and attributes.

PolyMNIST must not move: every registered model's config hash, stage reuse keys, parameter count and
state_dict shapes equal the fingerprint computed before kinds existed (tests/pin_nets.py).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from pin_nets import FIXTURE, fingerprint, models
from test_contract import tiny_overrides

from mmbench import registry
from mmbench.contract import Capability
from mmbench.data.celebatwin import generate_split
from mmbench.data.dataset import MultimodalDataset
from mmbench.data.source import ModalitySpec
from mmbench.nets import modality as kinds
from mmbench.persist import load_model, save_model
from mmbench.training.trainer import TrainerOptions, train_model

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

TWIN = {
    "image": ModalitySpec("image", "image", (3, 32, 32)),
    "mask": ModalitySpec("mask", "mask", (1, 32, 32)),
    "attributes": ModalitySpec("attributes", "attributes", (12, 1, 1)),
}
HETEROGENEOUS = ("mvae", "mmvae", "mopoe", "mvtcae", "mmvaeplus", "mld", "sbm-vae", "sbm-rae", "sbm-vae-c", "sbm-rae-t")


# --- PolyMNIST is unchanged --------------------------------------------------------------------------


def test_polymnist10_models_are_unchanged():
    """Config hash, reuse keys, parameter count and state_dict shapes of every model at 10 modalities."""
    pinned = json.loads(FIXTURE.read_text())
    assert sorted(pinned) == models()
    for name in models():
        assert fingerprint(name) == pinned[name], name


def test_polymnist_specs_build_the_unspecified_model():
    specs = kinds.default_specs(("m0", "m1"))
    plain, given = registry.build("mopoe", ("m0", "m1"), {"width": 0.125}), registry.build("mopoe", ("m0", "m1"), {"width": 0.125}, specs)
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in given.state_dict().items()}


# --- the factory ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "shape"), [
    ("image", (3, 28, 28)), ("image", (3, 32, 32)), ("image", (3, 128, 128)), ("mask", (1, 32, 32)),
    ("mask", (1, 128, 128)), ("attributes", (12, 1, 1)), ("attributes", (18, 1, 1)),
])
def test_encoder_and_decoder_shapes(kind, shape):
    enc, dec = kinds.build_encoder(kind, shape, 16, 0.125), kinds.build_decoder(kind, shape, 16, 0.125)
    x = torch.rand(2, *shape)
    mu, logvar = enc(x)
    assert mu.shape == logvar.shape == (2, 16)
    out = dec(mu)
    assert out.shape == (2, *shape)
    y = kinds.output(kind, out)
    assert y.min() >= 0 and y.max() <= 1


def test_larger_images_add_residual_levels():
    """128×128 has two more 64-channel levels than 32×32 (one per doubling), which has none more than 28."""
    def n_params(shape):
        return sum(p.numel() for p in kinds.build_encoder("image", shape, 16, 0.25).parameters())
    n28, n32, n128 = n_params((3, 28, 28)), n_params((3, 32, 32)), n_params((3, 128, 128))
    assert n28 == n32 < n128


@pytest.mark.parametrize(("kind", "shape", "problem"), [
    ("image", (3, 48, 48), "side"), ("image", (3, 32, 28), "square"), ("mask", (3, 32, 32), "one channel"),
    ("attributes", (12, 2, 1), "(L, 1, 1)"), ("audio", (1, 32, 32), "unknown kind"),
])
def test_bad_specs_are_refused_clearly(kind, shape, problem):
    with pytest.raises(ValueError, match=problem if problem != "(L, 1, 1)" else r"\(L, 1, 1\)"):
        kinds.build_encoder(kind, shape, 8)


def test_bernoulli_nll_is_the_closed_form():
    torch.manual_seed(0)
    logits, x = torch.randn(3, 12, 1, 1), (torch.rand(3, 12, 1, 1) > 0.5).float()
    p = torch.sigmoid(logits)
    expected = -(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)
    for kind in ("attributes", "mask"):
        torch.testing.assert_close(kinds.nll(kind, x, logits, 1.0), expected)
        torch.testing.assert_close(kinds.reconstruction_error(kind, x, logits), expected)


def test_image_nll_is_the_gaussian():
    torch.manual_seed(0)
    x, mean, scale = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), 0.7
    expected = (0.5 * ((x - mean) / scale) ** 2 + math.log(scale) + 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
    torch.testing.assert_close(kinds.nll("image", x, mean, scale), expected)
    torch.testing.assert_close(kinds.reconstruction_error("image", x, mean), (x - mean).square().flatten(1).sum(1))


def test_specs_of_a_dataset():
    arrays, labels = generate_split(0, "val", 8)
    data = MultimodalDataset(arrays, labels, modality_kinds={"mask": "mask", "attributes": "attributes"})
    assert kinds.specs_of(data) == TWIN


# --- every model on image, mask and attributes -------------------------------------------------------


@pytest.fixture(scope="module")
def twin_train():
    arrays, labels = generate_split(0, "train", 64)
    return MultimodalDataset(arrays, labels, "twin", "twin-test", {"mask": "mask", "attributes": "attributes"})


@pytest.mark.parametrize("name", HETEROGENEOUS)
def test_model_trains_and_generates_each_kind(name, twin_train, tmp_path):
    model = registry.build(name, tuple(TWIN), tiny_overrides(name), TWIN)
    options = TrainerOptions(workdir=tmp_path, config_hash=name, seed=0, quiet=True, model_name=name)
    train_model(model, twin_train, None, options)
    batch, _ = twin_train.batch(np.arange(4))
    out = model.sample_conditional(batch, frozenset({"image"}))
    assert set(out) == {"mask", "attributes"}
    assert out["mask"].shape == (4, 1, 32, 32) and out["attributes"].shape == (4, 12, 1, 1)
    if model.has(Capability.UNCONDITIONAL):
        free = model.sample_unconditional(3)
        assert free["image"].shape == (3, 3, 32, 32)
    for x in out.values():
        assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    # Bernoulli means, not clamped Gaussian means: strictly inside (0, 1)
    assert 0 < out["attributes"].min() and out["attributes"].max() < 1


def test_saved_model_keeps_its_kinds(tmp_path):
    model = registry.build("mvtcae", tuple(TWIN), tiny_overrides("mvtcae"), TWIN)
    save_model(model, tmp_path / "m.pt", "mvtcae")
    again = load_model(tmp_path / "m.pt")
    assert again.specs == TWIN
    for k, v in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v)


def test_image_only_model_refuses_masks_and_attributes():
    with pytest.raises(ValueError, match=r"takes \['image'\] modalities.*'mask': 'mask'"):
        registry.build("dummy", tuple(TWIN), {}, TWIN)


def test_mmvaeplus_refuses_128_pixel_images_with_the_reason():
    faces = {"image": ModalitySpec("image", "image", (3, 128, 128)), "mask": ModalitySpec("mask", "mask", (1, 128, 128))}
    with pytest.raises(ValueError, match=r"MMVAE\+'s conv nets take images of side \(28, 32\), got 128"):
        registry.build("mmvaeplus", tuple(faces), tiny_overrides("mmvaeplus"), faces)


def test_sbm_builds_on_celebamaskhq_shapes():
    faces = {"image": ModalitySpec("image", "image", (3, 128, 128)), "mask": ModalitySpec("mask", "mask", (1, 128, 128)),
             "attributes": ModalitySpec("attributes", "attributes", (18, 1, 1))}
    model = registry.build("sbm-vae", tuple(faces), tiny_overrides("sbm-vae"), faces).eval()
    z = torch.zeros(2, model.latent_dim)
    with torch.no_grad():
        shapes = {m: tuple(ae.decode(z).shape) for m, ae in zip(model.modalities, model.autoencoders, strict=True)}
    assert shapes == {"image": (2, 3, 128, 128), "mask": (2, 1, 128, 128), "attributes": (2, 18, 1, 1)}
