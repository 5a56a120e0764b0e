"""The resumable coherence benchmark's bookkeeping (``benchmarks/bench_coherence.py``), without training.

A rerun resumes where the trainer's checkpoints are; the trace must forget what happened after them
(points and training-clock records) and restore the training seconds at that step.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_coherence", ROOT / "benchmarks" / "bench_coherence.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _trace(bench):
    trace = bench.Trace("m", "score", target=0.5)
    trace.clock = [("ae/m0", 50, 10.0), ("ae/m0", 100, 20.0), ("score", 50, 30.0), ("score", 100, 41.0),
                   ("score", 150, 52.0)]
    trace.points = [(100, 41.0, 0.2), (150, 52.0, 0.3)]
    return trace


def test_rewind_to_a_checkpoint_inside_the_last_stage(bench):
    trace = _trace(bench)
    seconds = trace.rewind([("ae/m0", 100, True), ("score", 100, False)])
    assert seconds == 41.0
    assert trace.points == [(100, 41.0, 0.2)]
    assert trace.clock[-1] == ("score", 100, 41.0)


def test_rewind_to_an_earlier_stage_drops_every_point(bench):
    trace = _trace(bench)
    seconds = trace.rewind([("ae/m0", 50, False), ("score", 0, False)])
    assert seconds == 10.0
    assert trace.points == [] and trace.clock == [("ae/m0", 50, 10.0)]


def test_rewind_when_everything_is_finished_keeps_everything(bench):
    trace = _trace(bench)
    assert trace.rewind([("ae/m0", 100, True), ("score", 150, True)]) == 52.0
    assert len(trace.points) == 2 and len(trace.clock) == 5


def test_trace_round_trips_through_its_file(bench, tmp_path):
    trace = _trace(bench)
    trace.settings = {"model": "m", "overrides": {"width": 0.25}}
    trace.save(tmp_path / "trace.json")
    again = bench.Trace.load(tmp_path / "trace.json")
    assert again == trace
    assert again.reached is None and again.best == (150, 0.3)


def test_set_items_parse_as_python_literals(bench):
    assert bench.parse_sets(["cross_targets=2", "beta = 0.5", "estimator='dreg'"]) == {
        "cross_targets": 2, "beta": 0.5, "estimator": "dreg"}
    for bad in ["cross_targets", "=2", "estimator=dreg"]:
        with pytest.raises(ValueError, match="--set"):
            bench.parse_sets([bad])


def test_set_items_reach_the_model_and_the_settings_hash(bench):
    from argparse import Namespace

    from mmbench.hashing import config_hash
    from mmbench.suites.spec import Scale

    scale = Scale(width=0.25, steps=100, batch_size=64, sampler_steps=10, score_width=64)
    args = Namespace(eval_every=50, eval_n=100, target=0.5)
    plain = bench._overrides("mmvae", scale, 300, "data")
    varied = bench._overrides("mmvae", scale, 300, "data", {"cross_targets": 2})
    assert varied == {**plain, "cross_targets": 2} and "cross_targets" not in plain
    hashes = {config_hash(bench.run_settings("mmvae", o, args, "data")) for o in (plain, varied)}
    assert len(hashes) == 2
    assert bench.run_settings("mmvae", plain, args, "data")["overrides"] == plain  # no --set: the old settings
