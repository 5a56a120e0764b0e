"""Easy synthetic multimodal data for tests: class-coded patterns learnt in a few hundred steps.

Each tuple has a class c in 0..9. Modality m draws c as a bright square at grid cell (c % 5, c // 5)
of a 28×28 image, with a modality-specific colour and background tint, a jitter of ±``jitter`` pixels
and pixel noise. Instances differ across modalities; the label ties them, as in PolyMNIST.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from mmbench.data.source import SPLITS, DataSource, Identity, ModalitySpec, Say, data_id
from mmbench.hashing import config_hash, sha256_array

if TYPE_CHECKING:  # the dataset imports torch; a suite's modality names must not (`mmbench report` stays torch-free)
    from mmbench.data.dataset import MultimodalDataset

NUM_CLASSES = 10
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}
DEFAULT_SIZES = {"train": 2000, "val": 200, "test": 500}


def _palette(m: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1000 + m)
    background = rng.uniform(0.0, 0.35, size=3)
    foreground = np.clip(1.0 - background + rng.uniform(-0.1, 0.1, size=3), 0.6, 1.0)
    return background, foreground


def make_patterns(
    num_modalities: int = 3, n: int = 2000, seed: int = 0, jitter: int = 1, noise: float = 0.05, size: int = 28
) -> MultimodalDataset:
    """A balanced synthetic dataset with ``n`` tuples (labels 0..9) and modalities ``m0..m{M-1}``."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % NUM_CLASSES
    rng.shuffle(labels)
    cell = size // 5
    side = max(cell - 1, 3)
    images: dict[str, np.ndarray] = {}
    for m in range(num_modalities):
        background, foreground = _palette(m)
        x = np.broadcast_to(background[None, :, None, None], (n, 3, size, size)).copy()
        dx = rng.integers(-jitter, jitter + 1, size=n)
        dy = rng.integers(-jitter, jitter + 1, size=n)
        for i, c in enumerate(labels):
            top = int(np.clip((c // 5) * cell * 2 + 4 + dy[i], 0, size - side))
            left = int(np.clip((c % 5) * cell + 1 + dx[i], 0, size - side))
            x[i, :, top : top + side, left : left + side] = foreground[:, None, None]
        x += rng.normal(0.0, noise, size=x.shape)
        images[f"m{m}"] = (np.clip(x, 0.0, 1.0) * 255).round().astype(np.uint8)
    digest = sha256_array(np.stack([images[k] for k in sorted(images)]))[:16]
    from mmbench.data.dataset import MultimodalDataset

    return MultimodalDataset(images, labels.astype(np.int64), name=f"patterns{num_modalities}", data_hash=digest)


class PatternsSource(DataSource):
    """``make_patterns`` with the suite's number of modalities, each split generated in memory from
    its seed (train 0, val 1, test 2) at the budget's size (default 2000 / 200 / 500)."""

    family = "synthetic"
    summary = "class-coded square patterns generated in memory (tests, CI)"

    def modality_specs(self) -> tuple[ModalitySpec, ...]:
        return tuple(ModalitySpec(f"m{m}", "image", (3, 28, 28)) for m in range(self.num_modalities))

    def problems(self) -> list[str]:
        return [] if self.num_modalities >= 1 else [f"the synthetic patterns need a modality, got {self.num_modalities}"]

    def default_sizes(self) -> dict[str, int | None]:
        return dict(DEFAULT_SIZES)

    def classifier_sizes(self, sizes: Mapping[str, int | None]) -> dict[str, int | None]:
        return dict(sizes)  # the generated splits at the budget's sizes

    def split(self, split: str, n: int | None, num_modalities: int | None = None) -> MultimodalDataset:
        m = self.num_modalities if num_modalities is None else num_modalities
        return make_patterns(m, n=int(n or DEFAULT_SIZES[split]), seed=SPLIT_SEEDS[split])

    def identity(self, modalities: Sequence[str], sizes: Mapping[str, int | None]) -> Identity:
        hashes = {s: self.split(s, sizes[s]).data_hash for s in SPLITS}
        return Identity(config_hash(hashes), data_id({"train": hashes["train"], "modalities": list(modalities)}, sizes["train"]))

    def ensure(self, say: Say) -> None:
        """Nothing to build: the splits are generated when loaded."""

    def load(self, split: str, modalities: Sequence[str], n: int | None) -> MultimodalDataset:
        data = self.split(split, n, len(modalities))
        return data.select_modalities(modalities)
