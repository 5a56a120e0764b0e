"""``mmbench eval``: score an already trained model's weights as one run of a suite, without training."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mmbench.cli.harness import _call, suite_and_budget


@click.command(name="eval")
@click.option("--model", "model", required=True,
              help="A registered model (`mmbench ls models`, an mmbench.models entry point) or package.module:Class.")
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path),
              help="torch.save(model.state_dict(), PATH) of the model, or a job's model.pt.")
@click.option("--suite", required=True, help="Suite name (see `mmbench ls suites`).")
@click.option("--budget", default=None, help="The budget whose config and eval sizes apply [the suite's default].")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Evaluation seed.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--tracking-uri", default=None, help="MLflow store [$MLFLOW_TRACKING_URI or ~/.mmbench/mlflow.db].")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads [torch's default].")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def evaluate(model: str, checkpoint: Path, suite: str, budget: str | None, seed: int, device: str,
             tracking_uri: str | None, threads: int | None, quiet: bool) -> None:
    """Evaluate a checkpoint of MODEL on a suite's test data and log it as a run the report shows.

    The run is recorded as evaluated-only, with the checkpoint's sha256, in the row `<model>-checkpoint`. The exit code is 1 when the evaluation failed.
    """
    from mmbench.runner.evalonly import evaluate_checkpoint
    from mmbench.runner.prepare import RunOptions
    from mmbench.runner.weights import CheckpointError, checkpoint_file

    spec, budget_spec = suite_and_budget(suite, budget)
    try:
        checkpoint_file(checkpoint)
    except CheckpointError as exc:
        raise click.ClickException(str(exc)) from None
    options = RunOptions(budget_spec, device=device, tracking_uri=tracking_uri, quiet=quiet, threads=threads)

    def go():  # type: ignore[no-untyped-def]
        try:
            return evaluate_checkpoint(spec, budget_spec, model, checkpoint, seed, options, click.echo)
        except CheckpointError as exc:
            raise click.ClickException(str(exc)) from None

    summary = _call(go)
    if summary.skipped:
        click.echo(f"already evaluated: run {next(iter(summary.skipped.values()))} (same checkpoint, budget and seed)")
    sys.exit(1 if summary.failed else 0)
