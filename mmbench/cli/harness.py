"""``mmbench validate | run | report | ui``: the harness commands (heavy imports happen inside each command)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from mmbench.runner.dryrun import JobCost
    from mmbench.runner.prepare import RunOptions
    from mmbench.runner.run import RunSummary
    from mmbench.suites.spec import Budget, Suite

BACKENDS = ("loky", "dask")
INCEPTION_ENV = "MMBENCH_INCEPTION_WEIGHTS"  # mmbench.metrics.extractors.INCEPTION_ENV (that module imports torch)
FORMATS = ("md", "csv", "tex", "html")  # report formats: table files, and html: the page index.html


def _csv_list(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    return items or None


def _seeds(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    items = _csv_list(value)
    try:
        seeds = tuple(int(v) for v in items or ())
    except ValueError:
        raise click.BadParameter(f"seeds are comma-separated integers, e.g. 0,1,2; got {value!r}") from None
    if not seeds:
        raise click.BadParameter("no seeds given; pass e.g. --seeds 0,1,2 or leave the option out for the budget's")
    if any(s < 0 for s in seeds):
        raise click.BadParameter(f"seeds are integers >= 0; got {value!r}")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise click.BadParameter(f"seed {repeated[0]} is given twice in {value!r}; give each seed once")
    return seeds


def _models(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = _csv_list(value)
    if items is None:
        raise click.BadParameter("no rows given; pass e.g. --models mvae,sbm-vae or leave the option out for all")
    return items


def suite_and_budget(suite: str, budget: str | None) -> tuple[Suite, Budget]:
    from mmbench.suites import get_suite

    try:
        spec = get_suite(suite)
        return spec, spec.budget(budget or spec.default_budget)
    except KeyError as exc:
        raise click.UsageError(exc.args[0]) from None


@click.command()
@click.option("--suite", required=True, help="Suite name (see `mmbench ls suites`).")
@click.option("--budget", default=None, help="Check only this budget [all budgets].")
def validate(suite: str, budget: str | None) -> None:
    """Resolve every name of a suite and check it against the models and metrics, training nothing."""
    from mmbench.runner.validate import validate_suite

    spec, _ = suite_and_budget(suite, budget)
    report = validate_suite(spec, [budget] if budget else None)
    for note in report.notes:
        click.echo(f"note: {note}")
    if not report.ok:
        for error in report.errors:
            click.echo(f"error: {error}", err=True)
        raise click.ClickException(f"suite {suite!r} is invalid ({len(report.errors)} problems)")
    budgets = budget or ", ".join(b.name for b in spec.budgets)
    click.echo(f"suite {suite} v{spec.version} is valid (budgets: {budgets}; {len(spec.variants)} rows, "
               f"{len(spec.metrics)} metrics)")


@click.command()
@click.option("--suite", required=True, help="Suite name (see `mmbench ls suites`).")
@click.option("--budget", default=None, help="smoke | quick | paper [the suite's default].")
@click.option("--models", default=None, callback=_models, help="Comma-separated rows or model names [all].")
@click.option("--seeds", default=None, callback=_seeds, help="Comma-separated seeds [the budget's].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--n-jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Jobs in parallel.")
@click.option("--backend", type=click.Choice(BACKENDS), default="loky", show_default=True)
@click.option("--scheduler", default=None, help="dask scheduler address [a LocalCluster of --n-jobs workers].")
@click.option("--tracking-uri", default=None, help="MLflow store [$MLFLOW_TRACKING_URI or ~/.mmbench/mlflow.db].")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads per job [torch's default; cores / n-jobs with several]. On a shared, busy "
                   "machine 1 is often much faster.")
@click.option("--inception-weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Inception-v3 FID weights file, for budgets with fid_extractor inception-v3-compat "
                   "[$MMBENCH_INCEPTION_WEIGHTS or ~/.mmbench/weights/]. Loaded and tried before any training.")
@click.option("--dry-run", is_flag=True, help="Print the plan and its estimated cost; run nothing.")
@click.option("--quiet", is_flag=True, help="No progress bars (CI).")
def run(suite: str, budget: str | None, models: tuple[str, ...] | None, seeds: tuple[int, ...] | None, device: str,
        n_jobs: int, backend: str, scheduler: str | None, tracking_uri: str | None, threads: int | None,
        inception_weights: Path | None, dry_run: bool, quiet: bool) -> None:
    """Train and evaluate a suite's jobs; jobs already FINISHED in the store are skipped.

    The exit code is the number of jobs that failed or were stopped (0: all finished).
    """
    from mmbench.processes import terminate_as_interrupt
    from mmbench.runner.prepare import RunOptions

    if scheduler and backend != "dask":
        raise click.UsageError("--scheduler needs --backend dask")
    spec, budget_spec = suite_and_budget(suite, budget)
    if inception_weights is not None:  # the environment reaches loky and LocalCluster workers too
        os.environ[INCEPTION_ENV] = str(inception_weights.resolve())
    options = RunOptions(budget_spec, models, seeds, device, n_jobs, backend, scheduler, tracking_uri, quiet, threads)
    if dry_run:
        _call(lambda: _dry_run(spec, options))
        return
    try:
        with terminate_as_interrupt():
            summary = _call(lambda: _run(spec, options))
    except KeyboardInterrupt:
        click.echo("interrupted: the running jobs are marked KILLED; run the same command again to resume them",
                   err=True)
        sys.exit(130)
    sys.exit(min(len(summary.failed), 255))


def _dry_run(suite: Suite, options: RunOptions) -> list[JobCost]:
    from mmbench.runner.dryrun import dry_run

    return dry_run(suite, options, click.echo)


def _run(suite: Suite, options: RunOptions) -> RunSummary:
    import logging

    from mmbench.runner.run import run_suite

    if options.quiet:
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    return run_suite(suite, options, click.echo)


def _call(fn):  # type: ignore[no-untyped-def]
    """Run a harness function, turning its expected errors into one clear message (exit code 1)."""
    try:
        return fn()
    except KeyError as exc:
        raise click.UsageError(str(exc.args[0]) if exc.args else str(exc)) from None
    except Exception as exc:
        if isinstance(exc, _expected_errors()):
            raise click.ClickException(str(exc)) from None
        raise


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message says what to do: shown as one line, without a traceback."""
    from mmbench.config import ConfigError
    from mmbench.data.store import DatasetError
    from mmbench.paths import HomeError
    from mmbench.report.collect import NoRuns
    from mmbench.runner.parallel import BackendError
    from mmbench.runner.validate import SuiteInvalid
    from mmbench.tracking import TrackingError

    expected: tuple[type[BaseException], ...] = (
        TrackingError, SuiteInvalid, ConfigError, DatasetError, NoRuns, HomeError, BackendError, OutputError,
    )
    if "torch" in sys.modules:  # only a run imports torch: missing devices, FID weights, classifiers
        from classifiers.store import ClassifierHashError, ClassifierNotFoundError
        from mmbench.metrics.extractors import InceptionWeightsError
        from mmbench.training.device import DeviceError

        expected += (DeviceError, InceptionWeightsError, ClassifierNotFoundError, ClassifierHashError)
    return expected


