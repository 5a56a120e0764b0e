"""mmbench.report without a store: choosing runs, mean ± std, best per column, missing cells, renderers, figures.

Runs are built by hand (``RunRecord``), so every expected number is computed independently here.
The end-to-end report from a real store is in ``tests/test_cli.py``.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pandas as pd
import pytest

from mmbench.report import figures as figs
from mmbench.report import tables as tbl
from mmbench.report.aggregate import NO_VALUE, Aggregate, format_cell
from mmbench.report.collect import Collected, _choose, _tidy
from mmbench.suites import get_suite
from mmbench.suites.spec import Budget, DatasetSpec, Suite, Variant
from mmbench.tracking import RunRecord

SUITE = Suite(
    name="r-test", version="2", description="report test", dataset=DatasetSpec("synthetic", "patterns3", 3),
    variants=(Variant("alpha", "mvae"), Variant("beta_model", "mmvae"), Variant("gamma", "dummy")),
    metrics=("coherence", "fid"), budgets=(Budget("quick", "test", seeds=(0, 1, 2)),),
)
RNG = np.random.default_rng(0)
VALUES = {  # variant -> seed -> metrics
    "alpha": {s: {"coherence/loo/mean": 0.5 + 0.1 * s, "fid/loo/mean": 90.0 + s, "coherence/loo/m0": 0.4}
              for s in (0, 1, 2)},
    "beta_model": {s: {"coherence/loo/mean": 0.8 - 0.05 * s, "fid/loo/mean": 70.0 + 2 * s} for s in (0, 1)},
    "gamma": {0: {"coherence/loo/mean": 0.1}},
}
SKIPPED = {"gamma": {"fid/loo/mean": "Dummy cannot do FID here (test reason)"}}
DIRECTIONS = {"coherence/loo/mean": True, "fid/loo/mean": False, "coherence/loo/m0": True}


def _run(variant: str, seed: int, metrics: dict[str, float], start: int = 0, version: str = "2",
         suite: Suite = SUITE) -> RunRecord:
    tags = {"variant": variant, "seed": str(seed), "suite_version": version, "model": suite.variant(variant).model}
    return RunRecord(f"{variant}-{seed}-{start}", "FINISHED", start, None, {}, dict(metrics), tags, "")


def _collected(suite: Suite = SUITE, values=VALUES, skipped=SKIPPED, directions=DIRECTIONS) -> Collected:
    runs = [_run(v, s, m, version=suite.version, suite=suite) for v, seeds in values.items() for s, m in seeds.items()]
    return Collected(suite, suite.budgets[0], "sqlite:///x.db", runs, _tidy(runs, suite), skipped, directions)


def test_choose_keeps_the_latest_run_per_row_and_seed_of_the_current_version():
    old = _run("alpha", 0, {"x": 1.0}, start=1)
    new = _run("alpha", 0, {"x": 2.0}, start=5)
    other_version = _run("alpha", 1, {"x": 3.0}, start=9, version="1")
    stranger = _run("alpha", 2, {"x": 4.0}, start=3)
    stranger.tags["variant"] = "not-a-row"
    chosen, ignored = _choose(SUITE, [new, old, other_version, stranger])
    assert chosen == [new]
    assert ignored == {"suite version 1 (current: 2)": 1, "superseded by a later run of the same row and seed": 1,
                       "row 'not-a-row' is not in the suite": 1}


def test_mean_and_std_over_seeds_match_numpy():
    agg = Aggregate(_collected())
    for variant, seeds in VALUES.items():
        for key in ("coherence/loo/mean", "fid/loo/mean"):
            values = [m[key] for m in seeds.values() if key in m]
            cell = agg.cell(variant, key)
            if not values:
                assert not cell.present
                continue
            assert cell.mean == pytest.approx(np.mean(values)) and cell.n == len(values)
            if len(values) > 1:
                assert cell.std == pytest.approx(np.std(values, ddof=1))
            else:
                assert cell.std is None  # undefined with one seed: omitted, not 0


def test_best_follows_each_keys_direction():
    agg = Aggregate(_collected())
    assert agg.best("coherence/loo/mean") == {"beta_model"}  # 0.775 > 0.6 > 0.1
    assert agg.best("fid/loo/mean") == {"beta_model"}  # 71 < 91; gamma has none
    assert agg.best("coherence/loo/m0") == set()  # only one row has it
    directionless = Aggregate(_collected(directions={}))
    assert directionless.best("coherence/loo/mean") == set()
    # ties up to float rounding are all best: 0.1 + 0.2 is 0.30000000000000004
    tied = {"alpha": {0: {"coherence/loo/mean": 0.1 + 0.2}}, "beta_model": {0: {"coherence/loo/mean": 0.3}}}
    assert Aggregate(_collected(values=tied, skipped={})).best("coherence/loo/mean") == {"alpha", "beta_model"}


def test_an_unranked_row_is_never_best_and_says_why():
    """``Suite.unranked`` (the F1 floors): its rows keep their values but the best is chosen among the others."""
    import dataclasses

    agg = Aggregate(_collected(dataclasses.replace(SUITE, unranked=frozenset({"beta_model"}))))
    assert agg.best("coherence/loo/mean") == {"alpha"}  # 0.6, below beta_model's 0.775
    assert agg.best("fid/loo/mean") == set()  # alpha is the only ranked row with a FID
    assert agg.cell("beta_model", "coherence/loo/mean").mean == pytest.approx(0.775)
    table = tbl.build_table(tbl.TABLES["conditional"], agg)
    assert table.row_notes == {"beta_model": tbl.UNRANKED_NOTE}
    md = tbl.to_markdown(table, agg)
    assert "**" not in next(line for line in md.splitlines() if line.startswith("| beta_model"))


def test_missing_cells_carry_reasons_never_zero():
    agg = Aggregate(_collected())
    assert agg.cell("gamma", "fid/loo/mean").reason == "Dummy cannot do FID here (test reason)"
    assert agg.cell("beta_model", "coherence/loo/m0").reason == NO_VALUE
    assert format_cell(agg.cell("gamma", "fid/loo/mean"), 3) == "—"


def test_markdown_bolds_the_best_and_footnotes_the_missing():
    agg = Aggregate(_collected())
    md = tbl.to_markdown(tbl.build_table(tbl.TABLES["conditional"], agg), agg)
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ") and "Model" not in line}
    mean, std = np.mean([0.8, 0.75]), np.std([0.8, 0.75], ddof=1)
    assert f"**{mean:.3f} ± {std:.3f}**" in rows["beta_model"]
    assert "**" not in rows["alpha"]
    assert "| — [1] |" in rows["gamma"] and "0.000" not in rows["gamma"]
    assert "[1] Dummy cannot do FID here (test reason)" in md
    assert "Avg coherence ↑" in md and "Avg FID ↓" in md


def test_latex_and_csv_renderings():
    agg = Aggregate(_collected())
    table = tbl.build_table(tbl.TABLES["conditional"], agg)
    tex = tbl.to_latex(table, agg)
    assert r"beta\_model & \textbf{" in tex and "---$^{a}$" in tex and r"\toprule" in tex
    assert "% a: Dummy cannot do FID here" in tex
    rows = list(csv.DictReader(io.StringIO(tbl.to_csv(table))))
    alpha = next(r for r in rows if r["model"] == "alpha" and r["key"] == "fid/loo/mean")
    assert float(alpha["mean"]) == pytest.approx(91.0) and alpha["n_seeds"] == "3" and alpha["best"] == "0"
    gamma = next(r for r in rows if r["model"] == "gamma" and r["key"] == "fid/loo/mean")
    assert gamma["mean"] == "" and gamma["missing_reason"].startswith("Dummy")


def test_column_keys_follow_each_rows_modality_count():
    column = tbl.Column("≥ M−1 agree", "coherence/uncond/atleast_{last}")
    assert column.key_for(10) == "coherence/uncond/atleast_9" and column.key_for(3) == "coherence/uncond/atleast_2"


def _curves_collected() -> Collected:
    values = {
        v: {s: {**{f"coherence/last_given/k{k}": 0.1 * k + 0.01 * s for k in (1, 2)},
                **{f"fid/last_given/k{k}": 50.0 - k for k in (1, 2)},
                **{f"coherence/first_given/k{k}": 0.2 * k for k in (1, 2)},
                **{f"coherence/uncond/atleast_{k}": 1.0 / k for k in (2, 3)},
                **{f"coherence/loo/m{i}": 0.3 + 0.1 * i for i in range(3)},
                **{f"fid/loo/m{i}": 60.0 + i for i in range(3)}}
            for s in (0, 1)}
        for v in ("alpha", "beta_model")
    }
    return _collected(values=values, skipped={}, directions={})


@pytest.mark.parametrize("name", ["fig5", "fig8", "fig9", "fig11", "fig13", "fig14", "fig15"])
def test_curve_and_bar_figures_are_drawn(name, tmp_path):
    result = figs.draw(name, Aggregate(_curves_collected()), tmp_path)
    assert result.reason is None
    assert [p.name for p in result.files] == [f"{name}.png", f"{name}.pdf"]
    assert result.files[0].read_bytes()[:4] == b"\x89PNG" and result.files[1].read_bytes()[:4] == b"%PDF"


def test_the_same_store_draws_byte_identical_figures(tmp_path, monkeypatch):
    """No creation time in the files (matplotlib stamps PDFs with SOURCE_DATE_EPOCH or the clock): a report
    regenerated from an unchanged store changes no figure."""
    drawn = []
    for epoch in ("1000000000", "2000000000"):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
        result = figs.draw("fig9", Aggregate(_curves_collected()), tmp_path / epoch)
        drawn.append([p.read_bytes() for p in result.files])
    assert len(drawn[0]) == 2 and drawn[0] == drawn[1]


def test_curve_points_are_the_aggregated_means():
    x, y, err = figs._curve(Aggregate(_curves_collected()), "alpha", r"coherence/last_given/k(\d+)")
    assert x == [1, 2]
    assert y == pytest.approx([0.105, 0.205]) and err == pytest.approx([np.std([0.1, 0.11], ddof=1)] * 2)


def test_a_figure_without_data_says_why(tmp_path):
    result = figs.draw("fig6", Aggregate(_collected()), tmp_path)
    assert result.files == [] and "no values" in result.reason


def test_scaling_figures_group_rows_by_model_and_modality_count(tmp_path):
    suite = get_suite("polymnist10-scaling")
    values = {f"{m}-m{k}": {0: {"fid/uncond/mean": 100.0 - k, "fid/loo/m0": 80.0 + k, "coherence/loo/m0": k / 10}}
              for m in ("mvae", "sbm-vae") for k in (2, 3, 5)}
    agg = Aggregate(_collected(suite=suite, values=values, skipped={}, directions={}))
    series = figs._by_modalities(agg, "fid/uncond/mean")
    assert series["mvae"][0] == [2, 3, 5] and series["mvae"][1] == [98.0, 97.0, 95.0]
    for name in ("fig6", "fig7"):
        assert figs.draw(name, agg, tmp_path).reason is None


def test_mode_coverage_shares_pool_modalities(tmp_path):
    text = "modality,class_0,class_1,class_2\nm0,2,2,0\nm1,0,4,0\n"
    assert figs.coverage_shares(text) == pytest.approx([0.25, 0.75, 0.0])
    drawn = figs.draw_coverage(Aggregate(_collected()), {"alpha": [0.25, 0.75, 0.0]}, tmp_path)
    assert drawn.reason is None and (tmp_path / "fig20.png").exists()
    assert figs.draw_coverage(Aggregate(_collected()), {}, tmp_path).reason


def test_tidy_drops_training_curves():
    runs = [_run("alpha", 0, {"train/ae/m0/loss": 1.0, "stage/ae/seconds": 2.0, "coherence/loo/mean": 0.5})]
    frame = _tidy(runs, SUITE)
    assert isinstance(frame, pd.DataFrame) and list(frame["key"]) == ["coherence/loo/mean"]


def test_provenance_names_each_rows_generation_settings():
    """Which conditional/sampler/guidance each row used is part of its provenance (e.g. MoPoE's mixture)."""
    from mmbench.report.provenance import provenance, provenance_markdown

    collected = _collected()
    for run in collected.runs:
        if run.tags["variant"] == "alpha":
            run.params.update({"model/conditional": "mixture", "model/width": "0.25", "model/guidance": "none",
                               "model/energy_gamma": "1.0"})
        if run.tags["variant"] == "beta_model":
            run.params.update({"model/sampler": "pc", "model/sampler_steps": "100", "model/energy_gamma": "3.90625",
                               "model/guidance": "energy"})
    prov = provenance(collected)
    assert prov["generation"] == {"alpha": {"conditional": "mixture"},
                                  "beta_model": {"sampler": "pc", "sampler_steps": "100", "energy_gamma": "3.90625"}}
    text = provenance_markdown(prov)
    assert "  - alpha: conditional=mixture" in text and "energy_gamma=3.90625" in text


def test_provenance_names_the_stages_trained_with_other_code_than_their_run():
    """A job resumed across code versions, or a stage loaded from a store another version filled: the run's
    own commit does not describe it, so the provenance lists those stages with their commits; stages
    trained with the run's commit alone, and runs without the tag, add nothing."""
    from mmbench.report.provenance import provenance, provenance_markdown

    collected = _collected()
    runs = {run.tags["variant"]: run for run in collected.runs if run.tags.get("seed", "0") == "0"}
    for run in collected.runs:
        run.tags["git_commit"] = "c2"
    runs["alpha"].tags["stage_code_versions"] = json.dumps({"ae": ["c1", "c2"], "head": ["c2"]})
    runs["beta_model"].tags["stage_code_versions"] = json.dumps({"ae": [], "head": ["c2"]})
    prov = provenance(collected)
    assert prov["stage_code"] == {"alpha seed 0": {"ae": ["c1", "c2"]}, "beta_model seed 0": {"ae": ["unknown"]}}
    text = provenance_markdown(prov)
    assert "  - alpha seed 0: ae ← c1, c2" in text and "  - beta_model seed 0: ae ← unknown" in text
    # stages with the same history print once, named together, in the order they were trained
    runs["alpha"].tags["stage_code_versions"] = json.dumps({"ae/m0": [], "ae/m1": ["c1"], "score": [], "head": ["c2"]})
    text = provenance_markdown(provenance(collected))
    assert "  - alpha seed 0: ae/m0, score ← unknown; ae/m1 ← c1\n" in text
    runs["alpha"].tags["stage_code_versions"] = json.dumps({"ae": ["c2"]})
    runs["beta_model"].tags.pop("stage_code_versions")
    assert provenance(collected)["stage_code"] == {}
    assert "other code" not in provenance_markdown(provenance(collected))


def test_runs_scored_against_different_references_are_named_in_every_rendering(tmp_path):
    """Rows scored by a classifier with other weights or on other data do not compare: the provenance groups the runs
    by each reference they disagree on (a run that does not record one counts as unrecorded), and report.md and the
    page say so above the tables. A classifier is known by its weights where the run recorded them, so a retrained
    copy with the same weights (its file differs: the meta holds times) adds nothing; runs that agree add nothing."""
    from mmbench.report import ReportFiles, _index
    from mmbench.report.html import Page, render_page
    from mmbench.report.provenance import NOT_RECORDED, divergence_lines, provenance

    collected = _collected()
    for i, run in enumerate(collected.runs):
        run.tags.update({"classifier_sha256": f"file{i}", "classifier_weights_sha256": "w1", "dataset_hash": "d1",
                         "fid_extractor": "mmbench-clf", "fid_weights": f"clf sha256 file{i}"})
    assert provenance(collected)["divergent_references"] == {}
    odd = [run for run in collected.runs if run.tags["variant"] == "beta_model"]
    odd[0].tags["classifier_weights_sha256"] = "w2"
    odd[1].tags.pop("dataset_hash")
    prov = provenance(collected)
    assert prov["divergent_references"] == {
        "dataset_hash": {"d1": ["alpha seed 0", "alpha seed 1", "alpha seed 2", "beta_model seed 0", "gamma seed 0"],
                         NOT_RECORDED: ["beta_model seed 1"]},
        "classifier": {"weights w1": ["alpha seed 0", "alpha seed 1", "alpha seed 2", "beta_model seed 1",
                                      "gamma seed 0"],
                       "weights w2": ["beta_model seed 0"]},
    }
    lines = divergence_lines(prov["divergent_references"])
    assert "classifier = weights w2: beta_model seed 0" in lines and len(lines) == 4
    agg = Aggregate(collected)
    text = _index(collected, agg, [], ReportFiles(tmp_path), "", None, lines)
    assert "## Runs scored against different references" in text
    assert "- classifier = weights w2: beta_model seed 0" in text and text.index("w2") < text.index("## Tables")
    page = render_page(Page(collected, agg, [], None, [], {}, {}, prov))
    assert "id=divergent" in page and "classifier = weights w2: beta_model seed 0" in page
    # a run that recorded only its classifier's file: not shown to be scored alike
    odd[0].tags.pop("classifier_weights_sha256")
    odd[1].tags["dataset_hash"] = "d1"
    assert provenance(collected)["divergent_references"]["classifier"]["file file3"] == ["beta_model seed 0"]
    odd[0].tags["classifier_weights_sha256"] = "w1"
    assert "id=divergent" not in render_page(Page(collected, agg, [], None, [], {}, {}, provenance(collected)))


def test_a_budgets_note_on_a_model_marks_its_rows_in_every_rendering():
    """``Budget.model_notes``: the rows training that model carry a footnote after the cells' notes, in
    Markdown, LaTeX, CSV and HTML; the other rows carry none."""
    import dataclasses
    from types import SimpleNamespace

    from mmbench.report.html import table_html

    note = "trained to its cap (3 CPU-hours) without reaching the 0.5 target"
    budget = dataclasses.replace(SUITE.budgets[0], model_notes=(("mmvae", note),))
    agg = Aggregate(_collected(dataclasses.replace(SUITE, budgets=(budget,))))
    table = tbl.build_table(tbl.TABLES["conditional"], agg)
    assert table.row_notes == {"beta_model": note} and table.footnotes[note] == 2  # after gamma's missing FID
    md = tbl.to_markdown(table, agg)
    assert "| beta_model [2] |" in md and f"[2] {note}" in md and "| alpha |" in md
    assert r"beta\_model$^{b}$ & \textbf{" in tbl.to_latex(table, agg)
    rows = list(csv.DictReader(io.StringIO(tbl.to_csv(table))))
    assert {r["model"] for r in rows if r["row_note"] == note} == {"beta_model"}
    assert not any(r["row_note"] for r in rows if r["model"] != "beta_model")
    html = table_html(table, agg, 3)
    assert "beta_model<sup><a href='#t3-conditional-n2'>[2]</a></sup></td>" in html
    assert f"<li id=t3-conditional-n2>{note}</li>" in html
    from mmbench.report.html import _row_notes

    page = SimpleNamespace(collected=agg.collected)
    assert f"<li><b>mmvae</b>: {note}</li>" in "".join(_row_notes(page))
    assert _row_notes(SimpleNamespace(collected=_collected())) == []


def test_cost_section_sums_what_each_run_logged():
    """Per run: wall and CPU time of its last attempt, the stages it trained (a loaded stage costs nothing),
    its evaluation, its earlier attempts; totals over the runs that logged each; a run resumed without its
    earlier attempts counted is marked; the HTML shows the same."""
    from mmbench.report import cost
    from mmbench.report.html import cost_html

    collected = _collected(values={
        "alpha": {0: {"job/seconds": 3725.0, "job/cpu_seconds": 1800.0, "job/eval_seconds": 3000.0,
                      "stage/ae/seconds": 600.0, "stage/ae/reused": 0.0, "stage/score/seconds": 5.0,
                      "stage/score/reused": 1.0, "stage/score/seconds_per_step": 0.1}},
        "beta_model": {0: {"job/seconds": 59.0}},
        "gamma": {0: {"job/seconds": 120.0, "job/cpu_seconds": 60.0, "job/attempts": 3.0,
                      "job/earlier_attempts_seconds": 7200.0, "job/earlier_attempts_cpu_seconds": 3540.0}}}, skipped={})
    collected.runs[0].tags.update({"resumed_from": "r0", "threads": "1", "device": "cpu"})
    collected.runs[2].tags.update({"resumed_from": "r1"})
    alpha, beta, gamma = cost.run_costs(collected)
    assert (alpha.wall, alpha.cpu, alpha.training, alpha.evaluation, alpha.stages, alpha.reused, alpha.resumed) == (
        3725.0, 1800.0, 600.0, 3000.0, 2, 1, True)
    assert (beta.wall, beta.cpu, beta.training, beta.evaluation, beta.stages, beta.resumed) == (59.0, None, 0.0, None, 0, False)
    assert (gamma.attempts, gamma.earlier, gamma.earlier_cpu, gamma.uncounted) == (3, 7200.0, 3540.0, False)
    text = cost.to_markdown([alpha, beta, gamma])
    assert "| alpha [r] | 0 | 1h02m | 30m00s | 10m00s | 50m00s | 1 of 2 | — | 1 | cpu |" in text
    assert "| beta_model | 0 | 59s | — | 0s | — | 0 of 0 | — | ? | ? |" in text
    assert "| gamma | 0 | 2m00s | 1m00s | 0s | — | 0 of 0 | 2: 2h00m, CPU 59m00s | ? | ? |" in text
    assert ("Total over 3 runs: wall 1h05m (logged by 3 of 3), CPU 31m00s (logged by 2 of 3); their earlier "
            "attempts: wall 2h00m, CPU 59m00s (logged by 1 of 3).") in text
    page = cost_html([alpha, beta, gamma])
    assert "<td>alpha [r]</td><td>0</td><td>1h02m</td><td>30m00s</td>" in page and "logged by 1 of 3" in page
    assert "<td>2: 2h00m, CPU 59m00s</td>" in page
