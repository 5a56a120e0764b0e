"""Scoring one's own model: the example package of examples/mmbench_example_model, found through a
``mmbench.models`` entry point (a ``*.dist-info`` folder on sys.path, as an installed package has) or named
``package.module:Class``, trains and is scored beside the suite's rows; ``mmbench eval`` scores a
checkpoint without training, as a run the report shows; bad inputs get one line with the fix."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmbench import registry
from mmbench.cli import main
from mmbench.records import CHECKPOINT_SHA256, Tag, is_training_metric, provenance_tag
from mmbench.runner import models as model_cache

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mmbench_example_model"
ENTRY_POINT = "tiny-mvae"
TARGET = "mmbench_example_model.model:TinyMVAE"


@pytest.fixture
def example_installed(tmp_path, monkeypatch):
    """The example package importable and its entry point visible to importlib.metadata, as after
    ``pip install`` (its dist-info folder), without installing anything."""
    site = tmp_path / "site"
    info = site / "mmbench_example_model-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mmbench-example-model\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[mmbench.models]\n{ENTRY_POINT} = {TARGET}\n")
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry.MODELS, "_plugins_loaded", False)  # scan the entry points again
    model_cache.clear()
    yield
    for name in (ENTRY_POINT, TARGET):
        registry.MODELS.unregister(name)
    model_cache.clear()


def _cli(*args: str) -> object:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _store(home: Path) -> str:
    return f"sqlite:///{home / 'store.db'}"


def _results(uri: str) -> dict[str, object]:
    """Every job run of the synthetic smoke budget by row label (the latest when several)."""
    from mmbench import tracking

    store = tracking.Store(uri)
    runs = sorted(store.job_runs(store.experiment_id("synthetic"), "smoke"), key=lambda r: r.start_time)
    return {r.tags[Tag.VARIANT]: r for r in runs}


def _scores(run) -> dict[str, float]:  # type: ignore[no-untyped-def]
    return {k: v for k, v in run.metrics.items() if not is_training_metric(k)}


def test_own_model_trains_beside_the_suite_and_a_checkpoint_is_scored_without_training(
        example_installed, tmp_path, _isolated_home):
    import torch
    from test_runner import seed_classifiers

    seed_classifiers(_isolated_home)  # the synthetic smoke classifiers, trained once per pytest run
    uri = _store(tmp_path)
    ran = _cli("run", "--suite", "synthetic", "--models", f"{ENTRY_POINT},{TARGET},dummy", "--tracking-uri", uri,
               "--threads", "1", "--quiet")
    assert ran.exit_code == 0, ran.output
    runs = _results(uri)
    assert set(runs) == {ENTRY_POINT, "TinyMVAE", "dummy"}
    mine = runs[ENTRY_POINT]
    assert mine.status == "FINISHED" and mine.tags[Tag.EXTRA_ROW] == "true" and Tag.EXTRA_ROW not in runs["dummy"].tags
    assert runs["TinyMVAE"].tags[Tag.MODEL] == TARGET and runs["TinyMVAE"].status == "FINISHED"
    assert {"coherence/loo/m0", "coherence/uncond/all_agree"} <= set(_scores(mine))
    # the suite's scale reached the plugin's Config (smoke: 3 steps, width 0.125)
    assert mine.params["model/steps"] == "3" and mine.params["model/width"] == "0.125"

    out = tmp_path / "report"
    reported = _cli("report", "--suite", "synthetic", "--tracking-uri", uri, "--out", str(out), "--format", "md")
    assert reported.exit_code == 0, reported.output
    table = (out / "report.md").read_text()
    assert f"| {ENTRY_POINT} |" in table and "| TinyMVAE |" in table and "| dummy |" in table

    # the trained weights, evaluated again without training: the same numbers
    workdir = next(p for p in (_isolated_home / "runs" / "synthetic").iterdir()
                   if p.name == mine.tags[Tag.JOB_ID])
    model_pt = workdir / "model.pt"
    evaluated = _cli("eval", "--model", ENTRY_POINT, "--checkpoint", str(model_pt), "--suite", "synthetic",
                     "--seed", "0", "--tracking-uri", uri, "--threads", "1", "--quiet")
    assert evaluated.exit_code == 0, evaluated.output
    again = _results(uri)[f"{ENTRY_POINT}-checkpoint"]
    assert again.status == "FINISHED" and again.tags[Tag.EVALUATED_ONLY] == "true"
    assert again.tags[provenance_tag(CHECKPOINT_SHA256)] == hashlib.sha256(model_pt.read_bytes()).hexdigest()
    assert not any(k.startswith("stage/") for k in again.metrics)  # nothing was trained
    assert _scores(again) == _scores(mine) and len(_scores(mine)) > 20  # every key, bit for bit

    # a plain state_dict saved by the user scores the same
    from mmbench.persist import load_model

    plain = tmp_path / "mine.pt"
    torch.save(load_model(model_pt).state_dict(), plain)
    evaluated = _cli("eval", "--model", ENTRY_POINT, "--checkpoint", str(plain), "--suite", "synthetic",
                     "--tracking-uri", uri, "--threads", "1", "--quiet")
    assert evaluated.exit_code == 0, evaluated.output
    latest = _results(uri)[f"{ENTRY_POINT}-checkpoint"]
    assert latest.run_id != again.run_id and _scores(latest) == _scores(again)

    reported = _cli("report", "--suite", "synthetic", "--tracking-uri", uri, "--out", str(out), "--format", "md")
    assert f"| {ENTRY_POINT}-checkpoint |" in (out / "report.md").read_text()

    # wrong keys: one line naming what differs and the fix, before any run is opened
    before = len(_results(uri))
    wrong = tmp_path / "wrong.pt"
    state = torch.load(plain, weights_only=True)
    state["extra.weight"] = state.pop(next(iter(state)))
    torch.save(state, wrong)
    failed = _cli("eval", "--model", ENTRY_POINT, "--checkpoint", str(wrong), "--suite", "synthetic",
                  "--tracking-uri", uri, "--threads", "1", "--quiet")
    assert failed.exit_code == 1
    error = failed.output.strip().splitlines()[-1]
    assert "1 missing keys (encoders.m0.1.weight)" in error and "1 unexpected keys (extra.weight)" in error
    assert "Save model.state_dict()" in error and len(_results(uri)) == before
    other = _cli("eval", "--model", "dummy", "--checkpoint", str(model_pt), "--suite", "synthetic",
                 "--tracking-uri", uri, "--threads", "1", "--quiet")
    assert other.exit_code == 1 and other.output.strip().splitlines()[-1] == (
        f"Error: checkpoint {model_pt} is a job's model.pt of model {ENTRY_POINT!r}, not 'dummy'; "
        f"pass --model {ENTRY_POINT}")
    assert len(_results(uri)) == before


def test_bad_inputs_get_one_line_with_the_fix(example_installed, tmp_path):
    uri = _store(tmp_path)
    missing = _cli("eval", "--model", ENTRY_POINT, "--checkpoint", str(tmp_path / "nope.pt"), "--suite", "synthetic",
                   "--tracking-uri", uri)
    assert missing.exit_code == 1
    assert missing.output.strip() == (f"Error: checkpoint {tmp_path / 'nope.pt'} does not exist; pass the file "
                                      "written by torch.save(model.state_dict(), PATH) or a job's model.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a torch file")
    unknown = _cli("eval", "--model", "tiny-mvea", "--checkpoint", str(garbage), "--suite", "synthetic",
                   "--tracking-uri", uri)
    assert unknown.exit_code == 2
    assert "unknown model 'tiny-mvea'. Did you mean 'tiny-mvae'?" in unknown.output
    assert "'package.module:Class'" in unknown.output
    for bad in ("nosuch", "no_such_pkg.mod:Model"):
        ran = _cli("run", "--suite", "synthetic", "--models", f"{bad},dummy", "--tracking-uri", uri, "--dry-run")
        assert ran.exit_code != 0
        assert "Traceback" not in ran.output
        if ":" in bad:
            assert "cannot be imported (No module named 'no_such_pkg')" in ran.output
            assert "PYTHONPATH" in ran.output
            assert bad not in registry.names()  # a wrong import path is not kept as a model name
        else:
            assert "'nosuch' is neither a row of suite 'synthetic' nor a registered model" in ran.output
            assert "Scoring your own model" in ran.output


def test_a_checkpoint_that_is_no_state_dict_is_refused(tmp_path):
    import torch

    from mmbench.dummy import DummyModel
    from mmbench.runner.weights import CheckpointError, load_weights

    model = DummyModel(("m0", "m1"), DummyModel.Config())
    path = tmp_path / "x.pt"
    torch.save({"module": {}, "step": 3}, path)
    with pytest.raises(CheckpointError, match="one training stage's checkpoint; pass the job's model.pt"):
        load_weights(model, path)
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match="holds no state_dict"):
        load_weights(model, path)
    state = model.state_dict()
    state["anchor"] = torch.zeros(2)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"1 shapes differ \(anchor \(2,\) vs \(1,\)\)"):
        load_weights(model, path)
