"""``mmbench classifier``: train the evaluation / FGSM-substitute classifiers and inspect checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

ROLES = ("eval", "substitute")  # mirrors classifiers.store.ROLES without importing torch at --help time


def _load_split(dataset: str, split: str) -> Any:
    """One split of a prepared dataset (by name or folder), through the data package's loader."""
    from mmbench.data.store import load_dataset

    return load_dataset(dataset, split, verify="fast")


def _echo_progress(quiet: bool):
    return None if quiet else (lambda line: click.echo(line, err=True))


@click.group()
def classifier() -> None:
    """Digit classifiers for the metrics: the evaluation classifier and the FGSM substitute."""


@classifier.command()
@click.option("--dataset", required=True, help="Prepared dataset name (e.g. polymnist10) or folder.")
@click.option(
    "--role",
    type=click.Choice(ROLES),
    default="eval",
    show_default=True,
    help="eval: the paper's PMCLF; substitute: a different net for black-box FGSM.",
)
@click.option("--epochs", type=float, default=None, help="Passes over all (tuple, modality) images [recipe].")
@click.option("--steps", type=int, default=None, help="Optimiser steps; overrides --epochs.")
@click.option("--batch-size", type=int, default=None, help="[recipe]")
@click.option("--lr", type=float, default=None, help="Adam learning rate, cosine-decayed [recipe].")
@click.option("--seed", type=int, default=None, help="[recipe: 0 for eval, 1 for substitute]")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, … or auto.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Checkpoint folder [~/.mmbench/classifiers].",
)
@click.option("--name", default=None, help="Checkpoint name [DATASET-ROLE].")
@click.option(
    "--force", is_flag=True, help="Replace an existing checkpoint of that name (its identity changes)."
)
@click.option("--quiet", is_flag=True, help="No progress lines.")
def train(
    dataset: str,
    role: str,
    epochs: float | None,
    steps: int | None,
    batch_size: int | None,
    lr: float | None,
    seed: int | None,
    device: str,
    out: Path | None,
    name: str | None,
    force: bool,
    quiet: bool,
) -> None:
    """Train a classifier on the train split, score it on the test split and save it."""
    from classifiers.recipe import fit_classifier
    from classifiers.store import default_name
    from classifiers.train import format_accuracies
    from mmbench import paths

    name = name or default_name(dataset, role)
    target = Path(out or paths.classifiers_dir()) / f"{name}.pt"
    if target.exists() and not force:
        raise click.ClickException(f"{target} exists; pass --force to replace it (its sha256 will change)")
    train_set, val_set, test_set = (_load_split(dataset, s) for s in ("train", "val", "test"))
    fitted = fit_classifier(
        role, name, train_set, test_set, val=val_set, epochs=epochs, steps=steps, batch_size=batch_size, lr=lr,
        seed=seed, device=device, progress=_echo_progress(quiet), directory=out,
        trained_by=f"mmbench classifier train --dataset {dataset} --role {role}",
    )
    meta = fitted.meta
    click.echo(f"test  {format_accuracies(fitted.test_accuracy)}")
    click.echo(
        f"time  {meta['train_seconds'] / 60:.1f} min wall, {meta['train_cpu_seconds'] / 60:.1f} min CPU "
        f"({meta['steps']} steps on {meta['device']})"
    )
    click.echo(f"saved {fitted.record.path}  sha256 {fitted.record.sha256}")


@classifier.command()
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Checkpoint folder [~/.mmbench/classifiers].",
)
@click.option("--expected-sha256", default=None, help="Fail unless the file has this sha256.")
def info(name: str, directory: Path | None, expected_sha256: str | None) -> None:
    """Print a checkpoint's identity (name, sha256), architecture and training record."""
    from classifiers.store import ClassifierHashError, ClassifierNotFoundError, load_classifier
    from classifiers.train import format_accuracies

    try:
        _, record = load_classifier(name, directory, expected_sha256)
    except (ClassifierNotFoundError, ClassifierHashError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"name     {record.name}\nsha256   {record.sha256}\narch     {record.arch}\npath     {record.path}"
    )
    meta = dict(record.meta)
    accuracies = meta.pop("test_accuracy", None)
    if accuracies:
        click.echo(f"test     {format_accuracies(accuracies)}")
    for key in sorted(meta):
        click.echo(f"{key:<8} {meta[key]}")
