"""Frozen, versioned suite specifications (in the spirit of HELM's run specs and lm-eval's versioned tasks).

A :class:`Suite` names a dataset, the rows to train (:class:`Variant`: a registered model, optional config
changes, optional first-k modalities), the metrics to compute and its :class:`Budget` s. A budget fixes
every size that costs time: training data, a model-independent :class:`~mmbench.scaling.Scale` (each
model's Config maps it onto its own fields), per-model config overrides, eval sizes (``EvalSettings``
fields) and seeds. Everything here is plain data: no torch, no registry lookups, no model's field
spellings (``mmbench.runner.validate`` resolves and checks the names; the planner applies the scale).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mmbench.config import did_you_mean
from mmbench.scaling import Scale

Overrides = tuple[tuple[str, Any], ...]
DatasetKind = str  # a dataset family registered in mmbench.data.registry (polymnist, synthetic, ...)
Sizing = Literal["pipeline", "unmeasured", "measured", "paper"]
SIZING_STATUS = {
    "pipeline": "checks the pipeline only, ranks nothing",
    "unmeasured": "unmeasured, to be sized",
    "measured": "sized by measurement",
    "paper": "the paper's sizes",
}


def overrides(mapping: Mapping[str, Any] | None = None, **kwargs: Any) -> Overrides:
    """A frozen, sorted tuple of ``(field, value)`` pairs from a mapping and/or keyword arguments."""
    merged = {**dict(mapping or {}), **kwargs}
    for key, value in merged.items():
        if isinstance(value, list | dict | set):
            raise TypeError(f"override {key!r}: use a tuple or a scalar so suites stay frozen, got {value!r}")
    return tuple(sorted(merged.items()))


@dataclass(frozen=True)
class DatasetSpec:
    """Where a suite's data comes from: a dataset family of :mod:`mmbench.data.registry` (``kind``)
    instantiated as ``name`` with ``num_modalities`` modalities (the source says what they are).

    ``polymnist``: the stored dataset ``name`` (built by ``mmbench data prepare`` when missing).
    ``synthetic``: :func:`mmbench.data.synthetic.make_patterns` with ``num_modalities`` modalities;
    its splits are generated in memory from fixed seeds (train 0, val 1, test 2).
    """

    kind: DatasetKind
    name: str
    num_modalities: int

    @property
    def modalities(self) -> tuple[str, ...]:
        from mmbench.data.registry import get_source

        return get_source(self.kind, self.name, self.num_modalities).modalities


@dataclass(frozen=True)
class Variant:
    """One row of a suite: a registered model, optionally with config changes, on the first k modalities.

    ``overrides`` apply on top of the budget's overrides for ``model`` at every budget;
    ``budget_overrides`` add per-budget changes (e.g. fewer sampler steps at the smoke budget).
    ``observed_share`` η: the share of modalities each training tuple observes (``mmbench.data.presence``;
    the masks are fixed by the job's seed; evaluation always uses complete test tuples). η < 1 needs a model
    that declares ``Capability.INCOMPLETE``; η = 1 (complete data) leaves every job id as it was.
    """

    label: str
    model: str
    overrides: Overrides = ()
    budget_overrides: tuple[tuple[str, Overrides], ...] = ()
    num_modalities: int | None = None  # None: every modality of the dataset
    extra: bool = False  # a row the user added to the suite's own (``--models mine``, ``mmbench eval``)
    observed_share: float = 1.0  # η: the share of observed modalities per training tuple (1.0 = complete)

    def overrides_at(self, budget: str) -> dict[str, Any]:
        out = dict(self.overrides)
        out.update(dict(dict(self.budget_overrides).get(budget, ())))
        return out


@dataclass(frozen=True)
class Budget:
    """The sizes of one way of running a suite.

    ``n_train``/``n_val``/``n_test``: tuples taken from each split (stratified first-n; None = all).
    ``scale``: what the budget shrinks for every model (each model's Config maps it onto its own fields,
    :mod:`mmbench.scaling`); ``model_overrides``: further per-model config overrides, applied after it.
    ``eval_overrides``: ``EvalSettings`` fields (sizes of generated sets, FID extractor, ...).
    ``classifier_steps``: train the suite's classifiers for this many steps when they are missing
    (None = the classifier recipe's full length); a non-default length gets its own checkpoint name.
    ``ranks``: False when the budget only checks that the pipeline runs (its numbers rank nothing).
    ``sizing``: where the values come from: ``"pipeline"`` (tiny, for CI), ``"unmeasured"`` (first
    values, to be sized by measuring coherence), ``"measured"`` (sized by measurement), ``"paper"``.
    ``model_notes``: per-model remarks the report prints next to every row training that model (e.g. that
    it trains to a cap without reaching the budget's target), keyed like ``model_overrides``.
    ``capped``: models trained to a step cap whether or not they reach the budget's target (their note says
    so); a findings check does not count such a row's shortfall as evidence against a claim.
    """

    name: str
    purpose: str
    seeds: tuple[int, ...]
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    scale: Scale = Scale()
    model_overrides: tuple[tuple[str, Overrides], ...] = ()
    eval_overrides: Overrides = ()
    classifier_steps: int | None = None
    ranks: bool = True
    sizing: Sizing = "unmeasured"
    note: str = ""
    model_notes: tuple[tuple[str, str], ...] = ()
    capped: tuple[str, ...] = ()

    def overrides_of(self, model: str) -> dict[str, Any]:
        """The budget's explicit config overrides for ``model`` (applied after its scale's)."""
        return dict(dict(self.model_overrides).get(model, ()))

    def note_of(self, model: str) -> str | None:
        """The budget's remark on ``model``'s rows (None: none)."""
        return dict(self.model_notes).get(model)

    def notes_for(self, models: Iterable[str]) -> dict[str, str]:
        """model -> the budget's remark, for those of ``models`` it has one on (in their order)."""
        return {m: note for m in dict.fromkeys(models) if (note := self.note_of(m)) is not None}

    def row_settings(self, variant: Variant) -> dict[str, Any]:
        """Everything this budget sets for ``variant``'s jobs, as plain data: data sizes, scale, the merged
        config overrides (budget's for the model, then the row's), evaluation settings, classifier length.

        The runner tags each run with it and the report compares it with today's, so a run made before the
        budget changed is never mixed into a table (a change of code defaults needs a suite version bump).
        """
        return {
            "n_train": self.n_train, "n_val": self.n_val, "n_test": self.n_test, "scale": self.scale.asked(),
            "model": {**self.overrides_of(variant.model), **variant.overrides_at(self.name)},
            "eval": dict(self.eval_overrides), "classifier_steps": self.classifier_steps,
        }

    @property
    def status(self) -> str:
        """A short phrase for listings: what the budget's numbers can be used for."""
        return SIZING_STATUS[self.sizing] if self.ranks else SIZING_STATUS["pipeline"]


@dataclass(frozen=True)
class Suite:
    """A frozen, versioned benchmark: dataset, rows, metrics and budgets.

    ``optional_metrics`` may be skipped for rows whose model lacks a capability the metric needs (the
    store records the skip with its reason); every other metric must be computable for every row.
    ``figures`` lists the report's figures this suite has the data for; ``findings`` the paper's claims
    the report checks (names in ``mmbench.report.findings.FINDINGS``). ``unranked``: row labels the report
    shows for comparison and never marks best (the image-blind F1 floors, ``baselines/floors``).
    """

    name: str
    version: str
    description: str
    dataset: DatasetSpec
    variants: tuple[Variant, ...]
    metrics: tuple[str, ...]
    budgets: tuple[Budget, ...]
    optional_metrics: frozenset[str] = frozenset()
    figures: tuple[str, ...] = ()
    tables: tuple[str, ...] = ("conditional", "unconditional")
    findings: tuple[str, ...] = ()
    default_budget: str = "quick"
    unranked: frozenset[str] = frozenset()

    def budget(self, name: str) -> Budget:
        for budget in self.budgets:
            if budget.name == name:
                return budget
        names = [b.name for b in self.budgets]
        raise KeyError(
            f"suite {self.name!r} has no budget {name!r}.{did_you_mean(name, names)} Budgets: {', '.join(names)}."
        )

    def variant(self, label: str) -> Variant:
        for variant in self.variants:
            if variant.label == label:
                return variant
        labels = [v.label for v in self.variants]
        raise KeyError(f"suite {self.name!r} has no model {label!r}.{did_you_mean(label, labels)} Rows: {', '.join(labels)}.")

    @property
    def models(self) -> tuple[str, ...]:
        """The distinct registered model names used by the rows, in row order."""
        return tuple(dict.fromkeys(v.model for v in self.variants))

    def select(self, names: tuple[str, ...] | None) -> tuple[Variant, ...]:
        """Rows whose label or model name is in ``names`` (all rows for None); unknown names raise."""
        if not names:
            return self.variants
        known = {v.label for v in self.variants} | {v.model for v in self.variants}
        for name in names:
            if name not in known:
                raise KeyError(
                    f"suite {self.name!r} has no model {name!r}.{did_you_mean(name, known)} "
                    f"Rows: {', '.join(v.label for v in self.variants)}."
                )
        return tuple(v for v in self.variants if v.label in names or v.model in names)
