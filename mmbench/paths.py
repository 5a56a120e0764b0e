"""Where mmbench keeps data, caches, checkpoints and the default MLflow store."""

from __future__ import annotations

import os
from pathlib import Path


class HomeError(RuntimeError):
    """``MMBENCH_HOME`` cannot be used as a folder; the message says what to set instead."""


def home() -> Path:
    """``$MMBENCH_HOME`` or ``~/.mmbench``; created on first use."""
    root = Path(os.environ.get("MMBENCH_HOME", "~/.mmbench")).expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise HomeError(f"MMBENCH_HOME={root} is a file, not a folder; point MMBENCH_HOME at a folder "
                        "(it is created if missing)") from None
    except OSError as exc:
        raise HomeError(f"cannot create MMBENCH_HOME={root} ({exc.strerror}); point MMBENCH_HOME at a folder "
                        "you can write") from None
    return root


def data_dir() -> Path:
    return home() / "data"


def dataset_dir(name: str) -> Path:
    """The folder of a prepared dataset, e.g. ``dataset_dir("polymnist10")``."""
    return data_dir() / name


def classifiers_dir() -> Path:
    return home() / "classifiers"


def cache_dir() -> Path:
    return home() / "cache"


def artifacts_dir() -> Path:
    """Content-addressed trained stages, shared between jobs (see mmbench.training.artifacts)."""
    return home() / "artifacts"


def runs_dir() -> Path:
    return home() / "runs"


def default_tracking_uri() -> str:
    return f"sqlite:///{home() / 'mlflow.db'}"
