"""``mmbench validate``: resolve every name of a suite and check it against the code, training nothing.

Checks: the dataset's family is registered and its source accepts the suite's dataset; every row's model is registered; every metric is known and produces keys for the row's
modalities; every metric's needs are met by every row's model capabilities (metrics the suite marks
optional may be skipped, and are listed); every budget's config overrides are fields of each model's
Config (with their types); every eval override is an ``EvalSettings`` field; sizes and seeds are sane.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from mmbench.config import ConfigError, did_you_mean
from mmbench.data.source import DataSource
from mmbench.suites.spec import Budget, Suite, Variant


@dataclass
class ValidationReport:
    """Errors (the suite cannot run as written) and notes (what will be skipped, and why)."""

    suite: str
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class SuiteInvalid(ValueError):
    """A suite failed validation; the message lists every problem."""


def validate_suite(
    suite: Suite, budgets: Sequence[str] | None = None, models: Sequence[str] | None = None
) -> ValidationReport:
    """Check a suite against the registry, the metrics and the configs.

    ``budgets``: only these budgets (default all); ``models``: only the rows these names select (a run
    of some rows needs only those rows to be valid).
    """
    report = ValidationReport(suite.name)
    _check_structure(suite, report)
    source = _check_dataset(suite, report)
    chosen = [suite.budget(b) for b in budgets] if budgets else list(suite.budgets)
    rows = suite.select(tuple(models) if models else None)
    valid_rows = [v for v in rows if _check_model(v, report)]
    _check_incomplete(valid_rows, suite.dataset.num_modalities, report)
    if source is not None:
        _check_metrics(suite, source, valid_rows, report)
    for budget in chosen:
        _check_budget(suite, budget, valid_rows, report)
    return report


def require_valid(
    suite: Suite, budgets: Sequence[str] | None = None, models: Sequence[str] | None = None
) -> ValidationReport:
    report = validate_suite(suite, budgets, models)
    if not report.ok:
        raise SuiteInvalid(f"suite {suite.name!r} is invalid:\n  " + "\n  ".join(report.errors))
    return report


def _check_structure(suite: Suite, report: ValidationReport) -> None:
    if not suite.version:
        report.errors.append("the suite has no version")
    for what, names in (("row label", [v.label for v in suite.variants]), ("budget", [b.name for b in suite.budgets])):
        for name, count in Counter(names).items():
            if count > 1:
                report.errors.append(f"{what} {name!r} appears {count} times")
    if not suite.variants:
        report.errors.append("the suite has no rows (models)")
    unknown_optional = suite.optional_metrics - set(suite.metrics)
    if unknown_optional:
        report.errors.append(f"optional metrics {sorted(unknown_optional)} are not among the suite's metrics")
    if suite.default_budget not in {b.name for b in suite.budgets}:
        report.errors.append(f"default budget {suite.default_budget!r} is not one of the suite's budgets")
    _check_report_items(suite, report)


def _check_dataset(suite: Suite, report: ValidationReport) -> DataSource | None:
    """The suite's dataset source (None when its family is unknown), its own problems and the rows' sizes."""
    from mmbench.data.registry import families, get_source

    spec = suite.dataset
    try:
        source = get_source(spec.kind, spec.name, spec.num_modalities)
    except KeyError as exc:
        report.errors.append(f"dataset {spec.name!r}: {exc.args[0]}")
        return None
    except (ImportError, AttributeError, TypeError) as exc:
        report.errors.append(f"dataset {spec.name!r}: family {spec.kind!r} cannot be loaded ({exc}); known: {families()}")
        return None
    report.errors.extend(f"dataset {spec.name!r}: {problem}" for problem in source.problems())
    count = len(source.modalities)
    for v in suite.variants:
        if v.num_modalities is not None and not 2 <= v.num_modalities <= count:
            report.errors.append(f"row {v.label!r}: num_modalities {v.num_modalities} is outside 2..{count}")
    return source


def _check_report_items(suite: Suite, report: ValidationReport) -> None:
    from mmbench.report.figures import FIGURES
    from mmbench.report.tables import TABLES

    figures = {*FIGURES, "fig20", "fig10", "samples"}
    for name in suite.figures:
        if name not in figures:
            report.errors.append(f"figure {name!r} is unknown to the report.{did_you_mean(name, figures)}")
    for name in suite.tables:
        if name not in TABLES:
            report.errors.append(f"table {name!r} is unknown to the report.{did_you_mean(name, TABLES)}")


def _check_model(variant: Variant, report: ValidationReport) -> bool:
    from mmbench.runner.models import model_class

    try:
        model_class(variant.model)
    except KeyError as exc:
        report.errors.append(f"row {variant.label!r}: {exc.args[0]}")
        return False
    except (ImportError, AttributeError) as exc:
        report.errors.append(f"row {variant.label!r}: model {variant.model!r} cannot be imported ({exc})")
        return False
    return True


def _check_incomplete(rows: Sequence[Variant], dataset_modalities: int, report: ValidationReport) -> None:
    """Rows trained on incomplete tuples (η < 1) need a valid η and a model that declares INCOMPLETE."""
    from mmbench.contract import Capability
    from mmbench.data.presence import check_share
    from mmbench.runner.models import model_class

    for v in rows:
        try:
            share = check_share(v.observed_share)
        except ValueError as exc:
            report.errors.append(f"row {v.label!r}: {exc}")
            continue
        cls = model_class(v.model)
        if share < 1.0 and Capability.INCOMPLETE not in getattr(cls, "capabilities", frozenset()):
            why = getattr(cls, "incomplete_reason", "") or "it does not declare Capability.INCOMPLETE"
            report.errors.append(
                f"row {v.label!r}: model {v.model!r} cannot train on incomplete tuples (observed_share {share:g}): "
                f"{why}; drop the row or give the model an objective over the observed subset"
            )
            continue
        if share < 1.0:
            _check_observed_count(v, share, v.num_modalities or dataset_modalities, cls, report)


def _check_observed_count(row: Variant, share: float, modalities: int, cls: type, report: ValidationReport) -> None:
    """A row whose tuples observe fewer modalities (round(η·M)) than its model's config needs is refused."""
    from mmbench.data.presence import observed_count
    from mmbench.registry import model_config

    needed, why = cls.min_observed(model_config(row.model, dict(row.overrides)))
    observed = observed_count(share, modalities)
    if observed < needed:
        report.errors.append(
            f"row {row.label!r}: each training tuple observes {observed} of {modalities} modalities "
            f"(observed_share {share:g}) but model {row.model!r} needs {needed}: {why}; raise observed_share"
        )


