"""Train and evaluate the digit classifiers: cross-entropy over every (tuple, modality) image, Adam.

Every image of every modality of the train split is one training example (one net for all
modalities, as sbmae's ``PMCLF``). Examples are shuffled with a seeded ``torch.Generator`` and drawn
with :meth:`MultimodalDataset.batch`, so a seed fixes the whole run (on one machine and device).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from classifiers.nets import build_classifier
from mmbench.data.dataset import MultimodalDataset
from mmbench.seeding import seeded

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    """The default training recipe of a classifier role."""

    arch: str
    seed: int
    epochs: float = 6.0
    batch_size: int = 256
    lr: float = 1e-3
    schedule: str = "cosine"  # "cosine" (to 0 over the run) | "constant"


# The evaluation classifier and the FGSM substitute: different architectures and seeds, same data.
RECIPES: dict[str, Recipe] = {
    "eval": Recipe(arch="pmclf", seed=0),
    "substitute": Recipe(arch="substitute-cnn", seed=1, epochs=2.0),
}


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else as torch reads it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def total_steps(
    train: MultimodalDataset, batch_size: int, epochs: float | None = None, steps: int | None = None
) -> int:
    """Optimiser steps of a run: ``steps`` if given, else ``epochs`` passes over all (tuple, modality) images."""
    if steps is not None:
        if steps < 1:
            raise ValueError(f"steps must be positive, got {steps}")
        return steps
    if epochs is None or epochs <= 0:
        raise ValueError(f"give a positive number of epochs or steps, got epochs={epochs}")
    per_epoch = math.ceil(len(train) * len(train.modalities) / batch_size)
    return max(1, math.ceil(epochs * per_epoch))


def _example_batches(num_examples: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Endless batches of example indices: a fresh permutation per epoch, the last batch possibly smaller."""
    while True:
        order = torch.randperm(num_examples, generator=generator)
        yield from order.split(batch_size)


def _gather(train: MultimodalDataset, examples: Tensor) -> tuple[Tensor, Tensor]:
    """Images and labels of examples ``e = tuple * M + modality`` (grouped by modality; order is irrelevant)."""
    modalities = train.modalities
    idx = examples.numpy()
    tuples, which = np.divmod(idx, len(modalities))
    images, labels = [], []
    for k, m in enumerate(modalities):
        chosen = tuples[which == k]
        if len(chosen):
            x, y = train.batch(chosen, [m])
            images.append(x[m])
            labels.append(y)
    return torch.cat(images), torch.cat(labels)


def _lr_at(step: int, total: int, lr: float, schedule: str) -> float:
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return 0.5 * lr * (1.0 + math.cos(math.pi * step / total))
    raise ValueError(f"unknown lr schedule {schedule!r}; use 'cosine' or 'constant'")


def _init_model(arch: str, seed: int) -> nn.Module:
    """The initial weights depend on ``seed`` only; the caller's global RNG state is left untouched."""
    with seeded(seed, torch.device("cpu")):
        return build_classifier(arch)


def train_classifier(
    arch: str,
    train: MultimodalDataset,
    val: MultimodalDataset | None = None,
    *,
    epochs: float | None = 6.0,
    steps: int | None = None,
    batch_size: int = 256,
    lr: float = 1e-3,
    schedule: str = "cosine",
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    log_every: int = 200,
) -> nn.Module:
    """Train a classifier of ``arch`` on every image of ``train`` (``steps`` overrides ``epochs``).

    Adam with ``lr`` decayed by ``schedule``; cross-entropy on the raw [0, 1] images. ``progress``
    receives a line every ``log_every`` steps and, when ``val`` is given, its accuracies after every
    epoch and at the end (``val`` is only scored when ``progress`` is given).
    Returns the model in eval mode on ``device``.
    """
    dev = resolve_device(device)
    total = total_steps(train, batch_size, epochs, steps)
    model = _init_model(arch, seed).to(dev)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    num_examples = len(train) * len(train.modalities)
    per_epoch = math.ceil(num_examples / batch_size)
    batches = _example_batches(num_examples, batch_size, generator)
    model.train()
    start, running = time.perf_counter(), None
    for step in range(total):
        current_lr = _lr_at(step, total, lr, schedule)
        for group in optimiser.param_groups:
            group["lr"] = current_lr
        x, y = _gather(train, next(batches))
        loss = F.cross_entropy(model(x.to(dev)), y.to(dev))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if progress and ((step + 1) % log_every == 0 or step + 1 == total):
            elapsed = time.perf_counter() - start
            progress(f"step {step + 1}/{total}  loss {running:.4f}  lr {current_lr:.2e}  {elapsed:.0f}s")
        if progress and val is not None and ((step + 1) % per_epoch == 0 or step + 1 == total):
            progress(
                f"epoch {(step + 1) / per_epoch:.2f} val  {format_accuracies(evaluate_classifier(model, val))}"
            )
    model.eval()
    return model


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module, dataset: MultimodalDataset, batch_size: int = 1000
) -> dict[str, float]:
    """Accuracy per modality (batched, eval mode, no grad, on the model's device); the mode is restored."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        result = {}
        for m in dataset.modalities:
            correct = 0
            for x, y in dataset.iter_batches(batch_size, [m]):
                correct += int((model(x[m].to(device)).argmax(1).cpu() == y).sum())
            result[m] = correct / max(len(dataset), 1)
        return result
    finally:
        model.train(was_training)


def summarize(accuracies: Mapping[str, float]) -> dict[str, float | str]:
    """Mean, worst and worst modality of per-modality accuracies."""
    worst = min(accuracies, key=accuracies.__getitem__)
    return {
        "mean": float(np.mean(list(accuracies.values()))),
        "worst": accuracies[worst],
        "worst_modality": worst,
    }


def format_accuracies(accuracies: Mapping[str, float]) -> str:
    """One line: every modality's accuracy in %, then mean and worst."""
    s = summarize(accuracies)
    parts = "  ".join(f"{m} {100 * a:.2f}" for m, a in accuracies.items())
    return f"{parts}  | mean {100 * s['mean']:.2f}  worst {100 * s['worst']:.2f} ({s['worst_modality']})"
