"""A run is planned once: ``resolve`` + ``prepare`` serve ``mmbench run`` and ``--dry-run`` alike.

Torch-light: planning builds no model (stage costs do, for the dry run's dummy rows only).
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mmbench import suites
from mmbench.cli import main
from mmbench.runner import data as data_mod
from mmbench.runner import prepare as prepare_mod
from mmbench.runner.dryrun import dry_run
from mmbench.runner.plan import plan_jobs
from mmbench.runner.prepare import NOT_BUILT, RunOptions, prepare, resolve
from mmbench.suites import get_suite


def test_resolve_takes_names_or_the_resolved_objects():
    suite = get_suite("synthetic")
    quick = suite.budget("quick")
    assert resolve("synthetic", RunOptions()) == (suite, suite.budget(suite.default_budget))
    assert resolve(suite, RunOptions(budget="quick")) == (suite, quick)
    assert resolve(suite, RunOptions(budget=quick)) == (suite, quick)
    with pytest.raises(KeyError, match="dumy"):
        resolve(suite, RunOptions(models=("dumy",)))


def test_dry_run_prints_the_plan_prepare_makes(_isolated_home):
    suite = get_suite("synthetic")
    options = RunOptions(budget=suite.budget("smoke"), models=("dummy",), seeds=(0, 3))
    plan = prepare(*resolve(suite, options), options)
    assert not plan.provisional and plan.dataset_hash != NOT_BUILT
    assert [(j.label, j.seed) for j in plan.jobs] == [("dummy", 0), ("dummy", 3)]
    assert plan.jobs == plan_jobs(suite, plan.budget, plan.classifiers, ("dummy",), (0, 3))
    lines: list[str] = []
    costs = dry_run(suite, options, lines.append)
    assert [c.job for c in costs] == plan.jobs
    assert f"classifiers {plan.classifiers.eval_name}, {plan.classifiers.substitute_name}" in "\n".join(lines)


def test_a_missing_dataset_is_an_error_unless_the_plan_may_be_provisional(_isolated_home):
    suite = get_suite("polymnist5")  # a stored dataset: not built under a fresh home
    options = RunOptions(budget="smoke", models=("mvae",))
    _, budget = resolve(suite, options)
    with pytest.raises(data_mod.DataMissing):
        prepare(suite, budget, options)
    lines: list[str] = []
    plan = prepare(suite, budget, options, lines.append, provisional_ok=True)
    assert plan.provisional and plan.dataset_hash == NOT_BUILT
    assert plan.classifiers == data_mod.classifier_plan(suite, budget, NOT_BUILT)
    assert plan.jobs == plan_jobs(suite, budget, plan.classifiers, ("mvae",), None, provisional=True)
    assert len(lines) == 1 and "polymnist5 is not built yet" in lines[0] and "provisional" in lines[0]


def test_the_cli_resolves_the_suite_once_and_hands_it_on(_isolated_home, monkeypatch):
    looked_up: list[str] = []
    real = suites.get_suite

    def counting(name: str):
        looked_up.append(name)
        return real(name)

    monkeypatch.setattr(suites, "get_suite", counting)
    monkeypatch.setattr(prepare_mod, "get_suite", counting)
    seen = {}
    real_prepare = prepare_mod.prepare

    def spy(suite, budget, options, *args, **kwargs):
        seen.update(suite=suite, budget=budget, options=options)
        return real_prepare(suite, budget, options, *args, **kwargs)

    monkeypatch.setattr("mmbench.runner.dryrun.prepare", spy)
    result = CliRunner().invoke(main, ["run", "--suite", "synthetic", "--budget", "smoke", "--models", "dummy",
                                       "--dry-run"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert looked_up == ["synthetic"]
    assert seen["suite"] is real("synthetic") and seen["budget"] is real("synthetic").budget("smoke")
    assert seen["options"].models == ("dummy",)
