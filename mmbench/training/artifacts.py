"""A content-addressed store of trained stages, shared between jobs.

A stage with a ``reuse_key`` (a hash of everything that determines its trained state) is stored once
under that key; any later job with the same key loads it instead of training. A file lock per key
makes concurrent jobs wait for the one that trains it instead of training it twice. Each file has a
sha256 sidecar (``mmbench.integrity``); a stored stage that fails verification is moved aside and
:meth:`ArtifactStore.load` returns None, so the job trains the stage again.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from mmbench import atomic, integrity


class ArtifactStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        atomic.sweep_stale(self.root)  # stages a killed process left half-written

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
        integrity.write_bytes(path, buffer.getvalue())
        return path

    def load(
        self, key: str, map_location: str | torch.device = "cpu"
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(state_dict, meta) of a stored stage; None when none is stored or the file failed verification
        (it is then moved aside with one line saying so, and the caller trains the stage again)."""
        payload = integrity.load_or_recover(
            self.path(key), lambda p: integrity.load_torch(p, map_location), "stored stage", "training it again"
        )
        return None if payload is None else (payload["state_dict"], payload["meta"])
