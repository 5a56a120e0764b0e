"""Pieces shared by the Gaussian multimodal VAE baselines (MVAE, MMVAE, MoPoE, MVTCAE).

* one encoder (an *expert* ``q(z | x_m)``) and one decoder per modality, as its kind asks
  (``mmbench.nets.modality``: the residual conv nets of sbmae ``h_vae_model_copy.py`` for images and
  masks, an MLP for attributes), latent ``latent_per_modality · M``;
* each kind's likelihood (images Gaussian with fixed scale, see :class:`VAEConfig`; masks and attributes
  Bernoulli), Laplace log-densities for MMVAE+;
* subsets of modalities as bit masks (ELBO sub-sampling, MoPoE's mixture components);
* incomplete tuples (``mmbench.data.presence``): ``presence`` and ``observed_experts`` give each loss the
  observed subset of every tuple (encoders only on observed images; losses mask the rest);
* :class:`SharedLatentVAE`: encode / decode / conditional and unconditional sampling for any model whose
  conditional posterior is a function of the observed experts; subclasses give that function and a loss.

Images returned by every public method are the decoder's *means* clamped to [0, 1], never a noisy
sample of the likelihood (a Gaussian sample of σ ≈ 0.7 would be mostly noise); masks and attributes
are the Bernoulli means.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmbench.config import src
from mmbench.contract import Batch, Capability, MultimodalModel, Stage, StageHParams, Subset
from mmbench.data.presence import batch_presence
from mmbench.data.source import ModalitySpec
from mmbench.distributions import gaussian_nll_sum, reparameterize
from mmbench.nets import modality as kinds

Expert = tuple[Tensor, Tensor]  # (mu, logvar), each (B, D)

# 300 epochs of the 50,000 training tuples at batch 256 (195 full batches per epoch).
PAPER_STEPS = 300 * (50_000 // 256)


@dataclass(frozen=True)
class VAEConfig:
    """Fields shared by the Gaussian baselines; each model adds its ``beta`` and its own fields."""

    latent_per_modality: int = src(64, "PROTOCOL §2: shared-latent baselines get latent 64·M [paper A.2]")
    width: float = src(1.0, "channel multiplier of the residual nets; 1.0 = the paper's 64/128/256")
    likelihood_scale: float = src(
        math.sqrt(0.5),
        "Decision: Gaussian likelihood with fixed σ = 1/√2, i.e. the summed squared error of the paper's "
        "residual (Soft-IntroVAE style) VAEs up to a constant [paper A.2: Gaussian likelihood]",
    )
    lr: float = src(1e-3, "paper A.2: VAEs lr 1e-3, Adam")
    batch_size: int = src(256, "Decision: 256, the batch of the SBM stages (PROTOCOL §2); the paper is silent")
    steps: int = src(PAPER_STEPS, "Decision: 300 epochs of 50k tuples at batch 256 (the paper trains 200–300)")
    lr_schedule: str = src("constant", "paper A.2 gives a learning rate and no schedule; 'cosine' decays it to 0")

    unscaled = ("sampler_steps", "score_width")  # a budget's scale: no sampler, no score network

    def check(self) -> None:
        if self.latent_per_modality < 1:
            raise ValueError(f"latent_per_modality must be positive, got {self.latent_per_modality}")
        if self.width <= 0:
            raise ValueError(f"width must be positive, got {self.width}")
        if self.likelihood_scale <= 0:
            raise ValueError(f"likelihood_scale must be positive, got {self.likelihood_scale}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be positive, got {self.steps} and {self.batch_size}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")


# --- likelihoods and densities -------------------------------------------------------------------------


def gaussian_log_density(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag exp(logvar)) summed over the last dim (broadcasting)."""
    return -0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + math.log(2 * math.pi)).sum(-1)


