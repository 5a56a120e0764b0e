"""Saving and loading a whole trained model (its state, name, config and config hash), with a sha256
sidecar: :func:`load_model` unpickles only verified bytes (``mmbench.integrity``)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from mmbench import integrity
from mmbench.config import to_dict
from mmbench.contract import MultimodalModel
from mmbench.hashing import config_hash


def save_model(model: MultimodalModel, path: str | Path, name: str, meta: dict[str, Any] | None = None) -> None:
    payload = {
        "name": name,
        "modalities": list(model.modalities),
        "config": to_dict(model.config),
        "config_hash": config_hash(to_dict(model.config)),
        "specs": [[s.name, s.kind, list(s.shape)] for s in getattr(model, "specs", {}).values()],
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta or {},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    integrity.write_bytes(path, buffer.getvalue())


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> MultimodalModel:
    """Rebuild a registered model from a file written by :func:`save_model`."""
    from mmbench import registry

    payload = integrity.load_torch(path, map_location)
    from mmbench.data.source import ModalitySpec

    specs = {n: ModalitySpec(n, k, tuple(shape)) for n, k, shape in payload.get("specs") or []} or None
    model = registry.build(payload["name"], payload["modalities"], payload["config"], specs)
    got = config_hash(to_dict(model.config))
    if got != payload["config_hash"]:
        raise ValueError(
            f"{path}: the saved config rebuilds to hash {got}, not {payload['config_hash']}; "
            "the model's config class changed since it was saved"
        )
    model.load_state_dict(payload["state_dict"])
    return model