def _check_metrics(suite: Suite, source: DataSource, rows: Sequence[Variant], report: ValidationReport) -> None:
    from mmbench.metrics.settings import EvalSettings
    from mmbench.runner.catalog import metric_spec
    from mmbench.runner.models import model_class
    from mmbench.runner.plan import modalities_of

    for name in suite.metrics:
        try:
            spec = metric_spec(name)
        except KeyError as exc:
            report.errors.append(exc.args[0])
            continue
        for v in rows:
            has = {c.value for c in model_class(v.model).capabilities}
            unmet = sorted(spec.needs - has)
            if unmet and name in suite.optional_metrics:
                report.notes.append(f"{name} will be skipped for {v.label} (needs {', '.join(unmet)})")
            elif unmet:
                report.errors.append(
                    f"metric {name!r} needs {', '.join(unmet)}, which model {v.model!r} (row {v.label!r}) lacks; "
                    "drop the row or the metric, or mark the metric optional in the suite"
                )
            kinds = source.kinds(modalities_of(suite, v))
            if not unmet and not spec.keys(kinds, EvalSettings()):
                described = ", ".join(f"{m} ({k})" for m, k in kinds.items())
                report.errors.append(f"metric {name!r} produces no keys for row {v.label!r}'s modalities {described}")


def _check_budget(suite: Suite, budget: Budget, rows: Sequence[Variant], report: ValidationReport) -> None:
    where = f"budget {budget.name!r}"
    if not budget.seeds:
        report.errors.append(f"{where}: no seeds")
    for size_name in ("n_train", "n_val", "n_test"):
        size = getattr(budget, size_name)
        if size is not None and size < 2:
            report.errors.append(f"{where}: {size_name} must be at least 2 (or None for the whole split), got {size}")
    _check_override_names(budget, {v.model for v in suite.variants}, report)
    for v in rows:
        _check_overrides(budget, v, report)
    _check_eval(budget, report)


def _check_override_names(budget: Budget, models_in_suite: set[str], report: ValidationReport) -> None:
    """Per-model overrides must name registered models; a budget shared by several suites may carry
    overrides for models one of them has no row for (a note, not an error)."""
    from mmbench import registry

    where = f"budget {budget.name!r}"
    for what, pairs in (("overrides", budget.model_overrides), ("a note", budget.model_notes)):
        for model, _ in pairs:
            if model not in registry.names():
                report.errors.append(f"{where}: {what} for {model!r}, which is not a registered model."
                                     f"{did_you_mean(model, registry.names())}")
            elif model not in models_in_suite:
                report.notes.append(f"{where}: {what} for {model!r} unused (no row of this suite trains it)")


def _check_overrides(budget: Budget, variant: Variant, report: ValidationReport) -> None:
    from mmbench.registry import model_config
    from mmbench.runner.models import model_class
    from mmbench.runner.plan import model_overrides

    try:
        overrides = model_overrides(budget, variant, "0" * 16, 0, model_class(variant.model).Config)
    except KeyError as exc:
        report.errors.append(f"budget {budget.name!r}, row {variant.label!r}: {exc.args[0]}")
        return
    try:
        config = model_config(variant.model, overrides)
    except (ConfigError, TypeError, ValueError) as exc:
        report.errors.append(f"budget {budget.name!r}, row {variant.label!r}: {exc}")
        return
    check = getattr(config, "check", None)
    if callable(check):
        try:
            check()
        except ValueError as exc:
            report.errors.append(f"budget {budget.name!r}, row {variant.label!r}: {exc}")


def _check_eval(budget: Budget, report: ValidationReport) -> None:
    from mmbench.metrics.settings import EvalSettings

    names = [f.name for f in dataclasses.fields(EvalSettings)]
    known = {}
    for key, value in budget.eval_overrides:
        if key not in names:
            report.errors.append(f"budget {budget.name!r}: unknown eval setting {key!r}.{did_you_mean(key, names)}")
        elif key == "device":
            report.errors.append(f"budget {budget.name!r}: the device is chosen at run time (--device), not by a budget")
        else:
            known[key] = value
    try:
        EvalSettings(**known)
    except (TypeError, ValueError) as exc:
        report.errors.append(f"budget {budget.name!r}: eval settings: {exc}")
