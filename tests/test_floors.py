"""The image-blind F1 floors (``majority``, ``marginal``, baselines/floors): counted from the train split, they
score what a constant answer and an input-blind draw score, computed here independently from the arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmbench.data.celebatwin import generate_split
from mmbench.data.dataset import MultimodalDataset

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def twin(split: str, n: int) -> MultimodalDataset:
    arrays, labels = generate_split(0, split, n)
    return MultimodalDataset(arrays, labels, f"celeba-twin.{split}", f"twin-0-{split}-{n}",
                             {"mask": "mask", "attributes": "attributes"})


def trained(name: str, train: MultimodalDataset, tmp_path):
    from mmbench import registry
    from mmbench.nets.modality import specs_of
    from mmbench.training.trainer import TrainerOptions, train_model

    model = registry.build(name, train.modalities, {}, specs_of(train))
    options = TrainerOptions(workdir=tmp_path / "train", config_hash=name, seed=0, quiet=True, model_name=name)
    reports = train_model(model, train, None, options)
    assert [(r.name, r.steps) for r in reports] == [("frequency", 0)]
    return model


def settings():
    from mmbench.metrics.settings import EvalSettings

    return EvalSettings(n_conditional=40, n_unconditional=8, batch_size=20, grid_size=4, kid=False)


def sample_f1(truth: np.ndarray, answer: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(truth.astype(int), answer.astype(int), average="samples", zero_division=0))


def test_the_majority_row_scores_each_entrys_training_majority_whatever_it_is_given(tmp_path):
    from mmbench.metrics.pipeline import evaluate

    train, test = twin("train", 300), twin("test", 40)
    result = evaluate(trained("majority", train, tmp_path), test, ["f1"], settings(), tmp_path / "eval")
    for target in ("attributes", "mask"):
        on = train.images[target].reshape(300, -1) > 127.5
        majority = np.broadcast_to(on.mean(axis=0) > 0.5, (40, on.shape[1]))
        expected = sample_f1(test.images[target].reshape(40, -1) > 127.5, majority)
        for key in (f"f1/loo/{target}", *(f"f1/given/{g}/{target}" for g in ("image", "mask", "attributes") if g != target)):
            assert result.values[key] == pytest.approx(expected, abs=1e-12), key
    assert 0.5 < result.values["f1/given/image/attributes"] < 0.75  # the twin's dense attributes: a strong floor
    assert not result.skipped  # every F1 cell targets attributes or the mask, which it answers


def test_the_marginal_row_draws_each_entry_at_its_training_frequency(tmp_path):
    train = twin("train", 300)
    model = trained("marginal", train, tmp_path)
    on = train.images["attributes"].reshape(300, -1) > 127.5
    assert model.frequency["attributes"].detach().numpy().reshape(-1) == pytest.approx(on.mean(axis=0), abs=1e-6)
    image = torch.zeros(4000, *train.images["image"].shape[1:])
    torch.manual_seed(0)
    draws = model.sample_conditional({"image": image}, frozenset({"image"}), frozenset({"attributes"}))["attributes"]
    share = draws.reshape(4000, -1).mean(dim=0).numpy()
    sd = np.sqrt(on.mean(axis=0) * (1 - on.mean(axis=0)) / 4000)
    assert np.all(np.abs(share - on.mean(axis=0)) < 5 * sd + 1e-9)  # Bernoulli at the frequency
    assert set(np.unique(draws.numpy())) == {0.0, 1.0} and len({tuple(r) for r in draws.reshape(4000, -1)[:50].tolist()}) > 1


def test_the_floors_answer_no_image_target_and_ignore_their_input(tmp_path):
    from mmbench.contract import CapabilityError

    train = twin("train", 64)
    model = trained("majority", train, tmp_path)
    assert model.answers(frozenset({"image"}), "attributes") and model.answers(frozenset({"mask", "attributes"}), "mask")
    assert not model.answers(frozenset({"mask"}), "image")
    batch, _ = train.batch(np.arange(8))
    with pytest.raises(CapabilityError, match="does not answer image"):
        model.sample_conditional(batch, frozenset({"mask"}), frozenset({"image"}))
    noise = {"image": torch.rand_like(batch["image"])}
    clean = model.sample_conditional(batch, frozenset({"image"}), frozenset({"attributes"}))["attributes"]
    attacked = model.sample_conditional(noise, frozenset({"image"}), frozenset({"attributes"}))["attributes"]
    assert torch.equal(clean, attacked)


def test_the_floors_refuse_data_without_attribute_or_mask_modalities_and_unknown_answers():
    from mmbench import registry

    with pytest.raises(ValueError, match="answer attribute and mask modalities"):
        registry.build("majority", ("m0", "m1"))
    with pytest.raises(ValueError, match="answer must be one of"):
        registry.build("majority", ("m0", "m1"), {"answer": "median"})
