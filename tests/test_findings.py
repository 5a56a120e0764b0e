"""The report's findings check, degenerate flags and missing rows, on hand-built runs (no store).

Each finding is shown to hold, not to hold when the numbers behind it flip, and to be uncheckable when
its rows are missing; expected numbers are written out here independently of the code.
"""

from __future__ import annotations

import csv
import io
import math

import pytest

from mmbench import tracking
from mmbench.records import Kind, Tag
from mmbench.report import _index, missing_rows
from mmbench.report import findings as fnd
from mmbench.report import tables as tbl
from mmbench.report.aggregate import Aggregate
from mmbench.report.collect import (
    NO_RUN,
    RUN_FAILED,
    RUN_UNFINISHED,
    Absence,
    Collected,
    NoRuns,
    _tidy,
    absences,
    collect,
)
from mmbench.report.degenerate import COLLAPSE_KEY, COLLAPSE_KL_NATS
from mmbench.suites import get_suite, suite_names
from mmbench.suites.celeba import CELEBA_FINDINGS
from mmbench.suites.polymnist import PAPER_FINDINGS
from mmbench.suites.spec import Budget, DatasetSpec, Suite, Variant

SUITE = Suite(
    name="f-test", version="2", description="findings test", dataset=DatasetSpec("synthetic", "patterns4", 4),
    variants=(Variant("sbm-vae", "sbm-vae"), Variant("sbm-vae-c", "sbm-vae-c"), Variant("mvae", "mvae"),
              Variant("mopoe", "mopoe")),
    metrics=("coherence", "fid"), budgets=(Budget("quick", "test", seeds=(0,)),), findings=PAPER_FINDINGS,
)
DIRECTIONS = {"coherence/uncond/all_agree": True, "coherence/loo/mean": True, COLLAPSE_KEY: False}
ROWS = ("sbm-vae", "sbm-vae-c", "mvae", "mopoe")


def _curve(prefix: str, points: list[float]) -> dict[str, float]:
    return {f"{prefix}/last_given/k{k}": v for k, v in enumerate(points, start=1)}


def paper_like() -> dict[str, dict[str, float]]:
    """Numbers for which every claim holds (M = 4 modalities: k = 1..3)."""
    return {
        "sbm-vae": {"coherence/uncond/all_agree": 0.70, "coherence/loo/mean": 0.80, COLLAPSE_KEY: 0.05,
                    **_curve("fid", [70.0, 72.0, 71.0]), **_curve("coherence", [0.40, 0.50, 0.60])},
        "sbm-vae-c": {"coherence/uncond/all_agree": 0.60, "coherence/loo/mean": 0.85, COLLAPSE_KEY: 0.05,
                      **_curve("fid", [75.0, 74.0, 76.0]), **_curve("coherence", [0.55, 0.60, 0.65])},
        "mvae": {"coherence/uncond/all_agree": 0.20, "coherence/loo/mean": 0.30, COLLAPSE_KEY: 0.10,
                 **_curve("fid", [100.0, 130.0, 160.0]), **_curve("coherence", [0.2, 0.25, 0.3])},
        "mopoe": {"coherence/uncond/all_agree": 0.40, "coherence/loo/mean": 0.75, COLLAPSE_KEY: 0.20,
                  **_curve("fid", [90.0, 95.0, 120.0]), **_curve("coherence", [0.5, 0.6, 0.7])},
    }


def _run(variant: str, metrics: dict[str, float], seed: int = 0, status: str = "FINISHED", start: int = 0,
         tags: dict[str, str] | None = None) -> tracking.RunRecord:
    all_tags = {"variant": variant, "seed": str(seed), "suite_version": SUITE.version,
                "model": SUITE.variant(variant).model, **(tags or {})}
    return tracking.RunRecord(f"{variant}-{seed}-{status}-{start}", status, start, None, {}, dict(metrics), all_tags, "")


