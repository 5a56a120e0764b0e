"""Shared fixtures: tiny synthetic data, a probe classifier for it, an isolated MMBENCH_HOME."""

from __future__ import annotations

import functools
import os

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own MMBENCH_HOME so nothing touches ~/.mmbench."""
    home = tmp_path_factory.mktemp("mmbench_home")
    monkeypatch.setenv("MMBENCH_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


@pytest.fixture(scope="module")
def one_cpu_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_cpu_thread")``): on a
    shared 2-core machine two threads per process spin against each other (measured here: a small
    training step 10× slower with 2 threads than with 1 under load)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@functools.cache
def _patterns3():
    from mmbench.data.synthetic import make_patterns

    return make_patterns(3, n=2000, seed=0), make_patterns(3, n=500, seed=1)


@functools.cache
def _patterns_classifier():
    import torch

    from classifiers.train import train_classifier

    torch.manual_seed(0)
    train, _ = _patterns3()
    return train_classifier("pmclf", train, None, epochs=1, batch_size=128, lr=1e-3, seed=0, device="cpu", progress=False)


@pytest.fixture(scope="module")
def patterns3():
    """(train, test) of the easy 3-modality pattern dataset (built once per test process)."""
    return _patterns3()


@pytest.fixture(scope="module")
def patterns_classifier():
    """The paper's digit classifier trained briefly on the pattern data (≈100 % accurate; trained once per
    test process)."""
    return _patterns_classifier()
