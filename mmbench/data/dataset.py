"""An in-memory multimodal dataset serving dict-of-modalities batches straight from uint8 arrays."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mmbench.data.presence import PRESENCE_KEY


class MultimodalDataset(Dataset):
    """Tuples of images (one per modality) sharing a label.

    ``images[m]`` is a uint8 array ``(N, C, H, W)`` (may be a read-only memmap); ``labels`` is ``(N,)``.
    Items are ``(dict[m -> float tensor (C, H, W) in [0, 1]], label)``; :meth:`batch` is the fast path
    used by the trainer and the metrics (no per-item work, no PIL).
    """

    def __init__(
        self,
        images: Mapping[str, np.ndarray],
        labels: np.ndarray,
        name: str = "dataset",
        data_hash: str = "",
        modality_kinds: Mapping[str, str] | None = None,
        presence: np.ndarray | None = None,
    ) -> None:
        if not images:
            raise ValueError("a multimodal dataset needs at least one modality")
        n = len(labels)
        for m, arr in images.items():
            if arr.dtype != np.uint8 or arr.ndim != 4:
                raise ValueError(f"modality {m!r}: expected uint8 (N, C, H, W), got {arr.dtype} {arr.shape}")
            if len(arr) != n:
                raise ValueError(f"modality {m!r} has {len(arr)} items but there are {n} labels")
        self.images: dict[str, np.ndarray] = dict(images)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.name = name
        self.data_hash = data_hash
        # {modality: kind} for non-image modalities (mask, attributes); read by the metrics
        self.modality_kinds: dict[str, str] = dict(modality_kinds or {})
        # (N, M) bool over ``modalities`` (mmbench.data.presence): which modalities each tuple observes;
        # None = complete. Batches then carry it under PRESENCE_KEY, columns in the batch's modality order.
        self.presence: np.ndarray | None = None
        if presence is not None:
            self.set_presence(presence)

    def set_presence(self, presence: np.ndarray | None) -> None:
        """Mark which modalities each tuple observes (``(N, M)`` bool over ``modalities``; None = complete)."""
        if presence is None:
            self.presence = None
            return
        mask = np.asarray(presence, dtype=bool)
        if mask.shape != (len(self.labels), len(self.images)):
            raise ValueError(f"{self.name}: presence must be (N, M) = {(len(self.labels), len(self.images))}, got {mask.shape}")
        self.presence = mask

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(next(iter(self.images.values())).shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[dict[str, Tensor], int]:
        batch, labels = self.batch(np.array([index]))
        return {m: x[0] for m, x in batch.items()}, int(labels[0])

    def batch(
        self, indices: Sequence[int] | np.ndarray | Tensor, modalities: Sequence[str] | None = None
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Float batches in [0, 1] for ``indices`` (any order), and their labels."""
        idx = np.asarray(indices, dtype=np.int64)
        names = self.modalities if modalities is None else tuple(modalities)
        out = {m: torch.from_numpy(np.ascontiguousarray(self.images[m][idx])).float().div_(255.0) for m in names}
        if self.presence is not None:
            columns = [self.modalities.index(m) for m in names]
            out[PRESENCE_KEY] = torch.from_numpy(np.ascontiguousarray(self.presence[idx][:, columns]))
        return out, torch.from_numpy(self.labels[idx])

    def iter_batches(
        self, batch_size: int, modalities: Sequence[str] | None = None
    ) -> Iterator[tuple[dict[str, Tensor], Tensor]]:
        """Batches in order, the last one possibly smaller."""
        for start in range(0, len(self), batch_size):
            yield self.batch(np.arange(start, min(start + batch_size, len(self))), modalities)

    def select_modalities(self, modalities: Sequence[str]) -> MultimodalDataset:
        missing = [m for m in modalities if m not in self.images]
        if missing:
            raise KeyError(f"{self.name}: no modalities {missing}; it has {list(self.images)}")
        kinds = {m: k for m, k in self.modality_kinds.items() if m in modalities}
        presence = None if self.presence is None else self.presence[:, [self.modalities.index(m) for m in modalities]]
        return MultimodalDataset({m: self.images[m] for m in modalities}, self.labels, self.name, self.data_hash, kinds,
                                 presence)

    def subset(self, n: int, stratified: bool = True) -> MultimodalDataset:
        """The first ``n`` tuples; stratified = the first ``n // K`` (+ remainder) of each class, in order."""
        if n >= len(self):
            return self
        if n < 1:
            raise ValueError(f"subset size must be positive, got {n}")
        if stratified:
            idx = stratified_first(self.labels, n)
        else:
            idx = np.arange(n)
        images = {m: np.asarray(arr[idx]) for m, arr in self.images.items()}
        return MultimodalDataset(
            images, self.labels[idx], f"{self.name}[:{n}]", f"{self.data_hash}[:{n}]", self.modality_kinds,
            None if self.presence is None else self.presence[idx],
        )


def stratified_first(labels: np.ndarray, n: int) -> np.ndarray:
    """Indices of the first items of each class, as balanced as possible, returned in dataset order."""
    classes = np.unique(labels)
    per_class = {c: np.flatnonzero(labels == c) for c in classes}
    quota = {c: 0 for c in classes}
    remaining = n
    while remaining > 0:
        progressed = False
        for c in classes:
            if remaining and quota[c] < len(per_class[c]):
                quota[c] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            break
    chosen = np.concatenate([per_class[c][: quota[c]] for c in classes])
    return np.sort(chosen)
