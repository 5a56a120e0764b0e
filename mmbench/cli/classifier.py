"""``mmbench classifier``: train the evaluation / FGSM-substitute classifiers and inspect checkpoints."""

from __future__ import annotations

import time
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


def _meta(
    role: str, recipe: Any, train: Any, test: Any, test_acc: dict[str, float], seconds: float, **hp: Any
) -> dict:
    import torch

    from classifiers.train import summarize

    summary = summarize(test_acc)
    return {
        "role": role,
        "arch": recipe.arch,
        "dataset": train.name.removesuffix(".train"),
        "train_split": train.name,
        "test_split": test.name,
        "data_hash": train.data_hash,
        "test_accuracy": test_acc,
        "mean_accuracy": summary["mean"],
        "worst_accuracy": summary["worst"],
        "worst_modality": summary["worst_modality"],
        **hp,
        "train_seconds": round(seconds, 1),
        "torch_version": torch.__version__,
    }


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
    from classifiers.store import default_name, save_classifier
    from classifiers.train import (
        RECIPES,
        evaluate_classifier,
        format_accuracies,
        total_steps,
        train_classifier,
    )
    from mmbench import paths

    recipe = RECIPES[role]
    name = name or default_name(dataset, role)
    target = Path(out or paths.classifiers_dir()) / f"{name}.pt"
    if target.exists() and not force:
        raise click.ClickException(f"{target} exists; pass --force to replace it (its sha256 will change)")
    hp = {
        "epochs": recipe.epochs if epochs is None else epochs,
        "batch_size": recipe.batch_size if batch_size is None else batch_size,
        "lr": recipe.lr if lr is None else lr,
        "schedule": recipe.schedule,
        "seed": recipe.seed if seed is None else seed,
    }
    train_set, val_set, test_set = (_load_split(dataset, s) for s in ("train", "val", "test"))
    progress = _echo_progress(quiet)
    start, cpu_start = time.perf_counter(), time.process_time()
    model = train_classifier(
        recipe.arch, train_set, val_set, steps=steps, device=device, progress=progress, **hp
    )
    seconds = time.perf_counter() - start
    hp["train_cpu_seconds"] = round(time.process_time() - cpu_start, 1)
    hp["steps"] = total_steps(train_set, hp["batch_size"], hp["epochs"], steps)
    test_acc = evaluate_classifier(model, test_set)
    hp["device"] = str(next(model.parameters()).device)
    record = save_classifier(
        model, name, _meta(role, recipe, train_set, test_set, test_acc, seconds, **hp), out
    )
    click.echo(f"test  {format_accuracies(test_acc)}")
    cpu = hp["train_cpu_seconds"] / 60
    click.echo(
        f"time  {seconds / 60:.1f} min wall, {cpu:.1f} min CPU ({hp['steps']} steps on {hp['device']})"
    )
    click.echo(f"saved {record.path}  sha256 {record.sha256}")


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
