"""The PolyMNIST fingerprint of every registered model: what heterogeneous-modality support must not change.

``python tests/pin_nets.py`` rewrites ``tests/fixtures/polymnist10_nets.json`` (only when a change to the
networks is *meant* to change PolyMNIST models); ``tests/test_nets.py`` compares against it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).parent / "fixtures" / "polymnist10_nets.json"
MODALITIES = tuple(f"m{i}" for i in range(10))
HARNESS = {"data_id": "polymnist10-pin", "seed": 0}


def fingerprint(name: str) -> dict[str, Any]:
    """Config hash, stage reuse keys, parameter count and a hash of the state_dict's names and shapes."""
    from mmbench import registry
    from mmbench.config import to_dict
    from mmbench.hashing import config_hash

    fields = {f.name for f in dataclasses.fields(registry.resolve_class(name).Config)}
    model = registry.build(name, MODALITIES, {k: v for k, v in HARNESS.items() if k in fields})
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    return {
        "config_hash": config_hash(to_dict(model.config)),
        "stages": {s.name: s.reuse_key for s in model.stages()},
        "parameters": sum(p.numel() for p in model.parameters()),
        "state_shapes": config_hash(shapes),
    }


def models() -> list[str]:
    from mmbench import registry

    # the supervised row and the F1 floors take attribute and mask data only (no PolyMNIST nets to pin)
    return [n for n in registry.names() if n not in ("dummy", "supervised", "majority", "marginal")]


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    FIXTURE.write_text(json.dumps({n: fingerprint(n) for n in models()}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}")