def _agg(values: dict[str, dict[str, float]], absent: dict[str, dict[int, Absence]] | None = None) -> Aggregate:
    runs = [_run(v, m) for v, m in values.items()]
    absent = absent if absent is not None else {v: {0: Absence(NO_RUN)} for v in ROWS if v not in values}
    return Aggregate(Collected(SUITE, SUITE.budgets[0], "sqlite:///x.db", runs, _tidy(runs, SUITE), {}, DIRECTIONS,
                               {}, absent))


def _verdicts(agg: Aggregate) -> dict[str, fnd.Verdict]:
    return {f.name: v for f, v in fnd.check_all(SUITE.findings, agg)}


# --------------------------------------------------------------------------------------------- findings


def test_every_finding_holds_on_paper_like_numbers_with_the_numbers_behind_it():
    verdicts = _verdicts(_agg(paper_like()))
    assert {name: v.status for name, v in verdicts.items()} == dict.fromkeys(PAPER_FINDINGS, fnd.HOLDS)
    assert all(not v.missing for v in verdicts.values())
    assert "best SBM sbm-vae 0.700 vs best baseline mopoe 0.400" in verdicts["sbm_best_unconditional_coherence"].evidence
    # (72 - 70) / 70 and (76 - 74) / 74
    flat = verdicts["sbm_fid_flat_in_observed"].evidence
    assert f"sbm-vae {2 / 70:.1%}" in flat and f"sbm-vae-c {2 / 74:.1%}" in flat and f"mvae {60 / 100:.1%}" in flat
    assert "sbm-vae +0.1000" in verdicts["sbm_coherence_rises_with_observed"].evidence  # 0.4, 0.5, 0.6 over k
    assert "sbm-vae-c − sbm-vae at k = 1, 2, 3: +0.150, +0.100, +0.050 (mean +0.100)" in verdicts["guidance_lifts_few_observed"].evidence
    assert "MVAE: mvae 0.300 vs lowest other row mopoe 0.750" in verdicts["mvae_lowest_coherence"].evidence


def _flipped(name: str) -> dict[str, dict[str, float]]:
    values = paper_like()
    if name == "sbm_best_unconditional_coherence":
        values["mopoe"]["coherence/uncond/all_agree"] = 0.71
    elif name == "sbm_fid_flat_in_observed":
        values["sbm-vae-c"].update(_curve("fid", [75.0, 80.0, 90.0]))  # 20 % > 15 %
    elif name == "sbm_coherence_rises_with_observed":
        values["sbm-vae"].update(_curve("coherence", [0.6, 0.5, 0.59]))  # slope -0.005
    elif name == "guidance_lifts_few_observed":
        values["sbm-vae-c"].update(_curve("coherence", [0.35, 0.5, 0.6]))  # mean difference -0.05/3
    elif name == "mvae_lowest_coherence":
        values["mvae"]["coherence/loo/mean"] = 0.76  # above MoPoE's 0.75
    return values


@pytest.mark.parametrize("name", PAPER_FINDINGS)
def test_each_verdict_flips_when_its_numbers_flip_and_only_that_one(name):
    verdicts = _verdicts(_agg(_flipped(name)))
    assert verdicts[name].status == fnd.FAILS
    assert all(v.status == fnd.HOLDS for other, v in verdicts.items() if other != name)


def test_the_budgets_note_on_a_guided_model_travels_with_the_guidance_verdict():
    """A budget that knows its -C rows' energy learnt nothing says so in the guidance verdict's evidence, after
    the numbers; the verdict itself is still computed from the numbers, and other verdicts carry no note."""
    import dataclasses

    note = "its energy model does not tell own pairs from shuffled ones"
    runs = [_run(v, m) for v, m in paper_like().items()]
    budget = dataclasses.replace(SUITE.budgets[0], model_notes=(("sbm-vae-c", note), ("mopoe", "unrelated")))
    agg = Aggregate(Collected(SUITE, budget, "sqlite:///x.db", runs, _tidy(runs, SUITE), {}, DIRECTIONS, {}, {}))
    verdicts = _verdicts(agg)
    guided = verdicts["guidance_lifts_few_observed"]
    assert guided.status == fnd.HOLDS
    assert guided.evidence.endswith(f"(mean +0.100); the budget's note on sbm-vae-c: {note}")
    assert "unrelated" not in guided.evidence and not any(note in v.evidence for k, v in verdicts.items()
                                                          if k != "guidance_lifts_few_observed")
    assert "budget's note" not in _verdicts(_agg(paper_like()))["guidance_lifts_few_observed"].evidence


