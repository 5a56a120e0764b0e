"""Write files and folders so that nothing is ever left half-written on disk.

A write goes to a hidden temporary folder beside its target, ``.<name>.<machine>-<pid>.<random>.tmp``, and
replaces the target in one rename. A process killed outright (SIGKILL, out of memory) cannot remove that
folder; :func:`sweep_stale` removes those of a folder whose writer, a process of this machine, has ended.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmbench.processes import machine_id, process_alive

_TMP = re.compile(r"^\..+\.(?P<machine>[0-9a-f]{8})-(?P<pid>\d+)\.[^.]+\.tmp$")


def _machine_token() -> str:
    return hashlib.sha256(machine_id().encode()).hexdigest()[:8]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` (file or folder)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    owner = f"{_machine_token()}-{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{owner}.", suffix=".tmp", dir=target.parent))
    inner = tmp / target.name
    try:
        yield inner
        if not inner.exists():
            raise FileNotFoundError(f"nothing was written to {inner}")
        if target.is_dir() and not target.is_symlink():
            old = tmp / (target.name + ".old")
            os.replace(target, old)
        os.replace(inner, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def sweep_stale(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary folders that :func:`atomic_path` left in ``folder`` when its writer, a process
    of this machine, was killed; those of live processes and of other machines stay. Returns what it removed."""
    root, mine, removed = Path(folder), _machine_token(), []
    if not root.is_dir():
        return removed
    for entry in root.iterdir():
        found = _TMP.match(entry.name)
        if found and entry.is_dir() and found["machine"] == mine and not process_alive(int(found["pid"])):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed
