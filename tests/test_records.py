"""mmbench.records: the runner writes a job's run and the report reads it back with the same names only."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest

from mmbench import records, tracking
from mmbench.metrics.settings import EvalResult, EvalSettings
from mmbench.records import Artifact, Kind, Param, Tag
from mmbench.report.collect import collect
from mmbench.report.provenance import provenance
from mmbench.runner.data import DataRef
from mmbench.runner.job import JobContext, job_tags, log_evaluation, open_child
from mmbench.runner.plan import Job
from mmbench.suites import get_suite

REPO = Path(__file__).resolve().parents[1]
SUITE = get_suite("synthetic")
BUDGET = SUITE.budget("smoke")
MODALITIES = ("m0", "m1")
LONG_REASON = "x" * (tracking.MAX_TAG_VALUE + 100)  # makes the skipped tag overflow: the reader needs the artifact


def _job(seed: int, workdir: Path, row_settings: str = "") -> Job:
    settings = EvalSettings()
    eval_settings = tuple(sorted((f.name, getattr(settings, f.name)) for f in dataclasses.fields(settings)
                                 if f.name != "device"))
    data = DataRef("synthetic", "synthetic", MODALITIES, 32, 8, 16, "datahash", "dataid")
    return Job(job_id=f"job{seed}", suite=SUITE.name, suite_version=SUITE.version, budget=BUDGET.name, label="dummy",
               model="dummy", seed=seed, data=data, overrides=(), config_json=json.dumps({"latent_dim": 16}),
               config_hash="cfg", eval_settings=eval_settings, metrics=("coherence", "fid"), ranks=BUDGET.ranks,
               workdir=str(workdir), row_settings=row_settings)


def test_a_job_logged_by_the_runner_is_read_back_by_the_report(tmp_path):
    store = tracking.Store(f"sqlite:///{tmp_path}/store.db")
    store.check()
    experiment = store.experiment_id(SUITE.name)
    parent = store.create_run(experiment, "invocation", {Tag.KIND: Kind.INVOCATION})
    shared = {Tag.GIT_COMMIT: "abc123", Tag.DATASET_HASH: "datahash", **records.version_tags({"torch": "9.9"})}
    ctx = JobContext("inv", store.uri, experiment, parent, "cpu", True, 1, str(tmp_path / "STOP"),
                     tuple(sorted(shared.items())))
    expected: dict[int, dict[str, float]] = {}
    for seed in (0, 1):
        job = _job(seed, tmp_path / f"job{seed}")
        run_id = open_child(store, ctx, job, None)
        values = {"coherence/loo/m0": 0.5 + seed / 10, "coherence/loo/mean": 0.25 * (seed + 1)}
        result = EvalResult(values, {"fid": LONG_REASON}, provenance={"fid/extractor_weights_sha256": "w256"})
        log_evaluation(store, run_id, job, EvalSettings(**dict(job.eval_settings)), result)
        store.mark(run_id, tracking.FINISHED)
        expected[seed] = values

    collected = collect(SUITE, BUDGET, store.uri)
    assert [r.tags[Tag.SEED] for r in collected.runs] == ["0", "1"] and collected.variants == ["dummy"]
    for seed, values in expected.items():
        rows = collected.values[collected.values["seed"] == seed]
        assert dict(zip(rows["key"], rows["value"], strict=True)) == values
    reasons = collected.skipped["dummy"]
    assert reasons["fid/loo/m0"] == LONG_REASON  # the whole reason: from the artifact, not the cut tag
    assert "coherence/loo/m1" in reasons  # an expected key without a value carries a reason
    assert collected.directions["coherence/loo/mean"] is True and collected.directions["fid/loo/m0"] is False
    prov = provenance(collected)
    assert prov["shared"][Tag.GIT_COMMIT] == ["abc123"] and prov["versions"] == {"torch": "9.9"}
    assert prov["shared"][records.provenance_tag("fid/extractor_weights_sha256")] == ["w256"]
    run = collected.runs[0]
    assert run.params[records.model_param("latent_dim")] == "16" and run.params[Param.MODEL_NAME] == "dummy"
    assert set(job_tags(_job(0, tmp_path), shared)) <= set(run.tags)
    assert store.read_json(run.run_id, Artifact.CONFIG)["job_id"] == "job0"
    assert store.finished_jobs(experiment, BUDGET.name) == {"job0": collected.runs[0].run_id,
                                                            "job1": collected.runs[1].run_id}


def test_a_run_made_before_its_budget_changed_is_left_out_of_the_report_with_the_change_named(tmp_path):
    """The runner tags the budget's settings for the row; the report compares them with today's budget."""
    from mmbench.hashing import canonical_json
    from mmbench.report.collect import NO_RUN, NoRuns

    store = tracking.Store(f"sqlite:///{tmp_path}/store.db")
    store.check()
    experiment = store.experiment_id(SUITE.name)
    parent = store.create_run(experiment, "invocation", {Tag.KIND: Kind.INVOCATION})
    ctx = JobContext("inv", store.uri, experiment, parent, "cpu", True, 1, str(tmp_path / "STOP"), ())
    settings = canonical_json(BUDGET.row_settings(SUITE.variant("dummy")))
    job = _job(0, tmp_path / "job0", settings)
    run_id = open_child(store, ctx, job, None)
    log_evaluation(store, run_id, job, EvalSettings(**dict(job.eval_settings)),
                   EvalResult({"coherence/loo/mean": 0.5}, {}))
    store.mark(run_id, tracking.FINISHED)

    assert store.run(run_id).tags[Tag.ROW_SETTINGS] == settings
    assert [r.run_id for r in collect(SUITE, BUDGET, store.uri).runs] == [run_id]
    n_conditional = dict(BUDGET.eval_overrides).get("n_conditional")
    changed = dataclasses.replace(BUDGET, seeds=(0,), eval_overrides=(*BUDGET.eval_overrides, ("n_conditional", 7)))
    with pytest.raises(NoRuns) as raised:
        collect(SUITE, changed, store.uri)
    difference = f"eval/n_conditional: {json.dumps(n_conditional) if n_conditional else 'unset'} in the run, 7 now"
    assert difference in str(raised.value)
    other = _job(1, tmp_path / "job1", canonical_json(changed.row_settings(SUITE.variant("dummy"))))
    other_id = open_child(store, ctx, other, None)  # a second seed at today's settings keeps the report going
    log_evaluation(store, other_id, other, EvalSettings(**dict(other.eval_settings)),
                   EvalResult({"coherence/loo/mean": 0.6}, {}))
    store.mark(other_id, tracking.FINISHED)
    collected = collect(SUITE, dataclasses.replace(changed, seeds=(0, 1)), store.uri)
    assert [r.run_id for r in collected.runs] == [other_id]
    absent = collected.absent["dummy"][0]
    assert absent.status == NO_RUN and difference in absent.detail and absent.run_id == run_id
    assert sum(n for reason, n in collected.ignored.items() if difference in reason) == 1


# --------------------------------------------------------------------------------- one home for the names

WRITERS_AND_READERS = ("mmbench/runner/job.py", "mmbench/runner/run.py", "mmbench/report/collect.py",
                       "mmbench/report/provenance.py", "mmbench/report/__init__.py", "mmbench/tracking/lookup.py",
                       "mmbench/tracking/store.py", "mmbench/tracking/bundle.py")
ARTIFACT_CALLS = {"read_json", "log_json", "download", "artifact_names"}
WRITE_CALLS = {"set_tags", "create_run", "log_params", "log_metrics"}


def _record_names() -> set[str]:
    names = set()
    for space in (Tag, Param, Artifact, records.Metric):
        names |= {v for k, v in vars(space).items() if k.isupper() and isinstance(v, str)}
    return names


def spelled_names(source: str) -> list[str]:
    """Record names a module spells itself: a string literal indexing or ``.get``-ing ``.tags``/``.params``,
    naming an artifact in a store call, or keying a dict of tags, params or metrics (a dict literal passed to
    a store write, assigned to ``tags``/``params``/``counts`` or returned by a ``*_tags`` function) with a
    record name."""
    found, names = [], _record_names()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Subscript) and _is_tags_or_params(node.value) and _literal(node.slice):
            found.append(f"[{node.slice.value!r}]")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "get" and _is_tags_or_params(node.func.value) and node.args and _literal(node.args[0]):
                found.append(f".get({node.args[0].value!r})")
            elif node.func.attr in ARTIFACT_CALLS:
                found.extend(f"{node.func.attr}({a.value!r})" for a in node.args if _literal(a))
            elif node.func.attr in WRITE_CALLS:
                found.extend(_keys(a, names) for a in node.args if isinstance(a, ast.Dict))
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            if any(isinstance(t, ast.Name) and t.id in ("tags", "params", "counts") for t in node.targets):
                found.append(_keys(node.value, names))
        elif isinstance(node, ast.FunctionDef) and node.name.endswith("tags"):
            found.extend(_keys(r.value, names) for r in ast.walk(node)
                         if isinstance(r, ast.Return) and isinstance(r.value, ast.Dict))
    return [f for f in found if f]


def _keys(node: ast.Dict, names: set[str]) -> str:
    spelled = [k.value for k in node.keys if _literal(k) and k.value in names]
    return "{" + ", ".join(f"{k!r}: ..." for k in spelled) + "}" if spelled else ""


def _is_tags_or_params(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and node.attr in ("tags", "params")


def _literal(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


@pytest.mark.parametrize("path", WRITERS_AND_READERS)
def test_writers_and_readers_spell_no_record_name(path):
    assert spelled_names((REPO / path).read_text()) == []


def test_the_guard_finds_a_spelled_name():
    source = ('x = run.tags["variant"]; y = run.params.get("seed", "0"); store.read_json(r, "skipped.json")\n'
              'tags = {"kind": "job", Tag.SEED: "0"}; other = {"seed": 1}; store.set_tags(r, {"error": "e"})\n'
              'def job_tags():\n    return {"job_id": "j", "not a record name": 0}\n')
    assert sorted(spelled_names(source)) == sorted([
        "['variant']", ".get('seed')", "read_json('skipped.json')", "{'kind': ...}", "{'error': ...}",
        "{'job_id': ...}",
    ])


def test_scoring_references_know_a_classifier_by_its_weights_and_an_inception_fid_by_its_file():
    """The evaluation classifier and the substitute count by their weights' sha256 where recorded, else by their
    file's; the FID weights count only for an extractor other than the evaluation classifier (whose own identity
    is already there); missing tags are left out."""
    tags = {records.Tag.DATASET_HASH: "d", records.Tag.CLASSIFIER_SHA256: "f1", records.Tag.CLASSIFIER_WEIGHTS: "w1",
            records.Tag.SUBSTITUTE_SHA256: "s1", records.Tag.FID_EXTRACTOR: "mmbench-clf",
            records.Tag.FID_WEIGHTS: "polymnist10-eval sha256 f1"}
    assert records.scoring_references(tags) == {"dataset_hash": "d", "classifier": "weights w1",
                                                "substitute": "file s1", "fid_extractor": "mmbench-clf"}
    tags.update({records.Tag.FID_EXTRACTOR: "inception-v3-compat", records.Tag.FID_WEIGHTS: "inception.pth sha256 i"})
    assert records.scoring_references(tags)["fid_weights"] == "inception.pth sha256 i"
    assert records.scoring_references({}) == {}
