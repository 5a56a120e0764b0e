"""Weights trained elsewhere, loaded strictly into a model: a ``state_dict`` file or a job's ``model.pt``.

Used by ``mmbench eval`` (:mod:`mmbench.runner.evalonly`) before it opens a run, and by the job that
evaluates the checkpoint (:mod:`mmbench.runner.job`); every failure is a :class:`CheckpointError` that names
the problem and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmbench.hashing import sha256_file

SHOWN_KEYS = 3  # keys named in a mismatch message


class CheckpointError(ValueError):
    """A checkpoint cannot be evaluated as given; the message names the problem and the fix."""


def checkpoint_file(path: Path) -> Path:
    """The checkpoint's absolute path; a one-line error when it is not a readable file."""
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        where = "is a folder" if path.is_dir() else "does not exist"
        raise CheckpointError(f"checkpoint {path} {where}; pass the file written by "
                              "torch.save(model.state_dict(), PATH) or a job's model.pt")
    return path


def load_weights(model: Any, path: Path, sha256: str = "", budget: str = "") -> None:
    """Load a checkpoint's ``state_dict`` into ``model`` (strict: same keys, same shapes); ``sha256``: the
    digest the file must still have."""
    if sha256 and sha256_file(path) != sha256:
        raise CheckpointError(f"checkpoint {path} changed since it was planned (sha256 differs); run the command again")
    state = state_dict_of(read_checkpoint(path), path)
    problems = mismatches(model.state_dict(), state)
    if problems:
        at = f" at budget {budget!r}" if budget else ""
        raise CheckpointError(
            f"checkpoint {path} does not fit {type(model).__name__} as this suite builds it{at}: "
            f"{'; '.join(problems)}. Save model.state_dict() of the model built with the same config (sizes "
            "follow the budget's scale: pass the --budget it was trained at)"
        )
    model.load_state_dict(state, strict=True)


def read_checkpoint(path: Path) -> Any:
    import torch

    from mmbench import integrity

    try:
        if integrity.sidecar(path).exists():
            return integrity.load_torch(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (any unreadable file gets the same advice)
        raise CheckpointError(f"checkpoint {path} cannot be read as a torch file ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); save it with "
                              "torch.save(model.state_dict(), PATH)") from None


def state_dict_of(payload: Any, path: Path) -> dict[str, Any]:
    """The state_dict inside a checkpoint: the file itself, or a job's ``model.pt`` payload's."""
    import torch

    if isinstance(payload, Mapping) and "state_dict" in payload and "config_hash" in payload:
        payload = payload["state_dict"]  # mmbench.persist.save_model
    elif isinstance(payload, Mapping) and "module" in payload and "step" in payload:
        raise CheckpointError(f"checkpoint {path} is one training stage's checkpoint; pass the job's model.pt "
                              "(beside its stage checkpoints) or a whole model's state_dict")
    if not isinstance(payload, Mapping) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"checkpoint {path} holds no state_dict (a mapping of names to tensors); save it "
                              "with torch.save(model.state_dict(), PATH)")
    return dict(payload)


def mismatches(expected: Mapping[str, Any], got: Mapping[str, Any]) -> list[str]:
    """Missing keys, unexpected keys and shape differences, each with at most SHOWN_KEYS names."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = [f"{k} {tuple(got[k].shape)} vs {tuple(expected[k].shape)}" for k in sorted(set(expected) & set(got))
              if tuple(got[k].shape) != tuple(expected[k].shape)]
    return [f"{len(keys)} {what} ({_few(keys)})" for what, keys in
            (("missing keys", missing), ("unexpected keys", unexpected), ("shapes differ", shapes)) if keys]


def _few(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN_KEYS])
    return shown + (f", … {len(items) - SHOWN_KEYS} more" if len(items) > SHOWN_KEYS else "")
