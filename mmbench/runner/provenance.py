"""Provenance of an invocation: the mmbench checkout's git commit and the versions of the packages used."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("mmbench", "torch", "torchvision", "torch-fidelity", "numpy", "mlflow", "joblib", "dask", "distributed")


def checkout_root() -> Path:
    """The folder holding the ``mmbench`` package (the repository root for an editable install)."""
    return Path(__file__).resolve().parents[2]


def git_commit(root: Path | None = None) -> str:
    """``<sha>`` (with ``-dirty`` when tracked files changed) of the mmbench checkout, or ``unknown``."""
    where = str(root or checkout_root())
    try:
        sha = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        status = subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    dirty = "-dirty" if status.returncode == 0 and status.stdout.strip() else ""
    return sha.stdout.strip() + dirty


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    if out["mmbench"] == "not installed":
        import mmbench

        out["mmbench"] = f"{mmbench.__version__} (source tree)"
    return out
