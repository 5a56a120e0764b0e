"""MMVAE+: Palumbo et al. 2023, "MMVAE+: Enhancing the Generative Quality of Multimodal VAEs without
Compromises" (ICLR; reference repo ``epalu/mmvaeplus``, ``src/objectives.py``, ``src/models/mmvae.py``).

Each modality m has an encoder for a shared latent z (32) and a modality-specific latent w (32), Laplace
posteriors, and a decoder p(x_m | w, z) with a Laplace likelihood of fixed scale 0.75. Prior: Laplace(0, 1)
on (w, z). Objective (the reference's ``m_iwae``, a mixture of experts over the unimodal z posteriors):
for each modality r, u_r = (w_r, z_r) ~ q(· | x_r) (K samples) and

  log w = Σ_d log p(x_d | w_d, z_r) + β [log p(w_r, z_r) − log (1/M) Σ_m q(z_r | x_m) − log q(w_r | x_r)]

where w_d = w_r for d = r and w_d ~ r_d(w) = Laplace(0, learnable scale) for d ≠ r (the auxiliary prior
of the cross reconstructions); the loss is −mean_r log-mean-exp_K(log w). With K = 1 (the paper's) the loss
is linear in the M² log-likelihood terms, so ``cross_targets`` (1..M−1: each source keeps its own target and
K' others drawn per step, weighted (M−1)/K'; ``baselines.cross_targets``) estimates it and its gradient
without bias; with K > 1 the log-mean-exp is not linear in them and the option is refused.
``estimator = "dreg"`` gives the DReG gradient (Tucker et al. 2019): posterior densities with stopped parameters and the reparameterised
samples' gradient weighted by the normalised importance weights. (The reference's ``_m_dreg`` builds its
densities from the non-detached parameters; we detach them, as DReG prescribes.)

Generation: cross-modal = shared z from a source modality, the target's w from the prior Laplace(0, 1)
(reference ``reconstruct_and_cross_reconstruct_forw``); unconditional = z and every w from the prior.
The *latent* of this model (``encode``, ``decode``, ``infer_latent``) is the shared z only.
An incomplete tuple (``mmbench.data.presence``) averages the objective over its observed sources only, with
the mixture over its observed experts and only its observed targets reconstructed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Laplace

from baselines.common import PAPER_STEPS, image_nll, laplace_log_density
from baselines.cross_targets import check_cross_targets, cross_target_weights, sources_per_target
from baselines.mmvaeplus.nets import Encoder, build_decoder
from mmbench.config import src
from mmbench.contract import Batch, Capability, MultimodalModel, Stage, StageHParams, Subset
from mmbench.data.presence import batch_presence
from mmbench.data.source import ModalitySpec
from mmbench.nets import modality as kinds


@dataclass(frozen=True)
class MMVAEPlusConfig:
    shared_dim: int = src(32, "PROTOCOL §2 / paper A.2: shared z of 32")
    private_dim: int = src(32, "PROTOCOL §2 / paper A.2: modality-specific w of 32")
    beta: float = src(5.0, "paper A.2: β chosen on validation, MMVAE+ 5")
    likelihood: str = src("laplace", "paper A.2 / vae_polymnist.py: Laplace; 'gaussian' = the other baselines' choice")
    likelihood_scale: float = src(0.75, "epalu/mmvaeplus vae_polymnist.py Dec: Laplace scale 0.75")
    k: int = src(1, "paper A.2: IWAE estimator with K = 1")
    estimator: str = src("iwae", "paper A.2: IWAE; 'dreg' = DReG (the reference's default objective)")
    cross_targets: int = src(
        0,
        "Decision: 0 = every source's sample reconstructs every modality (the exact objective); K' in 1..M−1 = "
        "its own modality and K' others drawn per step, weighted (M−1)/K' (unbiased at k = 1; "
        "baselines.cross_targets)",
    )
    width: float = src(1.0, "channel multiplier of MMVAE+'s ResNet; 1.0 = the reference's nf = 64")
    lr: float = src(1e-3, "epalu/mmvaeplus main_polymnist.py: Adam lr 1e-3, amsgrad")
    amsgrad: bool = src(True, "epalu/mmvaeplus main_polymnist.py: Adam(amsgrad=True)")
    batch_size: int = src(256, "Decision: 256, as the other baselines (PROTOCOL §2 SBM batch)")
    steps: int = src(PAPER_STEPS, "Decision: 300 epochs of 50k tuples at batch 256 (the paper trains 200–300)")
    lr_schedule: str = src("constant", "epalu/mmvaeplus main_polymnist.py: no schedule; 'cosine' decays it to 0")

    # a budget's scale: MMVAE+ keeps its own latent sizes (32 shared + 32 private) at every budget; no sampler
    unscaled = ("latent_per_modality", "sampler_steps", "score_width")

    def check(self) -> None:
        if min(self.shared_dim, self.private_dim, self.k, self.steps, self.batch_size) < 1:
            raise ValueError(f"MMVAE+ dims, k, steps and batch_size must be positive: {self}")
        if self.likelihood not in ("laplace", "gaussian"):
            raise ValueError(f"MMVAE+ likelihood must be 'laplace' or 'gaussian', got {self.likelihood!r}")
        if self.estimator not in ("iwae", "dreg"):
            raise ValueError(f"MMVAE+ estimator must be 'iwae' or 'dreg', got {self.estimator!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.cross_targets and self.k != 1:
            raise ValueError(
                f"cross_targets = {self.cross_targets} needs k = 1, got k = {self.k}: the IWAE bound's log-mean-exp "
                "over k > 1 samples is not linear in the sub-sampled terms, so the estimate would be biased; "
                "set cross_targets = 0 (exact) or k = 1"
            )
        if self.width <= 0 or self.likelihood_scale <= 0:
            raise ValueError(f"width and likelihood_scale must be positive, got {self.width}, {self.likelihood_scale}")


@dataclass
class Posterior:
    """Laplace posterior parameters of one modality: private w and shared z, each ``(B, dim)``."""

    w_loc: Tensor
    w_scale: Tensor
    z_loc: Tensor
    z_scale: Tensor

    def detached(self) -> Posterior:
        return Posterior(*(t.detach() for t in (self.w_loc, self.w_scale, self.z_loc, self.z_scale)))


def log_mean_exp(x: Tensor, dim: int) -> Tensor:
    return torch.logsumexp(x, dim=dim) - math.log(x.shape[dim])


class MMVAEPlus(MultimodalModel):
    """Shared + modality-specific Laplace latents, mixture of experts on the shared part, IWAE/DReG."""

    Config = MMVAEPlusConfig
    capabilities = frozenset({
        Capability.CONDITIONAL, Capability.UNCONDITIONAL, Capability.ENCODE, Capability.LATENT_INFERENCE,
        Capability.INCOMPLETE,  # the loss reads the batch's presence mask (observed sources, mixtures, targets)
    })
    paper = (
        "Palumbo et al. 2023, MMVAE+: Enhancing the Generative Quality of Multimodal VAEs without Compromises (ICLR)"
    )

    modality_kinds = frozenset({"image", "mask", "attributes"})

    def __init__(self, modalities: Sequence[str], config: MMVAEPlusConfig, specs: Mapping[str, ModalitySpec] | None = None) -> None:
        super().__init__(modalities, config, specs)
        config.check()
        check_cross_targets(config.cross_targets, len(self.modalities))
        self.latent_dim = config.shared_dim
        c = config
        self.encoders = nn.ModuleDict({m: Encoder(c.private_dim, c.shared_dim, c.width, self.specs[m]) for m in self.modalities})
        self.decoders = nn.ModuleDict({m: build_decoder(c.private_dim + c.shared_dim, c.width, self.specs[m]) for m in self.modalities})
        # the auxiliary prior r_m(w) of the cross reconstructions: location 0, scale softmax(logits)·dim
        self.aux_w_logits = nn.ParameterDict({m: nn.Parameter(torch.zeros(1, config.private_dim)) for m in self.modalities})

    # --- pieces -------------------------------------------------------------------------------------------
    def posteriors(self, batch: Batch, modalities: Sequence[str]) -> dict[str, Posterior]:
        missing = [m for m in modalities if m not in batch]
        if missing:
            raise KeyError(f"the batch lacks modalities {missing}; it has {sorted(batch)}")
        return {m: Posterior(*self.encoders[m](batch[m])) for m in modalities}

    def presence(self, batch: Batch) -> Tensor | None:
        """The batch's ``(B, M)`` presence mask; None for a complete batch (or an all-True mask)."""
        present = batch_presence(batch)
        return None if present is None or bool(present.all()) else present

    def aux_w_scale(self, modality: str) -> Tensor:
        logits = self.aux_w_logits[modality]
        return F.softmax(logits, dim=-1) * logits.shape[-1]

    def prior_sample(self, shape: tuple[int, ...]) -> Tensor:
        """Laplace(0, 1) draws."""
        zero = torch.zeros(shape, device=self.device)
        return Laplace(zero, torch.ones_like(zero)).sample()

    def decode_means(self, modality: str, w: Tensor, z: Tensor) -> Tensor:
        return self.decoders[modality](torch.cat([w, z], dim=-1))

    def output(self, modality: str, out: Tensor) -> Tensor:
        """Images: the decoded location clamped to [0, 1]; masks, attributes: the Bernoulli mean."""
        return kinds.output(self.specs[modality].kind, out)

    # --- training -----------------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        c = self.config
        hp = StageHParams(steps=c.steps, batch_size=c.batch_size, lr=c.lr, amsgrad=c.amsgrad, lr_schedule=c.lr_schedule)
        return [Stage("joint", self, self.loss, hp)]

    def loss(self, batch: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        mods, k = self.modalities, self.config.k
        observed = self.presence(batch)  # (B, M) or None (complete)
        post = self.posteriors(batch, mods) if observed is None else self._observed_posteriors(batch, observed)
        dens = {m: p.detached() for m, p in post.items()} if self.config.estimator == "dreg" else post
        w = {m: Laplace(post[m].w_loc, post[m].w_scale).rsample((k,)) for m in mods}  # (K, B, Dw)
        z = {m: Laplace(post[m].z_loc, post[m].z_scale).rsample((k,)) for m in mods}  # (K, B, Dz)
        aux = self._auxiliary_w(w)
        weights = cross_target_weights(len(mods), self.config.cross_targets, self.device)  # drawn after every sample
        lpx = self._cross_log_likelihood(batch, w, z, aux, weights, observed)  # (M, K, B)
        lpu = torch.stack([laplace_log_density(w[r], 0.0, 1.0).sum(-1) + laplace_log_density(z[r], 0.0, 1.0).sum(-1) for r in mods])
        lqz = torch.stack([self._mixture_log_density(z[r], dens, observed) for r in mods])
        lqw = torch.stack([laplace_log_density(w[r], dens[r].w_loc, dens[r].w_scale).sum(-1) for r in mods])
        regulariser = lpu - lqz - lqw
        lw = lpx + self.config.beta * regulariser  # (M, K, B)
        if self.config.estimator == "dreg":
            per_source = self._dreg_objective(lw, w, z)
        else:
            per_source = log_mean_exp(lw, dim=1)  # (M, B)
        if observed is None:
            return {"loss": -per_source.mean(), "log_likelihood": lpx.mean(), "regulariser": regulariser.mean()}
        # an incomplete tuple: the average over its observed sources only (their samples, mixture and targets)
        count = observed.sum(1).to(per_source.dtype)
        objective = (torch.where(observed.T, per_source, 0.0).sum(0) / count).mean()
        kept = observed.T[:, None, :]
        return {"loss": -objective, "log_likelihood": lpx.masked_select(kept).mean(),
                "regulariser": regulariser.masked_select(kept).mean()}

    def _observed_posteriors(self, batch: Batch, observed: Tensor) -> dict[str, Posterior]:
        """Each encoder run only on the tuples that observe its modality (unobserved: Laplace(0, 1), left out
        of every term by the mask), so unobserved images reach neither gradients nor BatchNorm statistics."""
        out = {}
        for i, m in enumerate(self.modalities):
            rows = observed[:, i].nonzero().squeeze(1)
            n = observed.shape[0]
            parts = [torch.zeros(n, d, device=self.device) for d in (self.config.private_dim, self.config.private_dim,
                                                                     self.config.shared_dim, self.config.shared_dim)]
            parts[1], parts[3] = parts[1] + 1.0, parts[3] + 1.0
            if rows.numel():
                encoded = self.encoders[m](batch[m][rows])
                parts = [p.index_put((rows,), e) for p, e in zip(parts, encoded, strict=True)]
            out[m] = Posterior(*parts)
        return out

    def _mixture_log_density(self, z: Tensor, dens: dict[str, Posterior], observed: Tensor | None = None) -> Tensor:
        """log (1/M) Σ_m q(z | x_m) for ``z`` ``(K, B, Dz)``; returns ``(K, B)``; with ``observed`` ``(B, M)``
        the mixture of each tuple's observed experts."""
        per = torch.stack([laplace_log_density(z, p.z_loc, p.z_scale).sum(-1) for p in dens.values()])
        if observed is None:
            return log_mean_exp(per, dim=0)
        per = torch.where(observed.T[:, None, :], per, -torch.inf)
        return torch.logsumexp(per, dim=0) - observed.sum(1).to(per.dtype).log()

    def _auxiliary_w(self, w: dict[str, Tensor]) -> dict[tuple[str, str], Tensor]:
        """w_d ~ r_d(w) for every target d and every other source r, keyed (d, r), each shaped as ``w[r]``;
        all drawn, in one order, whatever targets are kept."""
        mods = self.modalities
        return {
            (d, r): Laplace(torch.zeros_like(w[r]), self.aux_w_scale(d).expand_as(w[r])).rsample()
            for d in mods
            for r in mods
            if r != d
        }

    def _cross_log_likelihood(self, batch: Batch, w: dict[str, Tensor], z: dict[str, Tensor],
                              aux: dict[tuple[str, str], Tensor], weights: Tensor, observed: Tensor | None = None) -> Tensor:
        """Σ_d weights[r, d] · log p(x_d | w_d, z_r) for every source r ``(M, K, B)``; each decoder runs once,
        on the sources of non-zero weight stacked (the decoders have no batch statistics)."""
        mods = self.modalities
        total = torch.zeros(len(mods), *z[mods[0]].shape[:2], device=self.device)
        for j, (d, rows) in enumerate(zip(mods, sources_per_target(weights), strict=True)):
            sources = [mods[r] for r in rows.tolist()]
            u = torch.stack([torch.cat([w[r] if r == d else aux[d, r], z[r]], dim=-1) for r in sources])
            means = self.decoders[d](u.flatten(0, 2))  # u: (len(rows), K, B, Dw + Dz)
            x = batch[d].unsqueeze(0).unsqueeze(0).expand(*u.shape[:3], *batch[d].shape[1:])
            ll = self.log_likelihood(d, x.flatten(0, 2), means).view(u.shape[:3])
            if observed is not None:  # only the tuple's observed targets
                ll = torch.where(observed[:, j].view(1, 1, -1), ll, 0.0)
            total = total.index_add(0, rows, weights[rows, j].view(-1, 1, 1) * ll)
        return total

    def log_likelihood(self, modality: str, x: Tensor, out: Tensor) -> Tensor:
        """log p(x_m | decoder output) per sample: the image likelihood, or Bernoulli for masks and attributes."""
        kind = self.specs[modality].kind
        return -kinds.nll(kind, x, out, 1.0) if kinds.is_binary(kind) else self.image_log_likelihood(x, out)

    def image_log_likelihood(self, x: Tensor, means: Tensor) -> Tensor:
        """log p(x | means) summed over pixels, per sample: Laplace (default) or Gaussian, fixed scale."""
        scale = self.config.likelihood_scale
        if self.config.likelihood == "gaussian":
            return -image_nll(x, means, scale)
        return laplace_log_density(x, means, scale).flatten(1).sum(-1)

    @staticmethod
    def _dreg_objective(lw: Tensor, w: dict[str, Tensor], z: dict[str, Tensor]) -> Tensor:
        """DReG surrogate (Tucker et al. 2019): Σ_k sg(ŵ_k) log w_k, with each sample's gradient × ŵ_k."""
        with torch.no_grad():
            weights = torch.softmax(lw, dim=1)  # (M, K, B) normalised over K
        for r, key in enumerate(w):
            for t in (w[key], z[key]):
                if t.requires_grad:
                    t.register_hook(lambda grad, wt=weights[r]: grad * wt.unsqueeze(-1))
        return (weights * lw).sum(1)

    # --- the contract -------------------------------------------------------------------------------------
    def _shared_mean(self, batch: Batch, given: Subset) -> Tensor:
        """The mean of the uniform mixture of the given modalities' z posteriors (Laplace mean = location)."""
        post = self.posteriors(batch, sorted(given))
        return torch.stack([p.z_loc for p in post.values()]).mean(0)

    def _encode(self, batch: Batch, given: Subset) -> Tensor:
        return self._shared_mean(batch, given)

    def _decode(self, latent: Tensor, targets: Subset) -> dict[str, Tensor]:
        """Images of ``targets`` from a shared z, each target's w drawn from the prior (as in cross-generation)."""
        if latent.dim() != 2 or latent.shape[1] != self.latent_dim:
            raise ValueError(f"expected a shared latent of shape (B, {self.latent_dim}), got {tuple(latent.shape)}")
        n, dw = latent.shape[0], self.config.private_dim
        return {m: self.output(m, self.decode_means(m, self.prior_sample((n, dw)), latent)) for m in sorted(targets)}

    def _sample_conditional(self, batch: Batch, given: Subset, targets: Subset) -> dict[str, Tensor]:
        return self._generate(self.posteriors(batch, sorted(given)), given, targets)

    def _sample_conditional_many(self, batch: Batch, queries: Sequence[tuple[Subset, Subset]]) -> list[dict[str, Tensor]]:
        needed = sorted(frozenset().union(*(g for g, _ in queries))) if queries else []
        post = self.posteriors(batch, needed)
        return [self._generate({m: post[m] for m in sorted(g)}, g, t) for g, t in queries]

    def _generate(self, post: dict[str, Posterior], given: Subset, targets: Subset) -> dict[str, Tensor]:
        """z from one given modality per sample (uniform); w of a given target from its own posterior, of an
        unobserved target from the prior."""
        locs = torch.stack([post[m].z_loc for m in sorted(given)])
        scales = torch.stack([post[m].z_scale for m in sorted(given)])
        b = locs.shape[1]
        pick, rows = torch.randint(len(locs), (b,), device=locs.device), torch.arange(b, device=locs.device)
        z = Laplace(locs[pick, rows], scales[pick, rows]).sample()
        out = {}
        for m in sorted(targets):
            if m in given:
                w = Laplace(post[m].w_loc, post[m].w_scale).sample()
            else:
                w = self.prior_sample((b, self.config.private_dim))
            out[m] = self.output(m, self.decode_means(m, w, z))
        return out

    def _sample_unconditional(self, n: int) -> dict[str, Tensor]:
        z = self.prior_sample((n, self.config.shared_dim))
        return self._decode(z, frozenset(self.modalities))

    def _infer_latent(self, batch: Batch, given: Subset, target: str) -> Tensor:
        """The shared z the target is generated from: the mixture mean of the given modalities' z."""
        return self._shared_mean(batch, given)
