"""One place that seeds every RNG mmbench uses."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(seed: int, *keys: object) -> int:
    """A child seed for a named purpose (stable across runs and platforms)."""
    from mmbench.hashing import config_hash

    return int(config_hash([seed, *[str(k) for k in keys]], length=8), 16)
