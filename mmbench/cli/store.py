"""``mmbench store export | import``: copy a budget's finished runs between MLflow stores (mmbench.tracking.bundle)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from mmbench.tracking import RunRecord

TRACKING_HELP = "MLflow store [$MLFLOW_TRACKING_URI or ~/.mmbench/mlflow.db]."
CLASSIFIERS = "classifiers"  # their folder among a bundle's attached files


@click.group()
def store() -> None:
    """Copy finished runs between stores: from a cluster node or a GPU machine, or beside a published report."""


@store.command("export")
@click.option("--suite", required=True, help="Suite name.")
@click.option("--budget", default=None, help="Budget [the suite's default].")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Bundle folder (written whole).")
@click.option("--tracking-uri", default=None, help=TRACKING_HELP)
@click.option("--no-classifiers", is_flag=True, help="Leave out the classifier files the runs were scored with.")
def export(suite: str, budget: str | None, out: Path, tracking_uri: str | None, no_classifiers: bool) -> None:
    """Write every finished job run of SUITE at BUDGET (records, metric histories, artifacts) to a checksummed
    bundle folder, with the classifier files that scored them where this machine has those very files."""
    from mmbench.cli.harness import suite_and_budget
    from mmbench.tracking import Store, TrackingError
    from mmbench.tracking.bundle import describe, export_bundle, finished_runs

    spec, budget_spec = suite_and_budget(suite, budget)
    try:
        store_ = Store(tracking_uri)
        attach, notes = ({}, []) if no_classifiers else _classifiers_of(finished_runs(store_, spec.name, budget_spec.name))
        done = export_bundle(store_, spec.name, budget_spec.name, out, attach)
    except TrackingError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{describe(done, 'exported')} of {spec.name} at {budget_spec.name} to {out}")
    for line in notes:
        click.echo(line)


def _classifiers_of(runs: list[RunRecord]) -> tuple[dict[str, Path], list[str]]:
    """The classifier files (checkpoint and sidecar) the runs were scored with, by their bundle names, where the
    classifier folder holds those very files; and a line for each one it does not."""
    from classifiers.store import checkpoint_files
    from mmbench.records import Tag

    used = {(run.tags[name], run.tags[sha]) for run in runs
            for name, sha in ((Tag.CLASSIFIER, Tag.CLASSIFIER_SHA256), (Tag.SUBSTITUTE, Tag.SUBSTITUTE_SHA256))
            if run.tags.get(name) and run.tags.get(sha) not in (None, "", "null")}
    attach: dict[str, Path] = {}
    notes = []
    for name, sha in sorted(used):
        files = checkpoint_files(name, sha)
        if files is None:
            notes.append(f"classifier {name} (sha256 {sha[:12]}…) not attached: the file here is missing or another")
            continue
        attach.update({f"{CLASSIFIERS}/{path.name}": path for path in files})
    return attach, notes


@store.command("import")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--tracking-uri", default=None, help=TRACKING_HELP)
def import_(bundle: Path, tracking_uri: str | None) -> None:
    """Copy a bundle's runs into the store, after checking every file against its manifest, and install the
    classifiers attached to it where none of their name is here. `mmbench run` then counts their jobs as done
    and `mmbench report` uses them; importing twice copies nothing twice."""
    from mmbench.tracking import Store, TrackingError
    from mmbench.tracking.bundle import attached_files, describe, import_bundle

    try:
        store_ = Store(tracking_uri)
        store_.check()
        done = import_bundle(store_, bundle)
        attached = attached_files(bundle)
    except TrackingError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{describe(done, 'imported')} into {store_.uri}")
    from classifiers.store import install_checkpoint

    for name, path in attached.items():
        if name.startswith(f"{CLASSIFIERS}/") and name.endswith(".pt"):
            try:
                click.echo(install_checkpoint(path))
            except ValueError as exc:  # a checkpoint that disagrees with its own sidecar
                raise click.ClickException(str(exc)) from None