def standard_normal_log_density(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dim."""
    return -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)


def laplace_log_density(x: Tensor, loc: Tensor | float, scale: Tensor | float) -> Tensor:
    """log Laplace(x; loc, scale), elementwise (broadcasting); sum it over the dims you need."""
    scale_t = torch.as_tensor(scale, dtype=x.dtype, device=x.device)
    return -torch.log(2 * scale_t) - (x - loc).abs() / scale_t


def image_nll(x: Tensor, mean: Tensor, scale: float) -> Tensor:
    """Gaussian negative log-likelihood of images, summed over pixels, per sample ``(B,)``."""
    return gaussian_nll_sum(x, mean, scale)


def to_images(mean: Tensor) -> Tensor:
    """The decoded mean as an image in [0, 1] (what every public method returns)."""
    return mean.clamp(0.0, 1.0)


# --- subsets as bit masks -----------------------------------------------------------------------------


def subset_masks(num_modalities: int) -> Tensor:
    """All 2^M − 1 non-empty subsets as bool rows ``(2^M − 1, M)``; row k−1 is the binary code of k."""
    codes = torch.arange(1, 2**num_modalities)
    bits = 2 ** torch.arange(num_modalities)
    return (codes[:, None] & bits[None, :]) != 0


def random_subset_masks(n: int, num_modalities: int, device: torch.device | None = None) -> Tensor:
    """``n`` subsets drawn uniformly from the 2^M − 1 non-empty ones, as bool rows ``(n, M)``."""
    codes = torch.randint(1, 2**num_modalities, (n,), device=device)
    bits = 2 ** torch.arange(num_modalities, device=device)
    return (codes[:, None] & bits[None, :]) != 0


def masks_to_subsets(masks: Tensor, modalities: Sequence[str]) -> list[Subset]:
    return [frozenset(m for m, on in zip(modalities, row.tolist(), strict=True) if on) for row in masks]


# --- the networks ---------------------------------------------------------------------------------------


def build_encoders(specs: Mapping[str, ModalitySpec], latent_dim: int, width: float) -> nn.ModuleDict:
    """One encoder (expert) per modality, of its kind."""
    return nn.ModuleDict({m: kinds.build_encoder(s.kind, s.shape, latent_dim, width) for m, s in specs.items()})


def build_decoders(specs: Mapping[str, ModalitySpec], latent_dim: int, width: float) -> nn.ModuleDict:
    """One decoder per modality, of its kind (linear output: the Gaussian mean or the Bernoulli logits)."""
    return nn.ModuleDict({m: kinds.build_decoder(s.kind, s.shape, latent_dim, width) for m, s in specs.items()})


def stack_experts(experts: Mapping[str, Expert], order: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Experts of ``order`` stacked as ``(E, B, D)`` means and log-variances."""
    return (torch.stack([experts[m][0] for m in order]), torch.stack([experts[m][1] for m in order]))


def with_prior_expert(mus: Tensor, logvars: Tensor) -> tuple[Tensor, Tensor]:
    """Append the N(0, I) prior as one more expert (Wu & Goodman 2018)."""
    zeros = torch.zeros_like(mus[:1])
    return torch.cat([mus, zeros]), torch.cat([logvars, zeros])


def decode_rows(decoder: nn.Module, latents: Tensor) -> Tensor:
    """Decode ``(T, B, D)`` latents with one decoder call per row; returns ``(T, B, C, H, W)`` means.

    One call per row is how the reference implementations decode (``iffsid/mmvae``: per expert sample;
    ``mhw32/multimodal-vae-public``: per ELBO term), so a BatchNorm in the decoder normalises each row's
    batch of B, not the T·B stack; it is also 1.4–1.6× faster on a CPU than one call on the stack
    (docs/pitfalls.md)."""
    return torch.stack([decoder(row) for row in latents])


def repeated_nll(x: Tensor, means: Tensor, scale: float, kind: str = "image") -> Tensor:
    """NLL of ``x`` ``(B, ...)`` under each of the decoder outputs ``means`` ``(T, B, ...)`` (``kind``'s
    likelihood); returns ``(T, B)``."""
    t, b = means.shape[:2]
    target = x.unsqueeze(0).expand_as(means).reshape(t * b, *x.shape[1:])
    return kinds.nll(kind, target, means.reshape(t * b, *x.shape[1:]), scale).view(t, b)


# --- the shared model skeleton ----------------------------------------------------------------------------


class SharedLatentVAE(MultimodalModel):
    """A multimodal VAE with one shared Gaussian latent, one expert and one decoder per modality.

    Subclasses implement :meth:`posterior_mean` and :meth:`posterior_sample` (the conditional posterior
    given the observed experts) and :meth:`loss` (the training objective on a full batch).
    """

    capabilities = frozenset({
        Capability.CONDITIONAL, Capability.UNCONDITIONAL, Capability.ENCODE, Capability.LATENT_INFERENCE,
        Capability.INCOMPLETE,  # each loss reads the batch's presence mask (observed_experts, presence)
    })
    modality_kinds = frozenset({"image", "mask", "attributes"})

    def __init__(self, modalities: Sequence[str], config: VAEConfig, specs: Mapping[str, ModalitySpec] | None = None) -> None:
        super().__init__(modalities, config, specs)
        config.check()
        self.latent_dim = config.latent_per_modality * len(self.modalities)
        self.encoders = build_encoders(self.specs, self.latent_dim, config.width)
        self.decoders = build_decoders(self.specs, self.latent_dim, config.width)

    # --- what subclasses implement ------------------------------------------------------------------
    def posterior_mean(self, experts: Mapping[str, Expert], given: Subset) -> Tensor:
        raise NotImplementedError

    def posterior_sample(self, experts: Mapping[str, Expert], given: Subset) -> Tensor:
        raise NotImplementedError

    def loss(self, batch: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    # --- training -----------------------------------------------------------------------------------
    def stage_hparams(self) -> StageHParams:
        c = self.config
        return StageHParams(steps=c.steps, batch_size=c.batch_size, lr=c.lr, lr_schedule=c.lr_schedule)

    def stages(self) -> list[Stage]:
        return [Stage("joint", self, self.loss, self.stage_hparams())]

    def experts(self, batch: Batch, modalities: Iterable[str]) -> dict[str, Expert]:
        """``q(z | x_m)`` for each named modality, as (mu, logvar)."""
        missing = [m for m in modalities if m not in batch]
        if missing:
            raise KeyError(f"the batch lacks modalities {missing}; it has {sorted(batch)}")
        return {m: self.encoders[m](batch[m]) for m in modalities}

    def presence(self, batch: Batch) -> Tensor | None:
        """The batch's ``(B, M)`` presence mask in modality order; None for a complete batch (or an all-True mask)."""
        present = batch_presence(batch)
        if present is None or bool(present.all()):
            return None
        if present.shape[1] != len(self.modalities):
            raise ValueError(f"the presence mask has {present.shape[1]} columns for {len(self.modalities)} modalities")
        return present

    def observed_experts(self, batch: Batch, present: Tensor | None) -> dict[str, Expert]:
        """``experts`` of every modality, each encoder run only on the tuples that observe it (``present``
        ``(B, M)``; None = all): an unobserved image reaches neither a gradient nor a BatchNorm statistic. An
        unobserved expert is (0, 0); every loss leaves it out through the mask."""
        if present is None:
            return self.experts(batch, self.modalities)
        out: dict[str, Expert] = {}
        for i, m in enumerate(self.modalities):
            rows = present[:, i].nonzero().squeeze(1)
            mu = batch[m].new_zeros(present.shape[0], self.latent_dim)
            logvar = torch.zeros_like(mu)
            if rows.numel():
                mu_m, logvar_m = self.encoders[m](batch[m][rows])
                mu, logvar = mu.index_put((rows,), mu_m), logvar.index_put((rows,), logvar_m)
            out[m] = (mu, logvar)
        return out

    def reconstruction_nll(self, batch: Batch, z: Tensor, modalities: Iterable[str], present: Tensor | None = None) -> Tensor:
        """Σ_m −log p(x_m | z) per sample, every modality decoded once from ``z`` ``(B, D)``; with ``present``
        ``(B, M)`` only the observed targets count."""
        if present is None:
            return sum(self.nll(m, batch[m], self.decoders[m](z)) for m in modalities)  # type: ignore[return-value]
        column = {m: i for i, m in enumerate(self.modalities)}
        return sum(  # type: ignore[return-value]
            torch.where(present[:, column[m]], self.nll(m, batch[m], self.decoders[m](z)), 0.0) for m in modalities
        )

    def nll(self, modality: str, x: Tensor, out: Tensor) -> Tensor:
        """−log p(x_m | decoder output) per sample, by the modality's kind."""
        return kinds.nll(self.specs[modality].kind, x, out, self.config.likelihood_scale)

    # --- the contract ---------------------------------------------------------------------------------
    def _encode(self, batch: Batch, given: Subset) -> Tensor:
        return self.posterior_mean(self.experts(batch, sorted(given)), given)

    def _decode(self, latent: Tensor, targets: Subset) -> dict[str, Tensor]:
        if latent.dim() != 2 or latent.shape[1] != self.latent_dim:
            raise ValueError(f"expected a latent of shape (B, {self.latent_dim}), got {tuple(latent.shape)}")
        return {m: kinds.output(self.specs[m].kind, self.decoders[m](latent)) for m in sorted(targets)}

    def _sample_conditional(self, batch: Batch, given: Subset, targets: Subset) -> dict[str, Tensor]:
        experts = self.experts(batch, sorted(given))
        return self._decode(self.posterior_sample(experts, given), targets)

    def _sample_conditional_many(self, batch: Batch, queries: Sequence[tuple[Subset, Subset]]) -> list[dict[str, Tensor]]:
        """Each modality is encoded once for all queries; the draws are those of the per-query calls."""
        needed = sorted(frozenset().union(*(g for g, _ in queries))) if queries else []
        experts = self.experts(batch, needed)
        return [
            self._decode(self.posterior_sample({m: experts[m] for m in sorted(g)}, g), t) for g, t in queries
        ]

    def _sample_unconditional(self, n: int) -> dict[str, Tensor]:
        z = torch.randn(n, self.latent_dim, device=self.device)
        return self._decode(z, frozenset(self.modalities))

    def _infer_latent(self, batch: Batch, given: Subset, target: str) -> Tensor:
        """The posterior mean given ``given``: every target is decoded from the one shared latent."""
        return self._encode(batch, given)


class PoEVAE(SharedLatentVAE):
    """A shared-latent VAE whose conditional posterior is a Gaussian product of the observed experts."""

    def fuse(self, experts: Mapping[str, Expert], given: Subset) -> Expert:
        raise NotImplementedError

    def posterior_mean(self, experts: Mapping[str, Expert], given: Subset) -> Tensor:
        return self.fuse(experts, given)[0]

    def posterior_sample(self, experts: Mapping[str, Expert], given: Subset) -> Tensor:
        return reparameterize(*self.fuse(experts, given))