def test_a_capped_row_below_mvae_is_no_evidence_against_mvae_being_lowest():
    """A row the budget trains to a step cap (under-trained by design) that stays below MVAE is left out of
    "MVAE has the lowest coherence" and named; above MVAE it counts as any row; with nothing else left the
    claim cannot be checked."""
    import dataclasses

    def verdict(budget: Budget, values: dict[str, dict[str, float]]) -> fnd.Verdict:
        suite = dataclasses.replace(SUITE, budgets=(budget,))
        runs = [_run(v, m) for v, m in values.items()]
        return fnd.check_mvae_lowest(Aggregate(Collected(suite, budget, "sqlite:///x.db", runs, _tidy(runs, suite),
                                                         {}, DIRECTIONS, {}, {})))

    values = paper_like()
    values["mopoe"]["coherence/loo/mean"] = 0.20  # below MVAE's 0.30
    plain, capped = SUITE.budgets[0], Budget("quick", "test", seeds=(0,), capped=("mopoe",))
    assert verdict(plain, values).status == fnd.FAILS
    held = verdict(capped, values)
    assert held.status == fnd.HOLDS and "lowest other row sbm-vae 0.800" in held.evidence
    assert "left out, trained to the budget's step cap" in held.evidence and "mopoe 0.200" in held.evidence
    values["sbm-vae"]["coherence/loo/mean"] = 0.25  # an uncapped row below MVAE still refutes it
    assert verdict(capped, values).status == fnd.FAILS
    assert verdict(capped, paper_like()).evidence == verdict(plain, paper_like()).evidence  # capped above: counted
    alone = {"mvae": values["mvae"], "mopoe": values["mopoe"]}
    assert verdict(capped, alone).status == fnd.UNCHECKED


def test_flat_means_a_relative_range_of_at_most_fifteen_percent():
    for top, status in ((70.0 * 1.149, fnd.HOLDS), (70.0 * 1.151, fnd.FAILS)):
        values = paper_like()
        values["sbm-vae"].update(_curve("fid", [70.0, top, 71.0]))
        assert _verdicts(_agg(values))["sbm_fid_flat_in_observed"].status == status


def test_findings_cannot_be_checked_without_their_rows_and_say_which_values_lack():
    values = {row: m for row, m in paper_like().items() if row in ("mvae", "mopoe")}
    verdicts = _verdicts(_agg(values))
    for name in ("sbm_best_unconditional_coherence", "sbm_fid_flat_in_observed",
                 "sbm_coherence_rises_with_observed", "guidance_lifts_few_observed"):
        assert verdicts[name].status == fnd.UNCHECKED, name
        assert any(m.startswith("sbm-vae ") and "no run yet" in m for m in verdicts[name].missing), name
        assert set(verdicts[name].absent_rows) == {"sbm-vae", "sbm-vae-c"}, name
    assert verdicts["mvae_lowest_coherence"].status == fnd.HOLDS  # MVAE and another row are there
    md = fnd.to_markdown(fnd.check_all(SUITE.findings, _agg(values)), "smoke", ranks=False)
    assert "rows without a finished run: sbm-vae, sbm-vae-c (see Missing rows)" in md
    assert "checks the pipeline only" in md and "missing value(s)" not in md  # whole rows are named once
    # a curve with one k missing does not count; the missing key is named
    partial = paper_like()
    for row in ("sbm-vae", "sbm-vae-c"):
        del partial[row]["coherence/last_given/k2"]
    verdict = _verdicts(_agg(partial))["sbm_coherence_rises_with_observed"]
    assert verdict.status == fnd.UNCHECKED and any("sbm-vae coherence/last_given/k2" in m for m in verdict.missing)
    assert not verdict.absent_rows and "2 missing value(s): sbm-vae coherence/last_given/k2: no finished run" in \
        fnd.lacking(verdict)
    no_mvae = {row: m for row, m in paper_like().items() if row != "mvae"}
    verdict = _verdicts(_agg(no_mvae))["mvae_lowest_coherence"]
    assert verdict.status == fnd.UNCHECKED and "missing for the MVAE row" in verdict.evidence


