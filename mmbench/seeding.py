"""One place that seeds every RNG mmbench uses."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

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


@contextlib.contextmanager
def forked_rng(device: torch.device) -> Iterator[None]:
    """Run a block on copies of torch's RNG streams (CPU, and the CUDA device the block runs on): the
    caller's streams are as they were afterwards."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block under a fixed seed without disturbing the caller's RNG streams (CPU, and the CUDA
    device the block runs on)."""
    with forked_rng(device):
        torch.manual_seed(seed)
        yield
