"""Datasets as registered parts: the runner and validation ask the source, never the dataset kind."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import pytest
from benchmark_modules import load_benchmark
from click.testing import CliRunner

from mmbench.data import registry
from mmbench.data.dataset import MultimodalDataset
from mmbench.data.source import DataSource, Identity, ModalitySpec, Say, data_id
from mmbench.runner import data as data_mod
from mmbench.runner.validate import validate_suite
from mmbench.suites import get_suite
from mmbench.suites.spec import DatasetSpec

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


class Stripes(DataSource):
    """A third-party dataset written outside mmbench: an image and an attribute vector, in memory."""

    family = "stripes-test"
    summary = "test dataset"
    classifier_roles = ()
    built: list[str] = []

    def modality_specs(self) -> tuple[ModalitySpec, ...]:
        return (ModalitySpec("picture", "image", (3, 8, 8)), ModalitySpec("tags", "attributes", (4, 1, 1)))

    def default_sizes(self) -> dict[str, int | None]:
        return {"train": 40, "val": 10, "test": 20}

    def identity(self, modalities: Sequence[str], sizes: Mapping[str, int | None]) -> Identity:
        return Identity("stripes-hash", data_id({"modalities": list(modalities)}, sizes["train"]))

    def ensure(self, say: Say) -> None:
        Stripes.built.append(self.name)

    def load(self, split: str, modalities: Sequence[str], n: int | None) -> MultimodalDataset:
        n = n or self.default_sizes()[split]
        rng = np.random.default_rng(len(split))
        tags = rng.integers(0, 2, size=(n, 4, 1, 1)).astype(np.uint8) * 255
        picture = np.repeat(tags[:, :, :, :].max(axis=1, keepdims=True), 3, axis=1) * np.ones((1, 1, 8, 8), np.uint8)
        data = MultimodalDataset({"picture": picture, "tags": tags}, np.zeros(n, np.int64), f"stripes.{split}",
                                 modality_kinds={"tags": "attributes"})
        return data.select_modalities(modalities)


@pytest.fixture
def stripes_registered():
    registry.register("stripes-test", f"{__name__}:Stripes", "test dataset")
    yield
    registry.DATASETS.unregister("stripes-test")


def _suite_on(dataset: DatasetSpec, metrics: tuple[str, ...] = ("f1",)):
    suite = get_suite("synthetic")
    return dataclasses.replace(suite, dataset=dataset, metrics=metrics, optional_metrics=frozenset(),
                               variants=suite.variants[:1])


def test_synthetic_identity_is_what_it_was_before_sources():
    """Job ids hash the data reference: the values measured before the refactor must not move."""
    suite = get_suite("synthetic")
    smoke = suite.budget("smoke")
    ref = data_mod.data_ref(suite.dataset, smoke, suite.dataset.modalities)
    two = data_mod.data_ref(suite.dataset, smoke, suite.dataset.modalities[:2])
    assert (ref.kind, ref.name, ref.n_train, ref.n_val, ref.n_test) == ("synthetic", "patterns3", 256, 32, 48)
    assert (ref.dataset_hash, ref.data_id, two.data_id) == ("3bb53e4d85a1cb42", "4b4837c1b5d93dc0", "8c622010cd200b83")
    plan = data_mod.classifier_plan(suite, smoke, ref.dataset_hash)
    assert plan.eval_name == "patterns3-3bb53e4d85a1-eval-24steps"


def test_a_registered_third_party_dataset_runs_through_the_runner_unchanged(stripes_registered):
    spec = DatasetSpec("stripes-test", "stripes", 2)
    assert spec.modalities == ("picture", "tags")
    suite = _suite_on(spec)
    budget = suite.budget("smoke")
    data_mod.ensure_dataset(spec, lambda _: None)
    assert Stripes.built[-1] == "stripes"
    ref = data_mod.data_ref(spec, budget, spec.modalities)
    assert ref.kind == "stripes-test" and ref.dataset_hash == "stripes-hash"
    train, val, test = data_mod.load_splits(ref)
    assert (len(train), len(val), len(test)) == (budget.n_train, budget.n_val, budget.n_test)
    assert train.modality_kinds == {"tags": "attributes"}
    plan = data_mod.classifier_plan(suite, budget, ref.dataset_hash)
    assert data_mod.ensure_classifiers(suite, budget, plan, lambda _: None, "cpu") == {"eval": None, "substitute": None}


def test_validation_takes_modality_kinds_from_the_source(stripes_registered):
    on_stripes = validate_suite(_suite_on(DatasetSpec("stripes-test", "stripes", 2)))
    assert not [e for e in on_stripes.errors if "f1" in e], on_stripes.errors  # F1 has an attribute target here
    on_patterns = validate_suite(_suite_on(DatasetSpec("synthetic", "patterns3", 3)))
    assert any("'f1' produces no keys" in e and "m0 (image)" in e for e in on_patterns.errors), on_patterns.errors


def test_validation_names_an_unknown_dataset_and_a_source_s_own_problems():
    unknown = validate_suite(_suite_on(DatasetSpec("polymnst", "polymnist10", 10), ("coherence",)))
    assert any("unknown dataset 'polymnst'. Did you mean 'polymnist'?" in e for e in unknown.errors), unknown.errors
    too_many = validate_suite(_suite_on(DatasetSpec("polymnist", "polymnist11", 11), ("coherence",)))
    assert any("PolyMNIST has 2..10 modalities" in e for e in too_many.errors), too_many.errors
    assert validate_suite(_suite_on(DatasetSpec("celeba-twin", "celeba-twin", 3))).errors == []
    four = validate_suite(_suite_on(DatasetSpec("celeba-twin", "celeba-twin", 4))).errors
    assert four == ["dataset 'celeba-twin': celeba-twin has 3 modalities, the suite asks for 4"]


def test_a_target_that_is_not_a_source_is_refused():
    registry.register("bad", "mmbench.data.store:load_dataset", "")
    try:
        with pytest.raises(TypeError, match=r"dataset 'bad' .* not a subclass of mmbench\.data\.source\.DataSource"):
            registry.source_class("bad")
    finally:
        registry.DATASETS.unregister("bad")


def test_the_twin_suite_dataset_is_built_when_missing(tmp_path):
    spec = DatasetSpec("celeba-twin", "celeba-twin", 3)
    lines: list[str] = []
    with pytest.raises(data_mod.DataMissing):
        data_mod.data_ref(spec, get_suite("synthetic").budget("smoke"), spec.modalities)
    data_mod.ensure_dataset(spec, lines.append)
    assert any("building it now (= mmbench data prepare --dataset celeba-twin)" in line for line in lines)
    ref = data_mod.data_ref(spec, dataclasses.replace(get_suite("synthetic").budget("smoke"), n_train=100), spec.modalities)
    train, _, test = data_mod.load_splits(ref)
    assert train.modalities == ("image", "mask", "attributes") and len(train) == 100
    assert test.modality_kinds == {"image": "image", "mask": "mask", "attributes": "attributes"}


def test_cli_prepare_refuses_an_unknown_dataset_and_ls_lists_the_families():
    from mmbench.cli import main

    bad = CliRunner().invoke(main, ["data", "prepare", "--dataset", "celebamask"])
    assert bad.exit_code != 0 and "Did you mean 'celebamaskhq'" in bad.output
    listed = CliRunner().invoke(main, ["ls", "datasets"])
    assert listed.exit_code == 0
    assert {line.split()[0] for line in listed.output.splitlines()} >= {"polymnist", "synthetic", "celebamaskhq", "celeba-twin", "png"}


def test_the_coherence_records_key_their_stages_by_the_runs_data_identity(stripes_registered):
    """bench_coherence's stages carry the data id a run's jobs carry (full train split), so they are shared."""

    from mmbench.suites.spec import Budget

    bench = load_benchmark("bench_coherence", "bench_coherence_ids")
    dataset = DatasetSpec("stripes-test", "stripes", 2)
    run = data_mod.data_ref(dataset, Budget(name="b", purpose="", seeds=(0,)), dataset.modalities)
    assert bench.runner_data_id("stripes", dataset.modalities, family="stripes-test") == run.data_id
    assert bench.runner_data_id("stripes", ("picture",), family="stripes-test") != run.data_id