def test_findings_render_as_markdown_and_csv():
    results = fnd.check_all(SUITE.findings, _agg(_flipped("mvae_lowest_coherence")))
    md = fnd.to_markdown(results, "quick")
    assert "budget quick" in md and md.count("**holds**") == 4 and md.count("**does not hold**") == 1
    rows = list(csv.DictReader(io.StringIO(fnd.to_csv(results))))
    assert [r["finding"] for r in rows] == list(PAPER_FINDINGS)
    mvae = rows[-1]
    assert mvae["verdict"] == fnd.FAILS and "0.760" in mvae["evidence"] and mvae["keys"] == "coherence/loo/mean"


def test_suites_name_known_findings():
    assert get_suite("polymnist10").findings == PAPER_FINDINGS
    assert get_suite("celeba-twin").findings == get_suite("celebamaskhq").findings == CELEBA_FINDINGS
    assert set(PAPER_FINDINGS) | set(CELEBA_FINDINGS) == set(fnd.FINDINGS)
    for name in suite_names():
        assert all(fnd.get_finding(f) for f in get_suite(name).findings), name
    with pytest.raises(KeyError, match="sbm_best_unconditional_coherence"):
        fnd.get_finding("sbm_best_unconditional_coherenc")


TWIN = Suite(
    name="t-test", version="1", description="table 1 finding test", dataset=DatasetSpec("celeba-twin", "celeba-twin", 3),
    variants=tuple(Variant(m, m) for m in ("sbm-vae-t", "sbm-rae-t", "sbm-rae", "mopoe", "supervised", "majority")),
    metrics=("f1",), budgets=(Budget("quick", "test", seeds=(0,)),), findings=CELEBA_FINDINGS,
    unranked=frozenset({"majority"}),
)
TWIN_LIKE = {"sbm-vae-t": 0.72, "sbm-rae-t": 0.724, "sbm-rae": 0.573, "mopoe": 0.713, "supervised": 0.762,
             "majority": 0.8}  # a floor above every row (dense attributes) is no rival: it is unranked


def _twin_verdict(values: dict[str, float]) -> fnd.Verdict:
    key = fnd.ATTRIBUTES_GIVEN_IMAGE
    runs = [tracking.RunRecord(f"{v}-0", "FINISHED", 0, None, {}, {key: x},
                               {"variant": v, "seed": "0", "suite_version": "1", "model": v}, "")
            for v, x in values.items()]
    absent = {v: {0: Absence(NO_RUN)} for v in (x.label for x in TWIN.variants) if v not in values}
    agg = Aggregate(Collected(TWIN, TWIN.budgets[0], "sqlite:///x.db", runs, _tidy(runs, TWIN), {}, {key: True}, {},
                              absent))
    return dict((f.name, v) for f, v in fnd.check_all(TWIN.findings, agg))["contrastive_best_attribute_f1"]


def test_the_contrastive_rows_best_attribute_f1_leaves_out_the_reference_and_the_floors():
    verdict = _twin_verdict(TWIN_LIKE)
    assert verdict.status == fnd.HOLDS  # supervised 0.762 and the floor 0.8 are above, and do not count
    assert "lowest -T row sbm-vae-t 0.720 vs best other generative row mopoe 0.713" in verdict.evidence
    assert _twin_verdict({**TWIN_LIKE, "mopoe": 0.721}).status == fnd.FAILS  # above SBM-VAE-T's 0.720
    unchecked = _twin_verdict({k: v for k, v in TWIN_LIKE.items() if not k.endswith("-t")})
    assert unchecked.status == fnd.UNCHECKED and "sbm-vae-t" in unchecked.absent_rows


# ------------------------------------------------------------------------------------ degenerate values


def _collapsed_mopoe() -> dict[str, dict[str, float]]:
    values = paper_like()
    values["mopoe"].update({"coherence/uncond/all_agree": 0.95, COLLAPSE_KEY: math.log(10) - 0.1})  # ~one class
    return values


