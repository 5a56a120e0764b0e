"""Easy synthetic multimodal data for tests: class-coded patterns learnt in a few hundred steps.

Each tuple has a class c in 0..9. Modality m draws c as a bright square at grid cell (c % 5, c // 5)
of a 28×28 image, with a modality-specific colour and background tint, a jitter of ±``jitter`` pixels
and pixel noise. Instances differ across modalities; the label ties them, as in PolyMNIST.
"""

from __future__ import annotations

import numpy as np

from mmbench.data.dataset import MultimodalDataset
from mmbench.hashing import sha256_array

NUM_CLASSES = 10


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
    return MultimodalDataset(images, labels.astype(np.int64), name=f"patterns{num_modalities}", data_hash=digest)
