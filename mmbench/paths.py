"""Where mmbench keeps data, caches, checkpoints and the default MLflow store."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """``$MMBENCH_HOME`` or ``~/.mmbench``; created on first use."""
    root = Path(os.environ.get("MMBENCH_HOME", "~/.mmbench")).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
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
