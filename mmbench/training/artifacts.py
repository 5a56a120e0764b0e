"""A content-addressed store of trained stages, shared between jobs.

A stage with a ``reuse_key`` (a hash of everything that determines its trained state) is stored once
under that key; any later job with the same key loads it instead of training. A file lock per key
makes concurrent jobs wait for the one that trains it instead of training it twice.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from mmbench import atomic
from mmbench.hashing import sha256_file


class ArtifactStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"invalid artifact key {key!r}")
        return self.root / f"{key}.pt"

    def has(self, key: str) -> bool:
        return self.path(key).exists()

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / f".{key}.lock")):
            yield

    def save(self, key: str, state_dict: dict[str, Any], meta: dict[str, Any]) -> Path:
        buffer = io.BytesIO()
        torch.save({"state_dict": state_dict, "meta": meta}, buffer)
        path = self.path(key)
        atomic.write_bytes(path, buffer.getvalue())
        return path

    def load(self, key: str, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
        payload = torch.load(self.path(key), map_location=map_location, weights_only=True)
        return payload["state_dict"], payload["meta"]

    def sha256(self, key: str) -> str:
        return sha256_file(self.path(key))
