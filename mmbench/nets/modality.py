"""Networks and likelihoods per modality kind: what every model asks instead of assuming images.

- ``image`` (C×S×S, S in 28/32/64/128): the paper's residual conv nets (:mod:`mmbench.nets.residual`),
  a Gaussian likelihood with fixed scale; outputs are the decoder's means clamped to [0, 1];
- ``mask`` (1×S×S, black and white): the same conv nets with one channel, a Bernoulli likelihood on the
  decoder's logits (Wesego & Rooshenas 2024 A.9: the CelebAMask-HQ mask is a binary image);
- ``attributes`` (L×1×1, L binary attributes): an MLP encoder and decoder, a Bernoulli likelihood over
  the attribute vector (A.9: the 18 binary attributes).

Mask and attribute outputs are the Bernoulli means (probabilities in [0, 1]); the F1 metric thresholds
them (mmbench.metrics.f1). A model built without modality specs gets PolyMNIST's: every modality an RGB
28×28 image (:func:`default_specs`), with exactly the nets it had before kinds existed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from mmbench.data.source import MODALITY_KINDS, ModalitySpec
from mmbench.distributions import gaussian_nll_sum
from mmbench.nets.residual import ResDecoder, ResEncoder

POLYMNIST_SHAPE = (3, 28, 28)
ATTRIBUTE_HIDDEN = 512  # the MLP's hidden width at width 1.0 (our decision: A.9 gives none)
Specs = Mapping[str, ModalitySpec]


def default_specs(modalities: Sequence[str]) -> dict[str, ModalitySpec]:
    """Every modality an RGB 28×28 image: PolyMNIST, and what a model assumes when told nothing."""
    return {m: ModalitySpec(m, "image", POLYMNIST_SHAPE) for m in modalities}


def resolve_specs(modalities: Sequence[str], specs: Specs | None) -> dict[str, ModalitySpec]:
    """``specs`` for exactly ``modalities`` (default :func:`default_specs`), checked for known kinds and shapes."""
    if specs is None:
        return default_specs(modalities)
    missing = [m for m in modalities if m not in specs]
    if missing:
        raise ValueError(f"no modality spec for {missing}; the specs name {sorted(specs)}")
    out = {m: specs[m] for m in modalities}
    for spec in out.values():
        check_spec(spec)
    return out


def specs_of(data: Any) -> dict[str, ModalitySpec]:
    """The specs of a :class:`~mmbench.data.dataset.MultimodalDataset`: its kinds (image unless declared)
    and each modality's item shape."""
    kinds = getattr(data, "modality_kinds", None) or {}
    return {m: ModalitySpec(m, kinds.get(m, "image"), tuple(arr.shape[1:])) for m, arr in data.images.items()}


def check_spec(spec: ModalitySpec) -> None:
    """A clear error for a kind or shape the nets cannot take."""
    if spec.kind not in MODALITY_KINDS:
        raise ValueError(f"modality {spec.name!r} has unknown kind {spec.kind!r}; use one of {MODALITY_KINDS}")
    c, h, w = spec.shape
    if spec.kind == "attributes":
        if (h, w) != (1, 1) or c < 1:
            raise ValueError(f"attribute modality {spec.name!r} must have shape (L, 1, 1), got {spec.shape}")
        return
    if h != w:
        raise ValueError(f"{spec.kind} modality {spec.name!r} must be square, got {spec.shape}")
    if spec.kind == "mask" and c != 1:
        raise ValueError(f"mask modality {spec.name!r} must have one channel, got {spec.shape}")


# --- networks ---------------------------------------------------------------------------------------


class AttributeEncoder(nn.Module):
    """L binary attributes ``(B, L, 1, 1)`` → (mu, logvar): a two-hidden-layer MLP."""

    def __init__(self, num_attributes: int, latent_dim: int, width: float = 1.0) -> None:
        super().__init__()
        hidden = max(16, int(round(ATTRIBUTE_HIDDEN * width)))
        self.net = nn.Sequential(
            nn.Linear(num_attributes, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, 2 * latent_dim),
        )
        self.latent_dim = latent_dim

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.net(x.flatten(1)).chunk(2, dim=1)
        return mu, logvar


class AttributeDecoder(nn.Module):
    """``latent_dim`` → logits ``(B, L, 1, 1)`` of L Bernoulli attributes."""

    def __init__(self, num_attributes: int, latent_dim: int, width: float = 1.0) -> None:
        super().__init__()
        hidden = max(16, int(round(ATTRIBUTE_HIDDEN * width)))
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, num_attributes),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)[:, :, None, None]


def build_encoder(kind: str, shape: tuple[int, int, int], latent_dim: int, width: float = 1.0) -> nn.Module:
    """The encoder of one modality: ``x`` ``(B, *shape)`` → (mu, logvar), each ``(B, latent_dim)``."""
    check_spec(ModalitySpec("?", kind, shape))
    if kind == "attributes":
        return AttributeEncoder(shape[0], latent_dim, width)
    if shape == POLYMNIST_SHAPE:  # the exact PolyMNIST module (its constructor's defaults)
        return ResEncoder(latent_dim, width)
    return ResEncoder(latent_dim, width, in_channels=shape[0], size=shape[1])


def build_decoder(kind: str, shape: tuple[int, int, int], latent_dim: int, width: float = 1.0) -> nn.Module:
    """The decoder of one modality: ``(B, latent_dim)`` → ``(B, *shape)`` likelihood parameters
    (image means; mask and attribute logits)."""
    check_spec(ModalitySpec("?", kind, shape))
    if kind == "attributes":
        return AttributeDecoder(shape[0], latent_dim, width)
    if shape == POLYMNIST_SHAPE:
        return ResDecoder(latent_dim, width)
    return ResDecoder(latent_dim, width, out_channels=shape[0], size=shape[1])


# --- likelihoods ------------------------------------------------------------------------------------


def is_binary(kind: str) -> bool:
    """Mask and attribute modalities are Bernoulli; images are Gaussian."""
    return kind in ("mask", "attributes")


def nll(kind: str, x: Tensor, out: Tensor, scale: float) -> Tensor:
    """−log p(x | decoder output) summed over the item, per sample ``(B,)``.

    Image: Gaussian with mean ``out`` and fixed ``scale``; mask, attributes: Bernoulli with logits ``out``
    (``scale`` unused)."""
    if is_binary(kind):
        return F.binary_cross_entropy_with_logits(out, x, reduction="none").flatten(1).sum(1)
    return gaussian_nll_sum(x, out, scale)


def reconstruction_error(kind: str, x: Tensor, out: Tensor) -> Tensor:
    """The autoencoders' per-sample reconstruction term ``(B,)``: the summed squared error for images
    (the Gaussian NLL at variance ½ without its constant, as sbmae), the Bernoulli NLL for binary kinds."""
    if is_binary(kind):
        return F.binary_cross_entropy_with_logits(out, x, reduction="none").flatten(1).sum(1)
    return (out - x).square().flatten(1).sum(1)


def output(kind: str, out: Tensor) -> Tensor:
    """The decoder output as data in [0, 1]: image means clamped, Bernoulli means (sigmoid of the logits)."""
    return out.sigmoid() if is_binary(kind) else out.clamp(0.0, 1.0)
