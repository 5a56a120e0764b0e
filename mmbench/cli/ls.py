"""``mmbench ls models | suites | datasets``: what can be run, without importing torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from mmbench.plugins import Registry
    from mmbench.suites.spec import Budget


@click.group()
def ls() -> None:
    """List registered models, datasets or the benchmark suites."""


def _list(parts: Registry) -> None:
    """One line per registered name, in name order: the name, then its summary (imports no part)."""
    names = sorted(parts.names())
    width = max(len(n) for n in names)
    for name in names:
        click.echo(f"{name:<{width}}  {parts.entry(name).summary}")


@ls.command()
def models() -> None:
    """One line per registered model: name, then what it is."""
    from mmbench.registry import MODELS

    _list(MODELS)


@ls.command()
def datasets() -> None:
    """One line per registered dataset family: name, then what it is (``mmbench.data.registry``)."""
    from mmbench.data.registry import DATASETS

    _list(DATASETS)


@ls.command()
@click.option("--verbose", "-v", is_flag=True, help="Also list each budget's sizes and notes.")
def suites(verbose: bool) -> None:
    """Each suite with its version, dataset, rows, metrics and budgets (and which budgets are unmeasured)."""
    from mmbench.suites import get_suite, suite_names

    for name in suite_names():
        suite = get_suite(name)
        click.echo(f"{suite.name}  v{suite.version}  {suite.description}")
        click.echo(f"    dataset {suite.dataset.name} ({suite.dataset.num_modalities} modalities); "
                   f"{len(suite.variants)} rows; metrics: {', '.join(suite.metrics)}")
        for budget in suite.budgets:
            default = " (default)" if budget.name == suite.default_budget else ""
            click.echo(f"    {budget.name:<6}{default}: {budget.purpose} — {budget.status}; "
                       f"seeds {','.join(map(str, budget.seeds))}")
            if verbose:
                click.echo(f"        data train/val/test {_n(budget.n_train)}/{_n(budget.n_val)}/{_n(budget.n_test)}; "
                           f"scale {_scale(budget)}; eval {dict(budget.eval_overrides) or 'defaults'}")
                for model, fields in budget.model_overrides:
                    click.echo(f"        {model}: {', '.join(f'{k} {v}' for k, v in fields)}")
                if budget.note:
                    click.echo(f"        {budget.note}")


def _n(value: int | None) -> str:
    return "all" if value is None else str(value)


def _scale(budget: Budget) -> str:
    fields = {k: v for k, v in vars(budget.scale).items() if v is not None}
    return ", ".join(f"{k} {v}" for k, v in fields.items()) or "paper defaults"
