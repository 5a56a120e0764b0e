"""A tiny multimodal VAE with a mean-of-experts joint posterior, written against mmbench's model contract.

Each modality has an MLP encoder giving a Gaussian ``q(z | x_m)``; a subset's posterior averages the
experts' means and log-variances; MLP decoders give Bernoulli pixel means. The loss is the ELBO of the
joint posterior plus that of every unimodal posterior (each reconstructing every modality), so one
modality alone can generate the others. Kept small on purpose: it shows the contract, not a method.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mmbench.contract import Batch, Capability, MultimodalModel, Stage, StageHParams, Subset


@dataclass(frozen=True)
class TinyMVAEConfig:
    """Defaults are this example's own. mmbench's budgets shrink ``width``, ``steps``, ``batch_size`` and
    ``latent_per_modality`` by field name (mmbench.scaling); a sampler it does not have is ``unscaled``."""

    width: float = 1.0  # multiplier of the hidden width (256)
    latent_per_modality: int = 16  # the shared latent's size
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    beta: float = 1.0
    image_shape: tuple[int, ...] = (3, 28, 28)

    unscaled = ("sampler_steps", "score_width")  # no sampler, no score network

    @property
    def hidden(self) -> int:
        return max(8, int(256 * self.width))


class TinyMVAE(MultimodalModel):
    """Mean-of-experts multimodal VAE on flattened images (an example of a user's model)."""

    Config = TinyMVAEConfig
    capabilities = frozenset({Capability.CONDITIONAL, Capability.UNCONDITIONAL, Capability.ENCODE})
    paper = "none: the example model of docs/models.md, 'Scoring your own model'"

    def __init__(self, modalities, config: TinyMVAEConfig) -> None:
        super().__init__(modalities, config)
        pixels = int(torch.tensor(config.image_shape).prod())
        h, d = config.hidden, config.latent_per_modality
        self.encoders = nn.ModuleDict({m: nn.Sequential(nn.Flatten(), nn.Linear(pixels, h), nn.ReLU(),
                                                        nn.Linear(h, 2 * d)) for m in self.modalities})
        self.decoders = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, pixels))
                                       for m in self.modalities})

    # --- training ------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        c = self.config
        return [Stage("joint", self, self._loss, StageHParams(steps=c.steps, batch_size=c.batch_size, lr=c.lr))]

    def _loss(self, batch: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        subsets = [frozenset(self.modalities)] + [frozenset({m}) for m in self.modalities]
        terms = [self._elbo(batch, s) for s in subsets]
        loss = torch.stack(terms).mean()
        return {"loss": loss, "joint_elbo": -terms[0].detach()}

    def _elbo(self, batch: dict[str, Tensor], given: Subset) -> Tensor:
        mu, logvar = self._posterior(batch, given)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = sum(F.binary_cross_entropy_with_logits(self._logits(z, m), batch[m], reduction="none").flatten(1).sum(1)
                    for m in self.modalities)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
        return (recon + self.config.beta * kl).mean()

    # --- the contract ------------------------------------------------------------------------------
    def _posterior(self, batch: Batch, given: Subset) -> tuple[Tensor, Tensor]:
        stats = torch.stack([self.encoders[m](batch[m]) for m in sorted(given)]).mean(0)
        return stats.chunk(2, dim=1)

    def _logits(self, z: Tensor, modality: str) -> Tensor:
        return self.decoders[modality](z).view(z.shape[0], *self.config.image_shape)

    def _encode(self, batch: Batch, given: Subset) -> Tensor:
        return self._posterior(batch, given)[0]

    def _decode(self, latent: Tensor, targets: Subset) -> dict[str, Tensor]:
        return {m: torch.sigmoid(self._logits(latent, m)) for m in sorted(targets)}

    def _sample_conditional(self, batch: Batch, given: Subset, targets: Subset) -> dict[str, Tensor]:
        mu, logvar = self._posterior(batch, given)
        return self._decode(mu + torch.randn_like(mu) * (0.5 * logvar).exp(), targets)

    def _sample_unconditional(self, n: int) -> dict[str, Tensor]:
        z = torch.randn(n, self.config.latent_per_modality, device=self.device)
        return self._decode(z, frozenset(self.modalities))
