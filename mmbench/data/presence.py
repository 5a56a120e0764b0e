"""Which modalities of each training tuple are observed: the incomplete-data axis of a suite.

Wesego & Rooshenas 2024 (TMLR), A.10.1 and Table 11 train with missing modalities. Here a suite row's
``observed_share`` η fixes, per training tuple, ``max(1, round(η·M))`` observed modalities out of M,
chosen by an RNG seeded from (seed, tuple index) alone: the mask of a tuple does not depend on batch
order, on the split's size or on the other tuples. η = 1 observes everything.

A batch carries the mask under :data:`PRESENCE_KEY` as a ``(B, M)`` bool tensor whose columns follow the
batch's modalities in order; a batch without it is complete. Every model that declares
``Capability.INCOMPLETE`` computes its objective over the observed subset of each tuple (docs/models.md,
"Incomplete data").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch-free at import: suites and plans read the masks' arithmetic without torch
    from torch import Tensor

PRESENCE_KEY = "presence"  # optional batch entry: (B, M) bool, True = modality m observed for tuple i


def check_share(share: float) -> float:
    """η as a float in (0, 1]; anything else raises a one-line error naming the fix."""
    value = float(share)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"observed_share must lie in (0, 1] (the share of observed modalities per tuple), got {share}")
    return value


def observed_count(share: float, num_modalities: int) -> int:
    """``max(1, round(η·M))``: how many modalities each tuple observes (Python's round: half to even)."""
    if num_modalities < 1:
        raise ValueError(f"num_modalities must be positive, got {num_modalities}")
    return max(1, min(num_modalities, round(check_share(share) * num_modalities)))


def tuple_presence(index: int, share: float, num_modalities: int, seed: int) -> np.ndarray:
    """The ``(M,)`` bool mask of training tuple ``index``: a seeded choice of ``observed_count`` modalities."""
    k = observed_count(share, num_modalities)
    row = np.zeros(num_modalities, dtype=bool)
    if k == num_modalities:
        row[:] = True
        return row
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index), 0x1A10]))
    row[rng.choice(num_modalities, size=k, replace=False)] = True
    return row


def presence_mask(n: int, share: float, num_modalities: int, seed: int) -> np.ndarray:
    """The ``(n, M)`` bool masks of tuples ``0..n-1`` (row i is :func:`tuple_presence` of tuple i)."""
    if n < 0:
        raise ValueError(f"n must not be negative, got {n}")
    if observed_count(share, num_modalities) == num_modalities:
        return np.ones((n, num_modalities), dtype=bool)
    return np.stack([tuple_presence(i, share, num_modalities, seed) for i in range(n)]) if n else np.zeros((0, num_modalities), bool)


def batch_presence(batch: Mapping[str, Tensor]) -> Tensor | None:
    """The batch's ``(B, M)`` bool mask, or None for a complete batch."""
    present = batch.get(PRESENCE_KEY)
    return None if present is None else present.bool()


def observed_rows(present: Tensor | None, column: int) -> Tensor | None:
    """Indices of the tuples observing modality ``column``; None when every tuple does (use the whole batch)."""
    if present is None or bool(present[:, column].all()):
        return None
    return present[:, column].nonzero().squeeze(1)
