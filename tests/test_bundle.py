"""mmbench.tracking.bundle: finished runs copied to another store read back as they were written."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_records import BUDGET, SUITE, _job

from mmbench import tracking
from mmbench.cli import main
from mmbench.metrics.settings import EvalResult, EvalSettings
from mmbench.records import Kind, Tag
from mmbench.report.collect import collect
from mmbench.runner.job import JobContext, log_evaluation, open_child
from mmbench.tracking.bundle import MANIFEST, BundleError, export_bundle, import_bundle, read_manifest

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(200))


def _store(path: Path) -> tracking.Store:
    store = tracking.Store(f"sqlite:///{path}")
    store.check()
    return store


def _source(tmp_path: Path) -> tuple[tracking.Store, list[str]]:
    """A store with two finished job runs (metric histories, a sample grid), a failed one and one of another
    budget: only the two finished runs of the budget are exported."""
    store = _store(tmp_path / "source.db")
    experiment = store.experiment_id(SUITE.name)
    parent = store.create_run(experiment, "invocation", {Tag.KIND: Kind.INVOCATION})
    ctx = JobContext("inv", store.uri, experiment, parent, "cpu", True, 1, str(tmp_path / "STOP"), ())
    finished = []
    for seed in (0, 1, 2, 3):
        job = _job(seed, tmp_path / f"job{seed}")
        if seed == 3:
            job = dataclasses.replace(job, budget="other")
        run_id = open_child(store, ctx, job, None)
        store.log_metric_entries(run_id, [("train/loss", 2.0 - step / 10, step, 1_000 + step) for step in range(5)])
        grid = tmp_path / f"grid{seed}.png"
        grid.write_bytes(PNG + bytes([seed]))
        store.log_artifact(run_id, grid, "samples")
        log_evaluation(store, run_id, job, EvalSettings(**dict(job.eval_settings)),
                       EvalResult({"coherence/loo/mean": 0.3 + seed / 10}, {"fid": "no extractor here"}))
        store.mark(run_id, tracking.FAILED if seed == 2 else tracking.FINISHED)
        if seed in (0, 1):
            finished.append(run_id)
    return store, finished


def test_exported_runs_import_into_another_store_as_they_were(tmp_path):
    source, finished = _source(tmp_path)
    bundle = tmp_path / "bundle"
    assert export_bundle(source, SUITE.name, BUDGET.name, bundle).copied == tuple(finished)
    assert read_manifest(bundle)["runs"] == finished

    target = _store(tmp_path / "target.db")
    done = import_bundle(target, bundle)
    assert len(done.copied) == 2 and done.skipped == ()
    for original_id, copy_id in zip(finished, done.copied, strict=True):
        original, copy = source.run(original_id), target.run(copy_id)
        assert copy.status == tracking.FINISHED and copy.tags[Tag.IMPORTED_FROM] == original_id
        assert (copy.start_time, copy.end_time) == (original.start_time, original.end_time)
        assert copy.params == original.params and copy.metrics == original.metrics
        assert {k: v for k, v in original.tags.items() if not k.startswith("mlflow.")}.items() <= copy.tags.items()
        assert target.metric_entries(copy_id, "train/loss") == source.metric_entries(original_id, "train/loss")
        grid = next(n for n in target.artifact_names(copy_id, "samples"))
        assert target.download(copy_id, grid, tmp_path / "dl" / copy_id).read_bytes().startswith(PNG)
    experiment = target.experiment_id(SUITE.name, create=False)
    assert set(target.finished_jobs(experiment, BUDGET.name)) == {"job0", "job1"}  # `run` skips these jobs
    before, after = collect(SUITE, BUDGET, source.uri), collect(SUITE, BUDGET, target.uri)
    assert before.values.drop(columns="run_id").equals(after.values.drop(columns="run_id"))
    assert after.skipped == before.skipped

    again = import_bundle(target, bundle)
    assert again.copied == () and [why for _, why in again.skipped] == [
        f"already in the store as run {copy}" for copy in done.copied]
    assert import_bundle(source, bundle).copied == ()  # the store it came from already holds them


@pytest.mark.parametrize("damage, problem", [
    (lambda f: f.write_bytes(f.read_bytes() + b"x"), "altered (sha256 differs)"),
    (lambda f: f.unlink(), "missing"),
    (lambda f: (f.parent / "stray.txt").write_text("?"), "stray.txt: not in the manifest"),
])
def test_a_damaged_bundle_is_refused_before_any_run_is_written(tmp_path, damage, problem):
    source, finished = _source(tmp_path)
    bundle = tmp_path / "bundle"
    export_bundle(source, SUITE.name, BUDGET.name, bundle)
    damage(bundle / finished[1] / "run.json")
    target = _store(tmp_path / "target.db")
    with pytest.raises(BundleError, match="does not match its manifest") as raised:
        import_bundle(target, bundle)
    assert problem in str(raised.value) and "export it again" in str(raised.value)
    assert target.experiment_id(SUITE.name, create=False) is None  # nothing was written


def test_export_replaces_a_bundle_and_refuses_any_other_folder(tmp_path):
    source, finished = _source(tmp_path)
    bundle = tmp_path / "bundle"
    export_bundle(source, SUITE.name, BUDGET.name, bundle)
    (bundle / finished[0] / "run.json").write_text("{}")  # an older, damaged copy is replaced whole
    export_bundle(source, SUITE.name, BUDGET.name, bundle)
    read_manifest(bundle)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    with pytest.raises(BundleError, match="is not a runs bundle"):
        export_bundle(source, SUITE.name, BUDGET.name, other)
    assert (other / "mine.txt").read_text() == "keep me"
    with pytest.raises(BundleError, match="no finished runs of suite 'synthetic' at budget 'paper'"):
        export_bundle(source, SUITE.name, "paper", tmp_path / "empty")
    assert not (tmp_path / "empty").exists()


def test_store_commands_export_and_import(tmp_path):
    source, _ = _source(tmp_path)
    target = _store(tmp_path / "target.db")
    bundle = tmp_path / "bundle"
    cli = CliRunner()
    out = cli.invoke(main, ["store", "export", "--suite", SUITE.name, "--budget", BUDGET.name, "--out", str(bundle),
                            "--tracking-uri", source.uri])
    assert out.exit_code == 0 and "exported 2 runs of synthetic at smoke" in out.output, out.output
    out = cli.invoke(main, ["store", "import", str(bundle), "--tracking-uri", target.uri])
    assert out.exit_code == 0 and "imported 2 runs into" in out.output, out.output
    out = cli.invoke(main, ["store", "import", str(tmp_path), "--tracking-uri", target.uri])
    assert out.exit_code == 1 and "is not a runs bundle (no manifest.json)" in out.output
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["format"] = "other/9"
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    out = cli.invoke(main, ["store", "import", str(bundle), "--tracking-uri", target.uri])
    assert out.exit_code == 1 and "this mmbench reads 'mmbench-runs/1'" in out.output


def test_a_bundle_carries_the_classifiers_that_scored_its_runs(tmp_path, monkeypatch):
    """Export attaches each classifier file the runs name, when the file here is the very one (same sha256), and
    says which it could not; import installs them where no classifier of that name is, keeps a local one of
    another identity (and says how to replace it), and a second import finds them already there."""
    import torch

    from classifiers.nets import build_classifier
    from classifiers.store import load_classifier, save_classifier

    source, finished = _source(tmp_path)
    torch.manual_seed(0)
    record = save_classifier(build_classifier("substitute-cnn"), "patterns3-eval", {"role": "eval"})
    for run_id in finished:
        source.set_tags(run_id, {Tag.CLASSIFIER: "patterns3-eval", Tag.CLASSIFIER_SHA256: record.sha256,
                                 Tag.SUBSTITUTE: "patterns3-substitute", Tag.SUBSTITUTE_SHA256: "0" * 64})
    bundle = tmp_path / "bundle"
    cli = CliRunner()
    out = cli.invoke(main, ["store", "export", "--suite", SUITE.name, "--budget", BUDGET.name, "--out", str(bundle),
                            "--tracking-uri", source.uri])
    assert out.exit_code == 0, out.output
    assert "classifier patterns3-substitute (sha256 000000000000…) not attached" in out.output
    manifest = read_manifest(bundle)
    assert manifest["attached"] == ["classifiers/patterns3-eval.json", "classifiers/patterns3-eval.pt"]
    assert manifest["files"]["attached/classifiers/patterns3-eval.pt"] == record.sha256

    monkeypatch.setenv("MMBENCH_HOME", str(tmp_path / "elsewhere"))
    target = _store(tmp_path / "target.db")
    out = cli.invoke(main, ["store", "import", str(bundle), "--tracking-uri", target.uri])
    assert out.exit_code == 0 and "classifier patterns3-eval: installed" in out.output, out.output
    assert load_classifier("patterns3-eval")[1].sha256 == record.sha256
    out = cli.invoke(main, ["store", "import", str(bundle), "--tracking-uri", target.uri])
    assert "classifier patterns3-eval: already here" in out.output, out.output

    monkeypatch.setenv("MMBENCH_HOME", str(tmp_path / "third"))
    torch.manual_seed(1)
    other = save_classifier(build_classifier("substitute-cnn"), "patterns3-eval", {"role": "eval"})
    out = cli.invoke(main, ["store", "import", str(bundle), "--tracking-uri", _store(tmp_path / "third.db").uri])
    assert out.exit_code == 0 and "kept the one here" in out.output, out.output
    assert load_classifier("patterns3-eval")[1].sha256 == other.sha256 != record.sha256
    out = cli.invoke(main, ["store", "export", "--suite", SUITE.name, "--budget", BUDGET.name, "--out",
                            str(tmp_path / "bare"), "--tracking-uri", source.uri, "--no-classifiers"])
    assert out.exit_code == 0 and read_manifest(tmp_path / "bare")["attached"] == [], out.output