@click.command()
@click.option("--suite", required=True, help="Suite name.")
@click.option("--budget", default=None, help="Budget to report [the suite's default].")
@click.option("--tracking-uri", default=None, help="MLflow store [$MLFLOW_TRACKING_URI or ~/.mmbench/mlflow.db].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder [results/<suite>/<budget>].")
@click.option("--format", "formats", default="md,csv,tex,html", show_default=True,
              help="Table files (md, csv, tex) and html (index.html: the browsable report); report.md always.")
def report(suite: str, budget: str | None, tracking_uri: str | None, out: Path | None, formats: str) -> None:
    """Tables (mean ± std over seeds, best per column) and figures from the store's finished runs."""
    from mmbench.report import build_report

    chosen = _csv_list(formats) or ()
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown:
        raise click.BadParameter(f"unknown format(s) {unknown}; use any of {', '.join(FORMATS)}", param_hint="--format")
    spec, budget_spec = suite_and_budget(suite, budget)
    written = _call(lambda: build_report(spec, budget_spec, tracking_uri, _writable(out, suite, budget_spec.name),
                                         chosen, click.echo))
    click.echo(f"wrote {len(written.files)} files to {written.folder}")


class OutputError(RuntimeError):
    """The output folder cannot be written; the message names it and what to pass instead."""


def _writable(out: Path | None, suite: str, budget: str) -> Path:
    """The report's folder, checked before the store is read: it, or its nearest existing parent, must be a
    writable folder (nothing is created here, so a report that fails later leaves nothing behind)."""
    from mmbench.report import default_folder

    folder = (out if out is not None else default_folder(suite, budget)).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise OutputError(f"cannot write the report to {folder}: {existing} is a file; pass another --out")
    if not os.access(existing, os.W_OK):
        raise OutputError(f"cannot write the report to {folder}: {existing} is not writable; pass another --out "
                          "or make it writable")
    return folder


@click.command()
@click.option("--tracking-uri", default=None, help="MLflow store [$MLFLOW_TRACKING_URI or ~/.mmbench/mlflow.db].")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (loopback by default).")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
def ui(tracking_uri: str | None, host: str, port: int) -> None:
    """Serve the MLflow UI on the same store as `mmbench run` (Ctrl-C stops it)."""
    from mmbench.tracking import TrackingError, serve_ui

    try:
        serve_ui(tracking_uri, host, port, click.echo)
    except TrackingError as exc:
        raise click.ClickException(str(exc)) from None
