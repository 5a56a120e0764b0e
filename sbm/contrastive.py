"""Auxiliary encoders aligned across modalities CLIP-style, for contrastive guidance (-T).

Source: Wesego & Rooshenas 2024, §2.2.2 and A.9 (encoders "similar to the encoder of the VAEs plus a
linear projection head" to 512, aligned with a contrastive objective); the loss is CLIP's symmetric
InfoNCE with a learnt temperature (Radford et al. 2021), summed over every pair of modalities.

The embedding that conditions the score net is the mean of the unit-norm embeddings of the given
modalities; the *null condition* (nothing given, unconditional sampling) is the zero vector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmbench.data.source import ModalitySpec
from mmbench.nets.modality import build_encoder, default_specs

CLIP_INIT_TEMPERATURE = 0.07  # Radford et al. 2021
MAX_LOGIT_SCALE = 100.0  # CLIP clips exp(logit_scale) at 100


class AuxEncoders(nn.Module):
    """One residual trunk + linear projection head per modality; ``embed`` is unit-norm ``(B, proj_dim)``."""

    def __init__(self, num_modalities: int, width: float, feature_dim: int = 64, proj_dim: int = 512,
                 specs: Sequence[ModalitySpec] | None = None) -> None:
        """``specs``: each modality's kind and shape (default: RGB 28×28 images); a trunk is that kind's encoder."""
        super().__init__()
        specs = list(specs) if specs is not None else list(default_specs([f"m{i}" for i in range(num_modalities)]).values())
        if len(specs) != num_modalities:
            raise ValueError(f"{num_modalities} modalities but {len(specs)} modality specs")
        self.trunks = nn.ModuleList(build_encoder(s.kind, s.shape, feature_dim, width) for s in specs)
        self.heads = nn.ModuleList(nn.Linear(feature_dim, proj_dim) for _ in range(num_modalities))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / CLIP_INIT_TEMPERATURE)))
        self.proj_dim = proj_dim

    def features(self, index: int, x: Tensor) -> Tensor:
        """The trunk's output for modality ``index`` (what the score stage caches), ``(B, feature_dim)``."""
        return self.trunks[index](x)[0]

    def project(self, index: int, features: Tensor) -> Tensor:
        return F.normalize(self.heads[index](features), dim=-1)

    def project_all(self, features: Tensor) -> Tensor:
        """Unit-norm embeddings ``(B, M, proj_dim)`` of trunk features ``(B, M, feature_dim)``."""
        return torch.stack([self.project(i, features[:, i]) for i in range(features.shape[1])], 1)

    def embed(self, index: int, x: Tensor) -> Tensor:
        return self.project(index, self.features(index, x))

    def embed_all(self, images: list[Tensor | None]) -> Tensor:
        """Embeddings ``(B, M, proj_dim)`` of the given images in modality order (zeros where ``None``)."""
        reference = next(x for x in images if x is not None)
        out = reference.new_zeros(reference.shape[0], len(images), self.proj_dim)
        for i, x in enumerate(images):
            if x is not None:
                out[:, i] = self.embed(i, x)
        return out


def clip_loss(embeddings: Tensor, present: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE averaged over ordered modality pairs (a ≠ b) and over anchors present in both.

    ``embeddings``: ``(B, M, P)`` unit-norm; ``present``: ``(B, M)`` bool. For the pair (a, b), row i
    scores anchor i of a against every present item of b; the positive is item i.
    """
    scale = logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()
    logits = scale * torch.einsum("iap,jbp->abij", embeddings, embeddings)  # (M, M, B, B)
    logits = logits.masked_fill(~present.T[None, :, None, :], -1e9)  # column j must be present in b (finite: no NaN rows)
    log_probs = logits.log_softmax(dim=-1).diagonal(dim1=-2, dim2=-1)  # (M, M, B): log p(i | i)
    both = present.T[:, None, :] & present.T[None, :, :]  # (M, M, B): anchor present in a and b
    off_diagonal = ~torch.eye(present.shape[1], dtype=torch.bool, device=present.device)[:, :, None]
    counted = both & off_diagonal
    if not counted.any():
        raise ValueError("the contrastive loss needs at least one tuple with two present modalities")
    return -(log_probs.masked_fill(~counted, 0.0).sum() / counted.sum())


def condition_from(embeddings: Tensor, given: Tensor) -> Tensor:
    """Mean embedding of the given modalities per sample ``(B, P)``; zero (the null condition) if none."""
    weights = given.to(embeddings.dtype)
    total = (embeddings * weights[:, :, None]).sum(1)
    return total / weights.sum(1, keepdim=True).clamp_min(1.0)


def random_given(present: Tensor, null_prob: float) -> Tensor:
    """Random given subsets for training the conditioned score net, ``(B, M)`` bool.

    With probability ``null_prob`` nothing is given (the null condition); otherwise the subset size k
    is uniform on 1..(number present) and the subset uniform among present modalities of that size.
    """
    count = present.sum(1)
    k = (torch.rand(count.shape, device=present.device) * count).floor().long() + 1
    scores = torch.rand(present.shape, device=present.device).masked_fill(~present, 2.0)
    ranks = scores.argsort(1).argsort(1)
    given = (ranks < k[:, None]) & present
    null = torch.rand(count.shape, device=present.device) < null_prob
    return given & ~null[:, None]
