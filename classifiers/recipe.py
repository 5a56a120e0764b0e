"""The classifier recipe, written once: train a role's net, score it on the test split, record how, save.

Both ``mmbench classifier train`` and the runner (a suite's missing classifiers) call
:func:`fit_classifier`, so a checkpoint's metadata has the same fields whoever trained it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from classifiers.store import ClassifierRecord, save_classifier
from classifiers.train import RECIPES, evaluate_classifier, summarize, total_steps, train_classifier
from mmbench.data.dataset import MultimodalDataset


@dataclass(frozen=True)
class Fitted:
    """A saved classifier, its test accuracies per modality and the metadata it was saved with."""

    record: ClassifierRecord
    test_accuracy: dict[str, float]
    meta: dict[str, Any]


def fit_classifier(
    role: str,
    name: str,
    train: MultimodalDataset,
    test: MultimodalDataset,
    *,
    val: MultimodalDataset | None = None,
    epochs: float | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
    directory: str | os.PathLike[str] | None = None,
    trained_by: str = "",
) -> Fitted:
    """Train ``role``'s recipe (each ``None`` keeps the recipe's value; ``steps`` overrides ``epochs``) on
    ``train``, score it on ``test`` and save it as ``name``. ``val`` is only scored for progress lines."""
    import torch

    recipe = RECIPES[role]
    hp: dict[str, Any] = {
        "epochs": recipe.epochs if epochs is None else epochs,
        "batch_size": recipe.batch_size if batch_size is None else batch_size,
        "lr": recipe.lr if lr is None else lr,
        "schedule": recipe.schedule,
        "seed": recipe.seed if seed is None else seed,
    }
    start, cpu_start = time.perf_counter(), time.process_time()
    model = train_classifier(recipe.arch, train, val, steps=steps, device=device, progress=progress, **hp)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    accuracy = evaluate_classifier(model, test)
    summary = summarize(accuracy)
    meta = {
        "role": role,
        "arch": recipe.arch,
        "dataset": train.name.removesuffix(".train"),
        "train_split": train.name,
        "test_split": test.name,
        "data_hash": train.data_hash,
        "test_accuracy": accuracy,
        "test_tuples": len(test),
        "mean_accuracy": summary["mean"],
        "worst_accuracy": summary["worst"],
        "worst_modality": summary["worst_modality"],
        **hp,
        "steps": total_steps(train, hp["batch_size"], hp["epochs"], steps),
        "steps_requested": steps,
        "device": str(next(model.parameters()).device),
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "torch_version": torch.__version__,
        "trained_by": trained_by,
    }
    return Fitted(save_classifier(model, name, meta, directory), accuracy, meta)