def test_a_collapsed_model_is_not_best_but_flagged():
    agg = _agg(_collapsed_mopoe())
    assert agg.degenerate("mopoe", "coherence/uncond/all_agree") is not None
    assert agg.degenerate("mopoe", "coherence/loo/mean") is None  # the rule judges unconditional coherence only
    assert agg.best("coherence/uncond/all_agree") == {"sbm-vae"}  # 0.95 of a collapsed model does not count
    spec = tbl.TableSpec("u", "uncond", (tbl.Column("All agree", "coherence/uncond/all_agree"),))
    table = tbl.build_table(spec, agg)
    md = tbl.to_markdown(table, agg)
    line = next(x for x in md.splitlines() if x.startswith("| mopoe "))
    assert "0.950 † [1]" in line and "**" not in line
    assert "| **0.700** |" in next(x for x in md.splitlines() if x.startswith("| sbm-vae "))
    assert "[1] † not ranked: unconditional samples collapse" in md and f"{math.log(10) - 0.1:.2f} nats" in md
    rows = list(csv.DictReader(io.StringIO(tbl.to_csv(table))))
    assert next(r for r in rows if r["model"] == "mopoe")["flag"].startswith("unconditional samples collapse")
    assert "\\dagger a" in tbl.to_latex(table, agg)
    # the finding compares the rest, and says whom it left out
    verdict = _verdicts(agg)["sbm_best_unconditional_coherence"]
    assert verdict.status == fnd.HOLDS and "left out as degenerate (collapsed samples): mopoe" in verdict.evidence


def test_the_collapse_threshold_is_log_two_nats():
    for kl, flagged in ((COLLAPSE_KL_NATS - 1e-6, False), (COLLAPSE_KL_NATS + 1e-6, True)):
        values = _collapsed_mopoe()
        values["mopoe"][COLLAPSE_KEY] = kl
        assert (_agg(values).degenerate("mopoe", "coherence/uncond/all_agree") is not None) == flagged
    # without mode coverage nothing is judged degenerate
    values = _collapsed_mopoe()
    del values["mopoe"][COLLAPSE_KEY]
    assert _agg(values).best("coherence/uncond/all_agree") == {"mopoe"}


# ---------------------------------------------------------------------------------------- missing rows


def test_absences_say_why_each_row_and_seed_has_no_finished_run():
    suite_budget = Budget("quick", "test", seeds=(0, 1))
    finished = [_run("sbm-vae", {}, seed=0, start=5)]
    attempts = finished + [
        _run("sbm-vae", {}, seed=1, status="FAILED", start=1, tags={"error": "RuntimeError: boom"}),
        _run("sbm-vae-c", {}, seed=0, status="FAILED", start=1, tags={"error": "old failure"}),
        _run("sbm-vae-c", {}, seed=0, status="KILLED", start=9, tags={"error": "stopped: stop file"}),
        _run("mvae", {}, seed=0, status="RUNNING", start=0),
        _run("mopoe", {}, seed=0, status="FAILED", start=1, tags={"suite_version": "1"}),  # another version
    ]
    absent = absences(SUITE, suite_budget, attempts, finished)
    assert set(absent) == set(ROWS) and 0 not in absent["sbm-vae"]
    assert absent["sbm-vae"][1] == Absence(RUN_FAILED, "RuntimeError: boom", "sbm-vae-1-FAILED-1")
    assert absent["sbm-vae-c"][0].status == RUN_UNFINISHED and "stop file; a rerun resumes it" in absent["sbm-vae-c"][0].detail
    assert absent["mvae"][0].status == RUN_UNFINISHED and absent["mvae"][0].detail == "running since 1970-01-01 00:00 UTC"
    assert absent["mopoe"] == {0: Absence(NO_RUN), 1: Absence(NO_RUN)}
    assert absent["sbm-vae"][1].describe() == "run failed: RuntimeError: boom (run sbm-vae-1-FAILED-1)"


