"""A model that learns nothing (lm-evaluation-harness style dummy), for harness and metric tests.

It declares every capability: conditional and unconditional samples are uniform noise images, the
latent is a fixed random projection of the given images, and decoding returns grey images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmbench.config import src
from mmbench.contract import Batch, Capability, MultimodalModel, Stage, Subset
from mmbench.scaling import SCALE_FIELDS


@dataclass(frozen=True)
class DummyConfig:
    latent_dim: int = src(16, "harness test model, no paper")
    image_shape: tuple[int, ...] = src((3, 28, 28), "PolyMNIST tensors (PROTOCOL.md §1)")

    unscaled = SCALE_FIELDS  # nothing to shrink: no nets, no training


class DummyModel(MultimodalModel):
    """No learning; random outputs of the right shapes (harness tests only)."""

    Config = DummyConfig
    capabilities = frozenset(Capability)
    paper = "none: a test double in the style of lm-evaluation-harness's dummy model"

    def __init__(self, modalities, config: DummyConfig) -> None:
        super().__init__(modalities, config)
        pixels = 1
        for d in config.image_shape:
            pixels *= d
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("projection", torch.randn(pixels, config.latent_dim, generator=generator) / pixels**0.5)
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the model a device and a state_dict

    def stages(self) -> list[Stage]:
        return []

    def _noise(self, n: int) -> Tensor:
        return torch.rand(n, *self.config.image_shape, device=self.device)

    def _encode(self, batch: Batch, given: Subset) -> Tensor:
        flat = torch.stack([batch[m].flatten(1) for m in sorted(given)]).mean(0)
        return flat @ self.projection

    def _decode(self, latent: Tensor, targets: Subset) -> dict[str, Tensor]:
        grey = torch.full((latent.shape[0], *self.config.image_shape), 0.5, device=latent.device)
        return {m: grey.clone() for m in targets}

    def _sample_conditional(self, batch: Batch, given: Subset, targets: Subset) -> dict[str, Tensor]:
        n = self.batch_size_of(batch)
        return {m: self._noise(n) for m in sorted(targets)}

    def _sample_unconditional(self, n: int) -> dict[str, Tensor]:
        return {m: self._noise(n) for m in self.modalities}

    def _infer_latent(self, batch: Batch, given: Subset, target: str) -> Tensor:
        return torch.randn(self.batch_size_of(batch), self.config.latent_dim, device=self.device)
