"""``mmbench store export | import``: copy a budget's finished runs between MLflow stores (mmbench.tracking.bundle)."""

from __future__ import annotations

from pathlib import Path

import click

TRACKING_HELP = "MLflow store [$MLFLOW_TRACKING_URI or ~/.mmbench/mlflow.db]."


@click.group()
def store() -> None:
    """Copy finished runs between stores: from a cluster node or a GPU machine, or beside a published report."""


@store.command("export")
@click.option("--suite", required=True, help="Suite name.")
@click.option("--budget", default=None, help="Budget [the suite's default].")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Bundle folder (written whole).")
@click.option("--tracking-uri", default=None, help=TRACKING_HELP)
def export(suite: str, budget: str | None, out: Path, tracking_uri: str | None) -> None:
    """Write every finished job run of SUITE at BUDGET (records, metric histories, artifacts) to a checksummed
    bundle folder."""
    from mmbench.cli.harness import suite_and_budget
    from mmbench.tracking import Store, TrackingError
    from mmbench.tracking.bundle import describe, export_bundle

    spec, budget_spec = suite_and_budget(suite, budget)
    try:
        done = export_bundle(Store(tracking_uri), spec.name, budget_spec.name, out)
    except TrackingError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{describe(done, 'exported')} of {spec.name} at {budget_spec.name} to {out}")


@store.command("import")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--tracking-uri", default=None, help=TRACKING_HELP)
def import_(bundle: Path, tracking_uri: str | None) -> None:
    """Copy a bundle's runs into the store, after checking every file against its manifest. `mmbench run`
    then counts their jobs as done and `mmbench report` uses them; importing twice copies nothing twice."""
    from mmbench.tracking import Store, TrackingError
    from mmbench.tracking.bundle import describe, import_bundle

    try:
        store_ = Store(tracking_uri)
        store_.check()
        done = import_bundle(store_, bundle)
    except TrackingError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{describe(done, 'imported')} into {store_.uri}")
