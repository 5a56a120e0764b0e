"""Helpers for tests and benchmarks: an easy dataset, a probe classifier for it, quick coherence."""

from __future__ import annotations

import torch

from mmbench.contract import MultimodalModel
from mmbench.data.dataset import MultimodalDataset


def leave_one_out_coherence(
    model: MultimodalModel, data: MultimodalDataset, classifier: torch.nn.Module, batch_size: int = 256
) -> dict[str, float]:
    """Share of tuples whose generated modality m (given all others) the classifier labels correctly."""
    correct = {m: 0 for m in model.modalities}
    classifier.eval()
    device = model.device
    for batch, labels in data.iter_batches(batch_size, model.modalities):
        batch = {m: x.to(device) for m, x in batch.items()}
        queries = [(frozenset(model.modalities) - {m}, frozenset({m})) for m in model.modalities]
        outputs = model.sample_conditional_many(batch, queries)
        with torch.no_grad():
            for (_, targets), out in zip(queries, outputs, strict=True):
                (m,) = targets
                pred = classifier(out[m].to(device)).argmax(1).cpu()
                correct[m] += int((pred == labels).sum())
    return {m: c / len(data) for m, c in correct.items()}
