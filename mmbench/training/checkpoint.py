"""Atomic training checkpoints: module, optimiser, scheduler, step, RNG states and the config hash.

Each checkpoint has a sha256 sidecar (``mmbench.integrity``): :func:`load` unpickles only verified bytes;
:func:`load_or_recover` moves a checkpoint that fails verification aside (one line says so) and returns
None, so the trainer restarts that stage from step 0.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmbench import integrity

FORMAT = 1


class CheckpointMismatchError(RuntimeError):
    """A checkpoint was written by a different config than the one now running."""


@dataclass
class TrainState:
    step: int
    done: bool
    module: dict[str, Any]
    optimizer: dict[str, Any] | None
    scheduler: dict[str, Any] | None
    rng_cpu: torch.Tensor
    rng_cuda: list[torch.Tensor]
    history: dict[str, list[float]]
    ema: dict[str, Any] | None = None  # the stage's parameter average (StageHParams.ema_decay > 0)
    code_versions: list[str] = field(default_factory=list)  # the code (git commits) its steps were trained with, in order


def rng_state() -> tuple[torch.Tensor, list[torch.Tensor]]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return torch.get_rng_state(), list(cuda)


def restore_rng(cpu: torch.Tensor, cuda: list[torch.Tensor]) -> None:
    torch.set_rng_state(cpu)
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save(path: Path, state: TrainState, config_hash: str, meta: dict[str, Any]) -> None:
    payload = {
        "format": FORMAT,
        "config_hash": config_hash,
        "meta": meta,
        "step": state.step,
        "done": state.done,
        "module": state.module,
        "optimizer": state.optimizer,
        "scheduler": state.scheduler,
        "rng_cpu": state.rng_cpu,
        "rng_cuda": state.rng_cuda,
        "history": state.history,
        "ema": state.ema,
        "code_versions": state.code_versions,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    integrity.write_bytes(path, buffer.getvalue())


def load_or_recover(path: Path, config_hash: str, map_location: str | torch.device = "cpu") -> TrainState | None:
    """The checkpoint at ``path``; None when there is none or it failed verification (then moved aside)."""
    return integrity.load_or_recover(
        path, lambda p: load(p, config_hash, map_location), "checkpoint", "the stage restarts from step 0"
    )


def load_if_verified(path: Path, config_hash: str) -> TrainState | None:
    """The checkpoint at ``path`` if there is one that verifies; None otherwise (nothing is moved)."""
    try:
        return load(path, config_hash) if path.exists() else None
    except integrity.IntegrityError:
        return None


def load(path: Path, config_hash: str, map_location: str | torch.device = "cpu") -> TrainState:
    """A verified checkpoint (:class:`mmbench.integrity.IntegrityError` if it is not)."""
    payload = integrity.load_torch(path, map_location)
    if payload.get("format") != FORMAT:
        raise CheckpointMismatchError(f"{path}: checkpoint format {payload.get('format')} is not {FORMAT}")
    if payload["config_hash"] != config_hash:
        raise CheckpointMismatchError(
            f"{path} was written by config {payload['config_hash']}, but this run's config is {config_hash}. "
            "Delete the job folder (or choose another --workdir) to train this config from scratch."
        )
    return TrainState(
        step=int(payload["step"]),
        done=bool(payload["done"]),
        module=payload["module"],
        optimizer=payload["optimizer"],
        scheduler=payload["scheduler"],
        rng_cpu=payload["rng_cpu"],
        rng_cuda=list(payload["rng_cuda"]),
        history={k: list(v) for k, v in payload["history"].items()},
        ema=payload.get("ema"),
        code_versions=list(payload.get("code_versions") or []),
    )
