"""Content hashes: files, arrays and configs (provenance and cache keys)."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_file_blocks(path: str | os.PathLike[str], block_bytes: int) -> tuple[str, list[str]]:
    """sha256 of the whole file and of each ``block_bytes`` block of it (the last may be shorter), in one read."""
    whole = hashlib.sha256()
    blocks = []
    with open(path, "rb") as fh:
        while block := fh.read(block_bytes):
            whole.update(block)
            blocks.append(hashlib.sha256(block).hexdigest())
    return whole.hexdigest(), blocks


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_array(array: np.ndarray) -> str:
    """Hash of an array's dtype, shape and C-ordered bytes."""
    digest = hashlib.sha256()
    digest.update(f"{array.dtype.str}{tuple(array.shape)}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(obj: Any, length: int = 16) -> str:
    """Stable short hash of a JSON-able config (key order does not matter)."""
    return sha256_bytes(canonical_json(obj).encode())[:length]
