"""Adding a model is its folder, one registry line and its tests: a model that mmbench's source never names,
registered only through an ``mmbench.models`` entry point of an installed distribution, runs the synthetic
suite's smoke budget from the command line next to a built-in row.

The distribution is faked on disk: a ``<name>.dist-info/`` folder (METADATA, entry_points.txt) and the
model's module in a temporary folder on ``sys.path``, which is where ``importlib.metadata`` finds installed
distributions.
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
from click.testing import CliRunner
from test_runner import seed_classifiers, store_uri

from mmbench import registry, tracking
from mmbench.cli import main
from mmbench.records import Tag
from mmbench.runner import models as model_cache

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

TOY = "toy-mean"
DIST = "mmbench-toy-plugin"
MODULE = "mmbench_toy_plugin_model"

# A model written outside mmbench: one trained stage (each modality's mean image, fitted by MSE); samples are
# that image plus noise. It declares the capabilities the synthetic suite's required metrics need.
TOY_SOURCE = '''
from dataclasses import dataclass

import torch
from torch import nn

from mmbench.config import src
from mmbench.contract import Capability, MultimodalModel, Stage, StageHParams


@dataclass(frozen=True)
class ToyMeanConfig:
    steps: int = src(20, "toy: optimiser steps of the mean-image stage")
    batch_size: int = src(32, "toy")
    noise: float = src(0.1, "toy: standard deviation of the sampling noise")
    image_shape: tuple[int, ...] = src((3, 28, 28), "the synthetic patterns' tensors")

    unscaled = ("width", "latent_per_modality", "sampler_steps", "score_width")  # no nets, no sampler


class ToyMean(MultimodalModel):
    """Each modality's mean training image, plus noise (a test plugin; no paper)."""

    Config = ToyMeanConfig
    capabilities = frozenset({Capability.CONDITIONAL, Capability.UNCONDITIONAL})
    paper = "none: a plugin test model"

    def __init__(self, modalities, config):
        super().__init__(modalities, config)
        self.means = nn.ParameterDict({m: nn.Parameter(torch.zeros(config.image_shape)) for m in self.modalities})

    def stages(self):
        def loss(batch, labels):
            return {"loss": sum(((batch[m] - self.means[m]) ** 2).mean() for m in self.modalities)}

        hparams = StageHParams(steps=self.config.steps, batch_size=self.config.batch_size, lr=0.05)
        return [Stage("mean", self.means, loss, hparams)]

    def _images(self, m, n):
        mean = self.means[m].detach().clamp(0, 1)
        return (mean + self.config.noise * torch.randn(n, *mean.shape, device=mean.device)).clamp(0, 1)

    def _sample_conditional(self, batch, given, targets):
        n = self.batch_size_of(batch)
        return {t: self._images(t, n) for t in sorted(targets)}

    def _sample_unconditional(self, n):
        return {m: self._images(m, n) for m in self.modalities}
'''


@pytest.fixture
def toy_distribution(tmp_path, monkeypatch):
    """An installed distribution (as ``importlib.metadata`` sees one) whose entry point adds ``toy-mean``;
    the models registry scans its entry-point group afresh, and forgets the toy afterwards."""
    (tmp_path / f"{MODULE}.py").write_text(textwrap.dedent(TOY_SOURCE))
    info = tmp_path / f"{DIST.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[mmbench.models]\n{TOY} = {MODULE}:ToyMean\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # also invalidates importlib's path and metadata caches
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    monkeypatch.setattr(registry.MODELS, "_plugins_loaded", False)
    model_cache.clear()
    assert TOY not in registry.MODELS.entries  # mmbench itself does not name the toy
    yield
    registry.MODELS.unregister(TOY)
    model_cache.clear()


@pytest.mark.usefixtures("toy_distribution")
def test_an_entry_point_model_runs_the_synthetic_smoke_suite(_isolated_home):
    seed_classifiers(_isolated_home)
    uri = store_uri(_isolated_home)
    cli = CliRunner()
    listed = cli.invoke(main, ["ls", "models"], catch_exceptions=False).output
    assert any(line.split()[:1] == [TOY] and f"plugin model from {DIST}" in line for line in listed.splitlines()), listed

    result = cli.invoke(main, ["run", "--suite", "synthetic", "--budget", "smoke", "--models", f"{TOY},dummy",
                               "--device", "cpu", "--quiet", "--threads", "1", "--tracking-uri", uri],
                        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "done: 2 finished, 0 failed" in result.output, result.output

    store = tracking.Store(uri)
    runs = {r.tags[Tag.MODEL]: r for r in store.job_runs(store.experiment_id("synthetic", create=False))}
    assert sorted(runs) == ["dummy", TOY]
    toy = runs[TOY]
    assert toy.status == tracking.FINISHED and toy.tags[Tag.VARIANT] == TOY
    assert toy.metrics["stage/mean/reused"] == 0.0 and toy.metrics["stage/mean/seconds"] > 0  # it trained here
    assert "train/mean/loss" in toy.metrics
    # every metric key the built-in dummy row gets, the toy gets too, except latent_cosine's: optional in the
    # suite and needing capabilities the toy lacks, those are skipped with a reason (a value or a reason, never 0)
    scores = {k for k in runs["dummy"].metrics if k.split("/")[0] not in ("job", "stage", "train")}
    latent = {k for k in scores if k.startswith("latent_cosine/")}
    assert latent and {k for k in scores if k.startswith("coherence/")}
    assert scores - latent <= set(toy.metrics) and not latent & set(toy.metrics)
    skipped = json.loads(toy.tags[Tag.SKIPPED])
    assert set(skipped) == latent and all("lacks capabilities" in reason for reason in skipped.values())


def test_only_registered_models_outside_the_rows_become_rows():
    from mmbench.runner.extra import with_extra_rows
    from mmbench.suites import get_suite

    suite = get_suite("synthetic")
    assert with_extra_rows(suite, ("dummy", "mvae")) is suite  # rows already
    registry.register("t-extra", "mmbench.dummy:DummyModel", "a registered model no suite names")
    try:
        extended = with_extra_rows(suite, ("t-extra", "dummy", "t-extra"))
        assert extended.variants[:-1] == suite.variants
        assert (extended.variants[-1].label, extended.variants[-1].model) == ("t-extra", "t-extra")
        assert [v.label for v in extended.select(("t-extra",))] == ["t-extra"]
    finally:
        registry.MODELS.unregister("t-extra")
    with pytest.raises(KeyError, match="neither a row of suite 'synthetic' nor a registered model. Did you mean 'dummy'"):
        with_extra_rows(suite, ("dumy",))