def test_a_run_left_running_by_a_dead_process_is_called_so_not_running():
    import os
    import subprocess
    import sys

    from mmbench.processes import machine_id
    from mmbench.records import Tag

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    here = {Tag.HOST: machine_id()}
    suite_budget = Budget("quick", "test", seeds=(0,))
    attempts = [_run("mvae", {}, seed=0, status="RUNNING", start=0, tags={**here, Tag.PID: gone.stdout.strip()}),
                _run("mopoe", {}, seed=0, status="RUNNING", start=0, tags={**here, Tag.PID: str(os.getpid())}),
                _run("sbm-vae", {}, seed=0, status="RUNNING", start=0, tags={Tag.HOST: "elsewhere", Tag.PID: gone.stdout.strip()})]
    absent = absences(SUITE, suite_budget, attempts, [])
    assert absent["mvae"][0].detail == ("started 1970-01-01 00:00 UTC, left running by a process that is gone "
                                        "(killed?); a rerun resumes it")
    assert absent["mopoe"][0].detail == "running since 1970-01-01 00:00 UTC"  # its process lives
    assert absent["sbm-vae"][0].detail == "running since 1970-01-01 00:00 UTC"  # another machine's: unknowable here


def test_an_unfinished_attempt_of_settings_the_budget_no_longer_gives_is_not_called_resumable():
    suite_budget = Budget("quick", "test", seeds=(0,))
    old = _run("mvae", {}, seed=0, status="KILLED", start=3, tags={"error": "stopped"})
    why = "made with other settings than the budget gives the row today (model/lr: 0.001 in the run, 0.0003 now)"
    absent = absences(SUITE, suite_budget, [old], [], {old.run_id: why})
    assert absent["mvae"][0] == Absence(NO_RUN, f"its last attempt (killed) was {why}; a rerun measures it at "
                                        "today's settings", old.run_id)
    assert "resumes" in absences(SUITE, suite_budget, [old], [])["mvae"][0].detail  # of today's settings


def test_missing_rows_are_listed_with_their_reason_and_never_a_zero(tmp_path):
    from mmbench.report import ReportFiles

    values = {row: m for row, m in paper_like().items() if row != "mopoe"}
    absent = {"mopoe": {0: Absence(RUN_FAILED, "ValueError: bad", "r1")}}
    agg = _agg(values, absent)
    table = tbl.build_table(tbl.TABLES["conditional"], agg)
    assert table.rows == list(ROWS)  # the missing row is listed, in suite order
    md = tbl.to_markdown(table, agg)
    line = next(x for x in md.splitlines() if x.startswith("| mopoe "))
    assert line == "| mopoe | — [1] | — [1] |" and "[1] run failed for this row (see Missing rows)" in md
    index = _index(agg.collected, agg, [table], ReportFiles(tmp_path), "- prov\n",
                   fnd.to_markdown(fnd.check_all(SUITE.findings, agg), "quick"))
    assert "## Missing rows" in index and "- mopoe: seed 0: run failed: ValueError: bad (run r1)" in index
    assert "## Findings" in index and index.index("## Findings") < index.index("## Tables")
    assert missing_rows(agg.collected) == {"mopoe": "seed 0: run failed: ValueError: bad (run r1)"}
    complete = _agg(paper_like(), {})
    assert "## Missing rows" not in _index(complete.collected, complete, [], ReportFiles(tmp_path), "")


def test_a_store_with_only_failed_runs_says_which_failed_and_what_never_ran(tmp_path):
    store = tracking.Store(f"sqlite:///{tmp_path}/store.db")
    store.check()
    experiment = store.experiment_id(SUITE.name)
    tags = {Tag.KIND: Kind.JOB, Tag.BUDGET: "quick", Tag.VARIANT: "mvae", Tag.SEED: "0", Tag.SUITE_VERSION: "2"}
    run_id = store.create_run(experiment, "mvae-seed-0", {**tags, Tag.ERROR: "ValueError: bad"})
    store.mark(run_id, tracking.FAILED)
    with pytest.raises(NoRuns, match=rf"mvae seed 0: run failed: ValueError: bad \(run {run_id}\); "
                                     r"3 \(row, seed\) with no run yet"):
        collect(SUITE, SUITE.budgets[0], store.uri)
