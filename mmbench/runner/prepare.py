"""A run is planned once: a suite at a budget → checked → its data identified → classifiers named → jobs.

``mmbench run`` and ``mmbench run --dry-run`` both call :func:`resolve` then :func:`prepare`; the run then
builds what is missing and executes the plan's jobs, the dry run prices them. The CLI hands in the
suite and budget it already resolved; library callers may pass names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mmbench.runner import data as data_mod
from mmbench.runner.extra import with_extra_rows
from mmbench.runner.plan import Job, plan_jobs
from mmbench.runner.validate import require_valid
from mmbench.suites import get_suite
from mmbench.suites.spec import Budget, Suite

Say = Callable[[str], None]
NOT_BUILT = "not-built"  # the dataset hash a dry run plans with before the dataset exists


@dataclass(frozen=True)
class RunOptions:
    budget: str | Budget | None = None  # a budget of the suite, or its name; None: the suite's default budget
    models: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None
    device: str = "auto"
    n_jobs: int = 1
    backend: str = "loky"
    scheduler: str | None = None
    tracking_uri: str | None = None
    quiet: bool = False
    threads: int | None = None  # torch CPU threads per job [torch's default for one job, cores / n_jobs for several]


@dataclass(frozen=True)
class Plan:
    """What a run of ``suite`` at ``budget`` executes: its jobs, and the data and classifiers they use."""

    suite: Suite
    budget: Budget
    dataset_hash: str  # the whole dataset's content hash (NOT_BUILT before a dry run's dataset exists)
    classifiers: data_mod.ClassifierPlan
    jobs: list[Job]
    provisional: bool = False  # the dataset is not built: the job ids change once it is (they hash the data)


def resolve(suite: Suite | str, options: RunOptions) -> tuple[Suite, Budget]:
    """The suite and the budget of ``options`` (names are looked up), checked for the rows to run; a model
    of ``options.models`` that is no row of the suite becomes an extra row (:mod:`mmbench.runner.extra`)."""
    spec = with_extra_rows(get_suite(suite) if isinstance(suite, str) else suite, options.models)
    budget = options.budget if isinstance(options.budget, Budget) else spec.budget(options.budget or spec.default_budget)
    require_valid(spec, [budget.name], options.models)
    return spec, budget


def prepare(suite: Suite, budget: Budget, options: RunOptions, say: Say = print, *,
            provisional_ok: bool = False) -> Plan:
    """Plan every (row, seed) job of ``options``' rows and seeds; builds and trains nothing.

    ``provisional_ok``: plan even when the dataset is not built yet (``--dry-run``), with provisional ids;
    otherwise a missing dataset raises :class:`~mmbench.runner.data.DataMissing`.
    """
    try:
        dataset_hash = data_mod.data_ref(suite.dataset, budget, suite.dataset.modalities).dataset_hash
        provisional = False
    except data_mod.DataMissing:
        if not provisional_ok:
            raise
        dataset_hash, provisional = NOT_BUILT, True
        say(f"dataset {suite.dataset.name} is not built yet: `mmbench run` builds it first; "
            "the job ids below are provisional (they hash the data)")
    classifiers = data_mod.classifier_plan(suite, budget, dataset_hash)
    jobs = plan_jobs(suite, budget, classifiers, options.models, options.seeds, provisional=provisional)
    return Plan(suite, budget, dataset_hash, classifiers, jobs, provisional)
