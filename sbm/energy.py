"""The pairwise coherence energy E(z_a, z_b, t, a, b) and its noise-contrastive training loss.

Source: Wesego & Rooshenas 2024, §2.2.1, Eq. 7 (NCE, Gutmann & Hyvärinen 2010); architecture from
sbmae: one MLP with softplus activations shared by every modality pair, six 128-wide layers on
``[z_a, z_b, t-embedding, emb(a), emb(b)]`` with a skip from the input at layer 5.

Low energy = coherent pair. NCE maximises ``log σ(−E(pos)) + log σ(E(neg))``, i.e. minimises
``softplus(E(pos)) + softplus(−E(neg))``. Negatives (Eq. 7: an incoherent example of the *same*
modality pair): row i's pair (a_i, b_i) against modality b_i of another tuple of the batch (a random
permutation of the tuples), and against a pure Gaussian vector; positives and negatives are perturbed by
the score model's kernel at one random t per pair. The shuffled partner is always of modality b_i: were
it of another tuple's own b_j, the energy could lower its loss by telling the modalities apart instead of
judging coherence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latentdiff.losses import sample_times
from latentdiff.sde import VPSDE
from sbm.unet import SinusoidalEmbedding

TIME_POSITIONS = 1000.0  # t ∈ [0, 1] is embedded as the position 1000·t (the DDPM step convention)


class PairEnergy(nn.Module):
    """A scalar energy of a (z_a, z_b) pair at diffusion time t, for modality indices a, b."""

    def __init__(self, latent_dim: int, num_modalities: int, width: int = 128, layers: int = 6, skip_at: int = 5,
                 embed_dim: int = 32) -> None:
        super().__init__()
        if not 2 <= skip_at <= layers:
            raise ValueError(f"skip_at must lie in [2, layers={layers}], got {skip_at}")
        self.time = SinusoidalEmbedding(embed_dim)
        self.modality = nn.Embedding(num_modalities, embed_dim)
        in_dim = 2 * latent_dim + 3 * embed_dim
        self.skip_at = skip_at
        self.hidden = nn.ModuleList(
            nn.Linear(in_dim if i == 1 else width + (in_dim if i == skip_at else 0), width) for i in range(1, layers + 1)
        )
        self.out = nn.Linear(width, 1)

    def forward(self, z_a: Tensor, z_b: Tensor, t: Tensor, a: Tensor, b: Tensor) -> Tensor:
        """Energies ``(B,)`` of pairs ``z_a, z_b`` ``(B, D)`` at times ``t`` ``(B,)``, modalities ``a, b`` ``(B,)``."""
        x = torch.cat([z_a, z_b, self.time(t * TIME_POSITIONS), self.modality(a), self.modality(b)], dim=1)
        h = x
        for i, layer in enumerate(self.hidden, start=1):
            h = F.softplus(layer(torch.cat([h, x], dim=1) if i == self.skip_at else h))
        return self.out(h).squeeze(1)


def random_pairs(present: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One random ordered pair (a, b), a ≠ b, of present modalities per sample; ``valid`` marks samples
    with at least two present. ``present``: ``(B, M)`` bool."""
    scores = torch.rand(present.shape, device=present.device).masked_fill(~present, -1.0)
    a = scores.argmax(1)
    scores = scores.scatter(1, a[:, None], -1.0)
    b = scores.argmax(1)
    valid = present.sum(1) >= 2
    return a, b, valid


def nce_loss(energy: PairEnergy, sde: VPSDE, z: Tensor, present: Tensor, eps: float = 1e-5) -> dict[str, Tensor]:
    """Eq. 7 on latents ``z`` ``(B, M, D)`` of complete-or-partial tuples (``present`` ``(B, M)`` bool)."""
    a, b, valid = random_pairs(present)
    if int(valid.sum()) < 2:
        raise ValueError("NCE needs at least two tuples with two present modalities in the batch")
    rows = torch.arange(z.shape[0], device=z.device)[valid]
    a, b = a[valid], b[valid]
    z_a, z_b = z[rows, a], z[rows, b]
    partner = rows[torch.randperm(len(rows), device=z.device)]  # another tuple, the same modality b_i
    shuffled, usable = z[partner, b], present[partner, b]
    gaussian = torch.randn_like(z_b)
    t = sample_times(len(rows), eps, sde.T, z.device)
    za_t = sde.perturb(z_a, t)
    e_pos = energy(za_t, sde.perturb(z_b, t), t, a, b)
    e_shuffled = energy(za_t, sde.perturb(shuffled, t), t, a, b)[usable]
    e_gaussian = energy(za_t, sde.perturb(gaussian, t), t, a, b)
    shuffled_term = F.softplus(-e_shuffled).mean() if e_shuffled.numel() else e_pos.new_zeros(())
    loss = F.softplus(e_pos).mean() + 0.5 * (shuffled_term + F.softplus(-e_gaussian).mean())
    return {"loss": loss, "energy_pos": e_pos.mean(), "energy_shuffled": e_shuffled.mean(),
            "energy_gaussian": e_gaussian.mean()}
