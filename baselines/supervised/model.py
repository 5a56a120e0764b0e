"""A supervised attribute classifier and mask predictor: the reference row of Wesego & Rooshenas 2024
Table 1 (CelebAMask-HQ, "supervised" F1 of the attributes and the mask given the image).

Not a generative model: a conv encoder of the image (the residual encoder of the image kind,
:mod:`mmbench.nets.modality`; its mean as the feature vector) feeds one head per binary modality, an MLP
for the attributes and the mask kind's conv decoder for the mask, each trained with the Bernoulli
negative log-likelihood (binary cross-entropy on the logits) of the truth. It answers only image →
attributes and image → mask (:meth:`answers`), deterministically with the Bernoulli means; every
other query, and unconditional sampling, is declared unanswered, so metrics record why those keys
have no value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from mmbench.config import src
from mmbench.contract import Batch, Capability, MultimodalModel, Stage, StageHParams, Subset
from mmbench.data.source import ModalitySpec
from mmbench.nets import modality as kinds

PAPER_STEPS = 300 * (50_000 // 256)


@dataclass(frozen=True)
class SupervisedConfig:
    feature_dim: int = src(256, "Decision: the image features the heads read (the paper gives no classifier details)")
    width: float = src(1.0, "channel multiplier of the residual nets; 1.0 = the paper's 64/128/256")
    lr: float = src(1e-3, "Decision: Adam lr 1e-3, as the paper's VAEs [A.2]")
    batch_size: int = src(256, "Decision: 256, the batch of every other row")
    steps: int = src(PAPER_STEPS, "Decision: the optimiser steps of the VAE rows (300 epochs of 50k at 256)")

    unscaled = ("latent_per_modality", "sampler_steps", "score_width")  # no latent per modality, no sampler

    def check(self) -> None:
        if self.feature_dim < 1 or self.width <= 0 or self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"feature_dim, width, lr, steps and batch_size must be positive, got {self}")


class AttributeHead(nn.Module):
    """Image features ``(B, D)`` → logits ``(B, L, 1, 1)``: the attribute kind's two-hidden-layer MLP."""

    def __init__(self, feature_dim: int, num_attributes: int, width: float) -> None:
        super().__init__()
        self.net = kinds.AttributeDecoder(num_attributes, feature_dim, width)

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features)


class Supervised(MultimodalModel):
    """Direct supervised prediction of every attribute and mask modality from the image modality."""

    Config = SupervisedConfig
    capabilities = frozenset({Capability.CONDITIONAL})
    modality_kinds = frozenset({"image", "mask", "attributes"})
    paper = ("supervised reference row of Wesego & Rooshenas 2024 Table 1 (Score-Based Multimodal "
             "Autoencoder, TMLR): a conv encoder with BCE-trained attribute and mask heads")

    def __init__(self, modalities: Sequence[str], config: SupervisedConfig,
                 specs: Mapping[str, ModalitySpec] | None = None) -> None:
        super().__init__(modalities, config, specs)
        config.check()
        images = [m for m, s in self.specs.items() if s.kind == "image"]
        self.targets = tuple(m for m, s in self.specs.items() if kinds.is_binary(s.kind))
        if len(images) != 1 or not self.targets:
            found = {m: s.kind for m, s in self.specs.items()}
            raise ValueError(f"the supervised row maps one image to attribute and mask modalities, got {found}; "
                             "use it on CelebA-shaped data (celebamaskhq, celeba-twin)")
        self.source = images[0]
        spec = self.specs[self.source]
        self.encoder = kinds.build_encoder("image", spec.shape, config.feature_dim, config.width)
        self.heads = nn.ModuleDict({m: self._head(self.specs[m]) for m in self.targets})

    def _head(self, spec: ModalitySpec) -> nn.Module:
        if spec.kind == "attributes":
            return AttributeHead(self.config.feature_dim, spec.shape[0], self.config.width)
        return kinds.build_decoder(spec.kind, spec.shape, self.config.feature_dim, self.config.width)

    def answers(self, given: Subset, target: str) -> bool:
        """Only the image given alone, and only an attribute or mask target."""
        return frozenset(given) == {self.source} and target in self.targets

    def logits(self, image: Tensor) -> dict[str, Tensor]:
        features, _ = self.encoder(image)
        return {m: self.heads[m](features) for m in self.targets}

    def loss(self, batch: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        """Σ over targets of the Bernoulli NLL (binary cross-entropy on the logits), per sample, averaged."""
        logits = self.logits(batch[self.source])
        parts = {m: kinds.nll(self.specs[m].kind, batch[m], logits[m], 1.0).mean() for m in self.targets}
        return {"loss": sum(parts.values()), **{f"bce/{m}": v for m, v in parts.items()}}  # type: ignore[dict-item]

    def stages(self) -> list[Stage]:
        c = self.config
        hparams = StageHParams(steps=c.steps, batch_size=c.batch_size, lr=c.lr)
        return [Stage("supervised", self, self.loss, hparams, modalities=(self.source, *self.targets))]

    def _sample_conditional(self, batch: Batch, given: Subset, targets: Subset) -> dict[str, Tensor]:
        logits = self.logits(batch[self.source])
        return {m: kinds.output(self.specs[m].kind, logits[m]) for m in sorted(targets)}
