"""PNG grids of cached samples (a look at what the numbers describe)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmbench import atomic


def tile(rows: Sequence[np.ndarray], pad: int = 2) -> np.ndarray:
    """uint8 ``(H', W', 3)`` image with one row per ``(n, C, H, W)`` uint8 array (C = 1 or 3), white padding."""
    if not rows:
        raise ValueError("a grid needs at least one row")
    n = max(len(r) for r in rows)
    _, _, h, w = rows[0].shape
    canvas = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, row in enumerate(rows):
        if row.shape[2:] != (h, w) or row.shape[1] not in (1, 3):
            raise ValueError(f"grid row {i} has shape {row.shape}; rows need (n, 1|3, {h}, {w})")
        for j, image in enumerate(row):
            hwc = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            canvas[top : top + h, left : left + w] = hwc.transpose(1, 2, 0)
    return canvas


def write_grid(path: Path, rows: Sequence[np.ndarray]) -> Path:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(tile(rows)).save(buffer, format="PNG")
    atomic.write_bytes(path, buffer.getvalue())
    return path
