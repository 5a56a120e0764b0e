"""Integrity of the files a later run reuses instead of recomputing (stages, checkpoints, caches).

Each such file is written together with a sidecar ``<file>.sha256`` in ``sha256sum`` format
(``<hex digest>  <file name>``; ``sha256sum -c`` checks it by hand), each written atomically, in an
order that never leaves a file that does not match its record (:func:`write_bytes`). Reading reads the bytes once, hashes them and compares with the sidecar before anything
parses them (``torch.load`` then unpickles the checked bytes, ``weights_only=True``). A file whose bytes do
not match, or that has no sidecar (written before hashes were recorded), is *unverified*: callers that
can recompute it move it aside (:func:`set_aside`, to ``<file>.corrupt-<UTC timestamp>``, never deleted),
say so in one line (:func:`notify`) and recompute; the others raise :class:`IntegrityError` naming the
file and the command that rebuilds it.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mmbench import atomic
from mmbench.hashing import sha256_bytes, sha256_file

SIDECAR_SUFFIX = ".sha256"
T = TypeVar("T")


class IntegrityError(RuntimeError):
    """A reusable file has no recorded sha256 or does not match it; the message names the file."""

    def __init__(self, path: str | os.PathLike[str], problem: str, fix: str = "") -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" + (f". {fix}" if fix else ""))


def sidecar(path: str | os.PathLike[str]) -> Path:
    """The file holding the recorded sha256 of ``path``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _record(path: Path, digests: list[str]) -> None:
    atomic.write_text(sidecar(path), "".join(f"{d}  {path.name}\n" for d in digests))


def write_bytes(path: str | os.PathLike[str], data: bytes) -> str:
    """Write ``data`` to ``path`` and its sha256 to the sidecar, each atomically; returns the digest.

    Replacing a file first records both digests, then writes the file, then records the new one alone:
    a process killed at any point leaves a file that matches its record (old or new), never a false alarm.
    """
    path = Path(path)
    digest = sha256_bytes(data)
    try:
        previous = recorded(path) if path.exists() else []
    except IntegrityError:
        previous = []
    if previous and digest not in previous:
        _record(path, [digest, *previous[:1]])
    atomic.write_bytes(path, data)
    _record(path, [digest])
    return digest


def recorded(path: str | os.PathLike[str]) -> list[str]:
    """The sha256 digests recorded for ``path`` (one; two while it is being replaced);
    :class:`IntegrityError` when there is none or the record is unreadable."""
    try:
        text = sidecar(path).read_text()
    except FileNotFoundError:
        raise IntegrityError(path, f"no recorded sha256 ({sidecar(path).name} is missing: written before "
                             "files were hashed, or the write was interrupted)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise IntegrityError(path, f"its sha256 record {sidecar(path).name} is unreadable ({exc})") from None
    digests = [line.split(" ", 1)[0].strip().lower() for line in text.splitlines() if line.strip()]
    if not digests or any(len(d) != 64 or any(c not in "0123456789abcdef" for c in d) for d in digests):
        raise IntegrityError(path, f"its sha256 record {sidecar(path).name} is malformed")
    return digests


def check_digest(path: str | os.PathLike[str], actual: str, size: int, expected: list[str]) -> None:
    """Raise :class:`IntegrityError` when ``actual`` (of a file of ``size`` bytes) is none of ``expected``."""
    if actual not in expected:
        raise IntegrityError(
            path, f"sha256 {actual[:16]}… of its {size} bytes does not match the recorded {expected[0][:16]}… "
            "(the file changed or was truncated after it was written)"
        )


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of ``path``, read once and checked against the recorded sha256."""
    expected = recorded(path)
    data = Path(path).read_bytes()
    check_digest(path, sha256_bytes(data), len(data), expected)
    return data


def verify_file(path: str | os.PathLike[str], expected: str | None = None) -> None:
    """Hash ``path`` (streamed) and compare with ``expected`` or, by default, the recorded sha256."""
    digests = recorded(path) if expected is None else [expected]
    check_digest(path, sha256_file(path), Path(path).stat().st_size, digests)


def load_torch(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """``torch.load`` of the verified bytes of ``path`` (tensors and plain types only)."""
    import torch

    return torch.load(io.BytesIO(read_bytes(path)), map_location=map_location, weights_only=True)


def utc_stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def set_aside(path: str | os.PathLike[str]) -> Path:
    """Move ``path`` (file or folder) and its sidecar to ``<name>.corrupt-<UTC timestamp>``; returns where."""
    path = Path(path)
    target = path.with_name(f"{path.name}.corrupt-{utc_stamp()}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{utc_stamp()}-{n}")
    os.replace(path, target)
    if sidecar(path).exists():
        os.replace(sidecar(path), sidecar(target))
    return target


def notify(message: str) -> None:
    """One line on stderr (also from worker processes, whose stderr is the invocation's)."""
    print(f"mmbench: {message}", file=sys.stderr, flush=True)


def recover(error: IntegrityError, what: str, action: str, aside: Path | None = None) -> Path:
    """Set aside the file ``error`` names (or ``aside``, e.g. the folder holding it) and say so in one
    line; returns where it went."""
    source = error.path if aside is None else aside
    try:
        moved = set_aside(source)
    except FileNotFoundError:  # another process set it aside first
        notify(f"{what} {error.path} failed verification ({error.problem}); already moved aside; {action}")
        return source
    notify(f"{what} {error.path} failed verification ({error.problem}); moved to {moved}; {action}")
    return moved


def load_or_recover(path: str | os.PathLike[str], load: Callable[[Path], T], what: str, action: str) -> T | None:
    """``load(path)`` when ``path`` exists and verifies; None when it is absent or was set aside as corrupt
    (then the caller recomputes it). ``load`` raises :class:`IntegrityError` for an unverified file."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return load(path)
    except FileNotFoundError:  # set aside by another process meanwhile
        return None
    except IntegrityError as exc:
        recover(exc, what, action)
        return None
