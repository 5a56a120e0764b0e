"""Collect: the store's finished job runs of one suite and budget as a tidy table (HELM's summarise step).

One row per (row label, seed, metric key): the latest FINISHED run of each (label, seed) of the suite's
current version counts; older versions and unfinished attempts are counted, not used. Skip reasons,
metric directions and provenance come from the same runs (tags and the skip-reason and metric-direction
artifacts; every name from :mod:`mmbench.records`). Every (row, budget seed) without a finished run is an :class:`Absence`
saying why: no run yet, the run failed, or it is unfinished (running, stopped or killed). A finished run
made with other settings than the budget gives its row today (its ``row_settings`` tag) is not used
(:func:`current_settings`). Torch is never imported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from mmbench import tracking
from mmbench.config import flatten
from mmbench.hashing import canonical_json
from mmbench.records import Artifact, Tag, is_training_metric
from mmbench.suites.extra_rows import with_rows_of_runs
from mmbench.suites.spec import Budget, Suite
from mmbench.tracking.owner import abandoned

NO_RUN, RUN_FAILED, RUN_UNFINISHED = "no run yet", "run failed", "run unfinished"


@dataclass(frozen=True)
class Absence:
    """Why a (row, seed) of the budget has no finished run: ``status`` is one of NO_RUN, RUN_FAILED,
    RUN_UNFINISHED; ``detail`` is the latest attempt's error or state, ``run_id`` that attempt."""

    status: str
    detail: str = ""
    run_id: str = ""

    def describe(self) -> str:
        text = f"{self.status}: {self.detail}" if self.detail else self.status
        return f"{text} (run {self.run_id})" if self.run_id else text


class NoRuns(RuntimeError):
    """The store holds no finished runs for the suite and budget asked for."""


@dataclass
class Collected:
    suite: Suite
    budget: Budget
    tracking_uri: str
    runs: list[tracking.RunRecord]  # the runs used, in row then seed order
    values: pd.DataFrame  # columns: variant, model, seed, num_modalities, run_id, key, value
    skipped: dict[str, dict[str, str]]  # variant -> key -> reason (a reason from any seed)
    directions: dict[str, bool | None]
    ignored: dict[str, int] = field(default_factory=dict)  # why other runs were not used -> count
    absent: dict[str, dict[int, Absence]] = field(default_factory=dict)  # row -> seed -> why no finished run

    @property
    def variants(self) -> list[str]:
        """Row labels with at least one run, in the suite's order."""
        present = set(self.values["variant"]) | set(self.skipped) | {r.tags[Tag.VARIANT] for r in self.runs}
        return [v.label for v in self.suite.variants if v.label in present]

    @property
    def rows(self) -> list[str]:
        """Every row the report lists: those with a finished run and those without one (absent), in order."""
        listed = set(self.variants) | set(self.absent)
        return [v.label for v in self.suite.variants if v.label in listed]

    def missing_row(self, variant: str) -> Absence | None:
        """Why ``variant`` has no finished run at all (None when at least one seed finished)."""
        if variant in self.variants or variant not in self.absent:
            return None
        return next(iter(self.absent[variant].values()))

    def num_modalities(self, variant: str) -> int:
        spec = self.suite.variant(variant)
        return spec.num_modalities or self.suite.dataset.num_modalities

    def model_of(self, variant: str) -> str:
        return self.suite.variant(variant).model


def collect(suite: Suite, budget: Budget, tracking_uri: str | None = None) -> Collected:
    store = tracking.Store(tracking_uri)
    tracking.check_reachable(store.uri, write=False)
    db = tracking.sqlite_path(store.uri)
    if db is not None and not db.exists():
        raise NoRuns(f"no MLflow store at {db}; run `mmbench run --suite {suite.name} --budget {budget.name}` first")
    experiment = store.experiment_id(suite.name, create=False)
    if experiment is None:
        raise NoRuns(f"the store {store.uri} has no experiment for suite {suite.name!r}; run it first")
    attempts = store.job_runs(experiment, budget.name)
    suite = with_rows_of_runs(suite, attempts)  # rows users added (`--models mine`, `mmbench eval`)
    current, stale = current_settings(suite, budget, attempts)
    chosen, ignored = _choose(suite, [r for r in current if r.status == tracking.FINISHED])
    for run in attempts:
        if run.status == tracking.FINISHED and run.run_id in stale:
            ignored[stale[run.run_id]] = ignored.get(stale[run.run_id], 0) + 1
    absent = absences(suite, budget, attempts, chosen, stale)
    if not chosen:
        others = store.budgets(experiment)
        raise NoRuns(
            f"no finished runs of suite {suite.name!r} v{suite.version} at budget {budget.name!r} in {store.uri}"
            + (f" ({absence_summary(absent)})" if attempts else "")
            + (f"; finished budgets there: {', '.join(others)}" if others else "")
        )
    skipped, directions = _artifacts(store, chosen)
    return Collected(suite, budget, store.uri, chosen, _tidy(chosen, suite), skipped, directions, ignored, absent)


def absence_summary(absent: dict[str, dict[int, Absence]]) -> str:
    """``run failed: mvae seed 0 (run ...: error); no run yet: 11 row seeds`` — failures, unfinished attempts
    and runs made at other settings by name, the rows never run by count."""
    named: list[str] = []
    never = 0
    for row, seeds in absent.items():
        for seed, absence in seeds.items():
            if absence.status == NO_RUN and not absence.run_id:
                never += 1
            else:
                named.append(f"{row} seed {seed}: {absence.describe()}")
    return "; ".join(named + ([f"{never} (row, seed) with no run yet"] if never else []))


def _choose(suite: Suite, runs: list[tracking.RunRecord]) -> tuple[list[tracking.RunRecord], dict[str, int]]:
    """The latest finished run per (label, seed) of the current suite version and its rows."""
    labels = [v.label for v in suite.variants]
    ignored: dict[str, int] = {}
    latest: dict[tuple[str, int], tracking.RunRecord] = {}
    for run in sorted(runs, key=lambda r: r.start_time):
        label, version = run.tags.get(Tag.VARIANT, ""), run.tags.get(Tag.SUITE_VERSION)
        reason = None
        if version != suite.version:
            reason = f"suite version {version} (current: {suite.version})"
        elif label not in labels:
            reason = f"row {label!r} is not in the suite"
        elif (label, _seed(run)) in latest:
            reason = "superseded by a later run of the same row and seed"
        if reason is not None:
            ignored[reason] = ignored.get(reason, 0) + 1
        if version == suite.version and label in labels:
            latest[(label, _seed(run))] = run  # runs are in start order: the last one wins
    order = {label: i for i, label in enumerate(labels)}
    chosen = sorted(latest.values(), key=lambda r: (order[r.tags[Tag.VARIANT]], _seed(r)))
    return chosen, ignored


def current_settings(suite: Suite, budget: Budget, runs: list[tracking.RunRecord]
                     ) -> tuple[list[tracking.RunRecord], dict[str, str]]:
    """The runs made with the settings the budget gives their row today, and run id -> why each other one is not.

    A run's ``row_settings`` tag records :meth:`Budget.row_settings` as planned; a run whose record differs
    from today's measured something else (the budget was changed since) and never enters a table. Rows users
    added, other suite versions and runs logged before the tag existed are not checked.
    """
    declared = {v.label: v for v in suite.variants if not v.extra}
    current, stale = [], {}
    for run in runs:
        variant, logged = declared.get(run.tags.get(Tag.VARIANT, "")), run.tags.get(Tag.ROW_SETTINGS)
        if variant is None or not logged or run.tags.get(Tag.SUITE_VERSION) != suite.version:
            current.append(run)
            continue
        differs = settings_difference(json.loads(logged), budget.row_settings(variant))
        if differs is None:
            current.append(run)
        else:
            stale[run.run_id] = f"made with other settings than the budget gives the row today ({differs})"
    return current, stale


def settings_difference(logged: dict[str, Any], now: dict[str, Any]) -> str | None:
    """``eval/n_conditional: 1000 in the run, 500 now`` for the first differing setting (None: the same)."""
    before, after = flatten(logged), flatten(json.loads(canonical_json(now)))  # now as the run stored it (JSON)
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            return f"{key}: {_shown(before, key)} in the run, {_shown(after, key)} now"
    return None


