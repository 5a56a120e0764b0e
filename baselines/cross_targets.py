"""Sub-sampled cross reconstructions for the mixture-of-experts objectives (MMVAE, MMVAE+).

Shi et al. 2019's stratified objective (and Palumbo et al. 2023's, which keeps it) reconstructs every
modality d from every expert's sample z_r: M² decodes per tuple. With ``cross_targets = K`` in 1..M−1,
each source r keeps its own target (the self-reconstruction term stays exact) and K of the M−1 other
targets, drawn once per step (shared by the batch); each drawn cross term is weighted (M−1)/K and the
others 0. Every cross term (r, d) is kept with probability K/(M−1), so E[weight] = 1 for every term and any
objective *linear* in the terms is estimated without bias — its gradient too, since the draw does not
depend on the parameters. The decodes fall from M² to M(K + 1) per tuple. ``K = 0`` means every target:
the exact objective.

The draw is balanced: the modalities are put on a circle in a uniformly random order and K distinct
offsets are drawn uniformly from 1..M−1; source r keeps the targets at those offsets from it. Each source
then keeps a uniform K-subset of the others (as independent draws per source would), and each target is
kept by exactly K sources, so every decoder gets weight M−1 from the cross terms at every step, as in the
exact objective. Independent draws per source would leave that weight Binomial: measured at M = 10,
K = 1 on a fresh MMVAE, a gradient noise of 96 % of the mean gradient's norm from the draw alone, mostly
from that (benchmarks/bench_cross_targets.py; docs/models.md).

Per step rather than per sample: each kept (source, target) pair is decoded as one call on the whole
batch, exactly the call the exact objective makes (``baselines.common.decode_rows``), so a decoder's
BatchNorm normalises the same batch and every kept term has the same value as in the exact objective;
per-sample draws would need ragged decoder batches (different BatchNorm statistics) to save anything.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_cross_targets(k: int, num_modalities: int) -> None:
    """``k`` must be 0 (every target) or 1..M−1 (other targets kept per source)."""
    if not 0 <= k <= num_modalities - 1:
        raise ValueError(
            f"cross_targets must be 0 (every target, the exact objective) or 1..{num_modalities - 1} "
            f"(at most M − 1 = {num_modalities - 1} other targets per source for M = {num_modalities}), got {k}"
        )


def cross_target_weights(num_modalities: int, k: int, device: torch.device | None = None) -> Tensor:
    """``(M, M)`` weights w[r, d] of target d's log-likelihood term under source r's sample.

    ``k = 0``: all ones (exact, nothing drawn). ``k`` in 1..M−1: 1 on the diagonal; (M−1)/k on k
    off-diagonal entries of every row *and* every column (the balanced draw of the module docstring), each
    off-diagonal entry with probability k/(M−1); 0 elsewhere."""
    check_cross_targets(k, num_modalities)
    m = num_modalities
    if k == 0:
        return torch.ones(m, m, device=device)
    position = torch.argsort(torch.randperm(m, device=device))  # a uniformly random circular order
    offsets = torch.randperm(m - 1, device=device)[:k] + 1  # k distinct offsets in 1..M−1
    gap = (position[None, :] - position[:, None]) % m  # gap[r, d]: d's offset from r on the circle
    kept = (gap[..., None] == offsets).any(-1)
    weights = torch.where(kept, (m - 1) / k, 0.0).to(torch.get_default_dtype())
    return weights.fill_diagonal_(1.0)


def sources_per_target(weights: Tensor) -> list[Tensor]:
    """For each target d, the sources r with a non-zero weight (ascending): the rows to decode for d."""
    return [torch.nonzero(weights[:, d], as_tuple=True)[0] for d in range(weights.shape[1])]
