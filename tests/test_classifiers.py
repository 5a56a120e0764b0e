"""The evaluation / substitute classifiers: learning, determinism, checkpoint identity and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from classifiers import (
    RECIPES,
    ClassifierHashError,
    ClassifierNotFoundError,
    PMClassifier,
    SubstituteClassifier,
    build_classifier,
    default_name,
    evaluate_classifier,
    load_classifier,
    save_classifier,
    train_classifier,
)
from mmbench.data.synthetic import make_patterns
from mmbench.hashing import sha256_file

FAST = {"steps": 40, "batch_size": 64, "lr": 2e-3}  # 100 % on held-out patterns at 30 steps


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MMBENCH_HOME", str(tmp_path / "mmbench-home"))


@pytest.fixture(scope="module")
def train_set():
    return make_patterns(num_modalities=3, n=600, seed=0)


@pytest.fixture(scope="module")
def test_set():
    return make_patterns(num_modalities=3, n=300, seed=1)


@pytest.fixture(scope="module")
def trained(train_set):
    return train_classifier("pmclf", train_set, **FAST, seed=0)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _check_learnt(model: torch.nn.Module, test_set) -> None:
    accuracy = evaluate_classifier(model, test_set)
    assert set(accuracy) == set(test_set.modalities)
    assert min(accuracy.values()) >= 0.9  # chance is 0.1


def test_eval_classifier_learns_held_out_patterns(trained, test_set):
    _check_learnt(trained, test_set)


def test_substitute_learns_held_out_patterns(train_set, test_set):
    _check_learnt(train_classifier("substitute-cnn", train_set, **FAST, seed=1), test_set)


def test_same_seed_same_weights_and_global_rng_untouched(train_set):
    rng_before = torch.get_rng_state()
    a = train_classifier("pmclf", train_set, steps=5, batch_size=32, seed=3)
    assert torch.equal(torch.get_rng_state(), rng_before)
    b = train_classifier("pmclf", train_set, steps=5, batch_size=32, seed=3)
    c = train_classifier("pmclf", train_set, steps=5, batch_size=32, seed=4)
    assert _same_weights(a, b)
    assert not _same_weights(a, c)


def test_pmclf_matches_sbmae_layout():
    model = PMClassifier()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (3, 32, (3, 3), (2, 2), (1, 1)),
        (32, 64, (3, 3), (2, 2), (1, 1)),
        (64, 128, (3, 3), (2, 2), (1, 1)),
    ]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(2048, 512), (512, 10)]


@pytest.mark.parametrize("arch, dim", [("pmclf", 512), ("substitute-cnn", 256)])
def test_features_and_head(arch, dim):
    model = build_classifier(arch).eval()
    x = torch.rand(5, 3, 28, 28)
    with torch.no_grad():
        features = model.features(x)
        assert features.shape == (5, dim)
        assert torch.equal(model(x), model.head(features))


def test_substitute_is_a_different_architecture():
    assert RECIPES["eval"].arch != RECIPES["substitute"].arch
    assert RECIPES["eval"].seed != RECIPES["substitute"].seed
    eval_net, substitute = (
        build_classifier(RECIPES["eval"].arch),
        build_classifier(RECIPES["substitute"].arch),
    )
    assert isinstance(eval_net, PMClassifier) and isinstance(substitute, SubstituteClassifier)
    shapes = lambda m: [tuple(p.shape) for p in m.parameters()]  # noqa: E731
    assert shapes(eval_net) != shapes(substitute)


def test_evaluate_restores_training_mode(trained, test_set):
    trained.train()
    evaluate_classifier(trained, test_set)
    assert trained.training
    trained.eval()


def test_checkpoint_round_trip(trained, tmp_path):
    record = save_classifier(trained, "patterns3-eval", {"seed": 0, "accuracy": {"m0": 1.0}}, tmp_path)
    model, loaded = load_classifier("patterns3-eval", tmp_path)
    assert loaded == record
    assert loaded.sha256 == sha256_file(tmp_path / "patterns3-eval.pt")
    assert json.loads((tmp_path / "patterns3-eval.json").read_text())["sha256"] == loaded.sha256
    assert loaded.arch == "pmclf" and loaded.meta["accuracy"] == {"m0": 1.0}
    assert "weights_sha256" in loaded.meta
    assert not loaded.matches_dataset("abc")
    x = torch.rand(4, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), trained(x))
    # by path, with the right expected hash
    _, by_path = load_classifier(tmp_path / "patterns3-eval.pt", expected_sha256=record.sha256)
    assert by_path.sha256 == record.sha256


def test_record_matches_its_dataset(trained, train_set, tmp_path):
    record = save_classifier(trained, "c", {"data_hash": train_set.data_hash}, tmp_path)
    assert record.matches_dataset(train_set.data_hash)
    assert record.matches_dataset(train_set.subset(50).data_hash)
    assert not record.matches_dataset(make_patterns(3, 50, seed=9).data_hash)


def test_wrong_expected_hash_is_an_error(trained, tmp_path):
    save_classifier(trained, "c", {}, tmp_path)
    with pytest.raises(ClassifierHashError, match="expected"):
        load_classifier("c", tmp_path, expected_sha256="0" * 64)


def test_modified_file_is_an_error(trained, tmp_path):
    record = save_classifier(trained, "c", {}, tmp_path)
    other = save_classifier(build_classifier("pmclf"), "d", {}, tmp_path)
    record.path.write_bytes(other.path.read_bytes())  # a valid checkpoint, but not the one recorded
    with pytest.raises(ClassifierHashError, match="sidecar"):
        load_classifier("c", tmp_path)


def test_default_names():
    assert default_name("polymnist10") == "polymnist10-eval"
    assert default_name("polymnist10.test[:100]", "substitute") == "polymnist10-substitute"
    assert default_name("/data/polymnist5", "eval") == "polymnist5-eval"
    with pytest.raises(ValueError, match="role"):
        default_name("polymnist10", "attack")


def test_missing_checkpoint_names_the_train_command(tmp_path):
    with pytest.raises(
        ClassifierNotFoundError, match="mmbench classifier train --dataset polymnist10 --role substitute"
    ):
        load_classifier("polymnist10-substitute", tmp_path)


def test_cli_train_and_info(tmp_path, monkeypatch):
    import mmbench.cli.classifier as cli

    splits = {
        "train": make_patterns(3, 300, seed=0),
        "val": make_patterns(3, 100, seed=2),
        "test": make_patterns(3, 200, seed=1),
    }
    monkeypatch.setattr(cli, "_load_split", lambda dataset, split: splits[split])
    args = ["train", "--dataset", "patterns3", "--steps", "10", "--batch-size", "64", "--device", "cpu"]
    result = CliRunner().invoke(cli.classifier, [*args, "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "mean" in result.output and "worst" in result.output
    sha = sha256_file(tmp_path / "patterns3-eval.pt")
    assert sha in result.output
    again = CliRunner().invoke(cli.classifier, [*args, "--out", str(tmp_path), "--quiet"])
    assert again.exit_code != 0 and "--force" in again.output
    info = CliRunner().invoke(cli.classifier, ["info", "patterns3-eval", "--dir", str(tmp_path)])
    assert info.exit_code == 0, info.output
    assert sha in info.output and "pmclf" in info.output and "data_hash" in info.output
    missing = CliRunner().invoke(cli.classifier, ["info", "nope-eval", "--dir", str(tmp_path)])
    assert missing.exit_code != 0 and "mmbench classifier train --dataset nope --role eval" in missing.output


def test_progress_reports_loss_and_val_accuracy(train_set, test_set):
    lines: list[str] = []
    train_classifier("pmclf", train_set, test_set, steps=4, batch_size=32, progress=lines.append, log_every=2)
    assert sum(line.startswith("step ") for line in lines) == 2
    assert lines[-1].startswith("epoch") and "mean" in lines[-1] and "worst" in lines[-1]


def test_cli_and_runner_record_the_same_metadata(tmp_path, monkeypatch):
    """One recipe: a checkpoint trained by `mmbench classifier train` and one trained by the runner for a
    suite carry the same metadata fields (only the values differ)."""
    import dataclasses

    import mmbench.cli.classifier as cli
    from classifiers.store import load_classifier
    from mmbench.runner import data as data_mod
    from mmbench.suites import get_suite

    splits = {"train": make_patterns(3, 120, seed=0), "val": make_patterns(3, 30, seed=2),
              "test": make_patterns(3, 60, seed=1)}
    monkeypatch.setattr(cli, "_load_split", lambda dataset, split: splits[split])
    args = ["train", "--dataset", "patterns3", "--steps", "3", "--batch-size", "32", "--device", "cpu", "--quiet"]
    assert CliRunner().invoke(cli.classifier, [*args, "--out", str(tmp_path)]).exit_code == 0
    suite = get_suite("synthetic")
    budget = dataclasses.replace(suite.budget("smoke"), n_train=120, n_test=60, classifier_steps=3)
    ref = data_mod.data_ref(suite.dataset, budget, suite.dataset.modalities)
    plan = data_mod.classifier_plan(suite, budget, ref.dataset_hash)
    data_mod.ensure_classifiers(suite, budget, plan, lambda _: None, "cpu")
    from_cli = load_classifier("patterns3-eval", tmp_path)[1].meta
    from_runner = load_classifier(plan.eval_name)[1].meta
    assert set(from_cli) == set(from_runner)
    assert from_cli["steps"] == from_runner["steps"] == 3 and from_runner["test_tuples"] == 60
    assert from_runner["trained_by"] == "mmbench run --suite synthetic"
    assert from_cli["trained_by"].startswith("mmbench classifier train --dataset patterns3")