def _shown(values: dict[str, Any], key: str) -> str:
    return json.dumps(values[key]) if key in values else "unset"


def absences(suite: Suite, budget: Budget, attempts: list[tracking.RunRecord],
             chosen: list[tracking.RunRecord], stale: dict[str, str] | None = None) -> dict[str, dict[int, Absence]]:
    """Every (row, budget seed) without a chosen finished run, with the state of its latest attempt (a
    finished run made with settings the budget no longer gives counts as one; ``stale``: run id -> why, for
    such finished runs and unfinished attempts, which a rerun does not resume)."""
    finished = {(r.tags[Tag.VARIANT], _seed(r)) for r in chosen}
    stale = stale or {}
    latest: dict[tuple[str, int], tracking.RunRecord] = {}
    for run in sorted(attempts, key=lambda r: r.start_time):
        if run.tags.get(Tag.SUITE_VERSION) == suite.version and (run.status != tracking.FINISHED or run.run_id in stale):
            latest[(run.tags.get(Tag.VARIANT, ""), _seed(run))] = run
    out: dict[str, dict[int, Absence]] = {}
    for variant in suite.variants:
        for seed in budget.seeds:
            if (variant.label, seed) not in finished:
                out.setdefault(variant.label, {})[seed] = _absence(latest.get((variant.label, seed)), stale)
    return out


def _absence(attempt: tracking.RunRecord | None, stale: dict[str, str]) -> Absence:
    if attempt is None:
        return Absence(NO_RUN)
    if attempt.run_id in stale:
        last = "finished run" if attempt.status == tracking.FINISHED else f"attempt ({attempt.status.lower()})"
        return Absence(NO_RUN, f"its last {last} was {stale[attempt.run_id]}; a rerun measures it at today's "
                       "settings", attempt.run_id)
    error = attempt.tags.get(Tag.ERROR, "")
    if attempt.status == tracking.FAILED:
        return Absence(RUN_FAILED, error or "no error recorded", attempt.run_id)
    if attempt.status == tracking.KILLED:
        return Absence(RUN_UNFINISHED, f"{error or 'stopped'}; a rerun resumes it", attempt.run_id)
    since = datetime.fromtimestamp(attempt.start_time / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    if attempt.status == tracking.RUNNING and abandoned(attempt.tags):
        return Absence(RUN_UNFINISHED, f"started {since}, left running by a process that is gone (killed?); a rerun "
                       "resumes it", attempt.run_id)
    return Absence(RUN_UNFINISHED, f"{attempt.status.lower()} since {since}", attempt.run_id)


def _seed(run: tracking.RunRecord) -> int:
    return int(run.tags.get(Tag.SEED, "0"))


def _tidy(runs: list[tracking.RunRecord], suite: Suite) -> pd.DataFrame:
    rows = []
    for run in runs:
        variant = run.tags[Tag.VARIANT]
        m = suite.variant(variant).num_modalities or suite.dataset.num_modalities
        for key, value in run.metrics.items():
            if is_training_metric(key):
                continue
            rows.append((variant, run.tags.get(Tag.MODEL, ""), _seed(run), m, run.run_id, key, value))
    return pd.DataFrame(rows, columns=["variant", "model", "seed", "num_modalities", "run_id", "key", "value"])


def _artifacts(store: tracking.Store, runs: list[tracking.RunRecord]) -> tuple[dict[str, dict[str, str]], dict[str, bool | None]]:
    skipped: dict[str, dict[str, str]] = {}
    directions: dict[str, bool | None] = {}
    for run in runs:
        variant = run.tags[Tag.VARIANT]
        reasons = _json_tag(run.tags.get(Tag.SKIPPED, "{}"))
        if reasons is None:  # the tag was truncated: the artifact holds all of it
            reasons = store.read_json(run.run_id, Artifact.SKIPPED)
        for key, reason in reasons.items():
            skipped.setdefault(variant, {}).setdefault(key, reason)
    for run in {r.tags[Tag.VARIANT]: r for r in runs}.values():
        directions.update(store.read_json(run.run_id, Artifact.METRIC_KEYS))
    return skipped, directions


def _json_tag(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
