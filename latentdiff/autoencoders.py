"""Unimodal autoencoders of stage 1: a β-VAE or an RAE per modality, and their training stage.

Sources: Wesego & Rooshenas 2024, §2 and A.1–A.2 (VAE β = 0.1 with Gaussian prior, posterior and
likelihood; RAE = squared error + 1e-5·‖z‖² with Gaussian noise added to z before the decoder, Ghosh et
al. 2020); networks: ``mmbench.nets.residual`` (sbmae ``h_vae_model_copy.py``, Soft-IntroVAE style), per modality kind through
``mmbench.nets.modality`` (images: those residual nets; masks: the same with one channel; attributes: an
MLP; masks and attributes reconstruct with the Bernoulli NLL instead of the squared error).

**Objective scale (as the reference).** Both families' reconstruction term is the per-image *sum* of
squared errors averaged over the batch, i.e. a Gaussian likelihood with fixed variance ½ up to a constant
(Soft-IntroVAE's ``mse`` with ``reduction="sum"``; sbmae ``train_polyupdAE.py`` ``ae_reg_loss`` for the
RAE), plus β·KL (VAE) or 1e-5·E‖z‖² (RAE). The RAE's decoder sees ``z + sqrt(rae_noise_var)·ε``; the
reference adds ``0.01·ε`` (``--noise-cons 0.01``: variance 1e-4), which is our default; the paper's A.2
says "variance of 0.01" (set ``rae_noise_var=0.01`` for that reading; docs/sbm.md).

Sharing: every latent-diffusion model's ``Config`` subclasses :class:`AutoencoderConfig`, the one
definition of stage 1's fields, and :func:`autoencoder_stage` gives each modality's autoencoder a
``reuse_key`` that hashes only what determines its trained state (the family's own fields, the modality
name, the data identity and the seed), so SBM-VAE/-C/-T share VAEs and SBM-RAE/-C/-T and MLD share RAEs
through the harness's artifact store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mmbench.config import src
from mmbench.contract import Stage, StageHParams
from mmbench.data.presence import batch_presence, observed_rows
from mmbench.data.source import ModalitySpec
from mmbench.distributions import kl_normal_standard, reparameterize
from mmbench.hashing import config_hash
from mmbench.nets import modality as kinds
from mmbench.seeding import derive_seed, seeded

FAMILIES = ("vae", "rae")
EPOCH = 195  # optimiser steps per epoch of the 50,000-tuple train split at batch 256
# per family; bump one when its training recipe changes: its old artifacts stop matching.
# rae 2: the per-image sum of squared errors (was the per-pixel mean), as sbmae's ae_reg_loss.
# The names are keys, not import paths: they keep the module's former name (sbm/) so stored artifacts match.
STAGE_VERSIONS = {"vae": "sbm.autoencoders/1", "rae": "sbm.autoencoders.rae/2"}


@dataclass(frozen=True)
class AutoencoderConfig:
    """Stage 1's fields as a latent-diffusion model's ``Config`` declares them (by subclassing this), so that
    equal fields give equal autoencoder reuse keys in every model. ``vae_beta`` is not here: only a model
    that trains VAEs declares it (MLD trains RAEs only)."""

    # harness-provided identity (see docs/sbm.md, 'Reuse')
    data_id: str = src("", "mmbench: identity of the train data (the harness sets MultimodalDataset.data_hash); '' = never reuse")
    seed: int = src(0, "mmbench: the job's seed; part of every reuse key")
    latent_dim: int = src(64, "Wesego & Rooshenas A.2: latent size 64 (SBM reshapes it to 8x8; A.9: MLD uses the same autoencoders)")
    width: float = src(1.0, "mmbench.nets.residual width multiplier (1.0 = the paper's 64/128/256 channels)")
    rae_l2: float = src(1e-5, "Wesego & Rooshenas A.2: RAE ||z||^2 weight")
    rae_noise_var: float = src(1e-4, "sbmae train_polyupdAE.py: z + 0.01·N(0, I), i.e. variance 1e-4 (the paper's A.2 text says variance 0.01; docs/sbm.md)")
    ae_steps: int = src(200 * EPOCH, "mmbench: 200 epochs (the paper gives no epoch count for stage 1)")
    ae_lr: float = src(1e-3, "Wesego & Rooshenas A.2: unimodal VAEs lr 0.001")
    ae_batch_size: int = src(256, "Wesego & Rooshenas Table 4 batch size")


@dataclass(frozen=True)
class AESpec:
    """Everything that determines one unimodal autoencoder's trained state, except data and seed."""

    family: str
    latent_dim: int
    width: float
    vae_beta: float | None  # the VAE's KL weight; None for an RAE
    rae_l2: float
    rae_noise_var: float
    steps: int
    lr: float
    batch_size: int

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown autoencoder family {self.family!r}; use one of {FAMILIES}")
        if self.latent_dim < 1 or self.width <= 0:
            raise ValueError(f"latent_dim and width must be positive, got {self.latent_dim}, {self.width}")
        if self.family == "vae" and self.vae_beta is None:
            raise ValueError("a VAE needs vae_beta: declare the field in the model's Config (as SBMConfig does)")

    @classmethod
    def from_config(cls, config: AutoencoderConfig, family: str) -> AESpec:
        """The spec of a model's autoencoders: its :class:`AutoencoderConfig` fields, and ``vae_beta`` when it has one."""
        if not isinstance(config, AutoencoderConfig):
            raise TypeError(f"{type(config).__name__} does not subclass latentdiff.autoencoders.AutoencoderConfig; "
                            "a latent-diffusion model's Config must, so its autoencoder fields are the shared ones")
        return cls(
            family=family, latent_dim=config.latent_dim, width=config.width, vae_beta=getattr(config, "vae_beta", None),
            rae_l2=config.rae_l2, rae_noise_var=config.rae_noise_var,
            steps=config.ae_steps, lr=config.ae_lr, batch_size=config.ae_batch_size,
        )

    def identity(self) -> dict[str, Any]:
        """The fields that matter for this family (a VAE's key ignores the RAE's fields and back)."""
        fields = asdict(self)
        unused = ("rae_l2", "rae_noise_var") if self.family == "vae" else ("vae_beta",)
        return {k: v for k, v in fields.items() if k not in unused}


class UnimodalAE(nn.Module):
    """An encoder/decoder pair of one modality's kind, trained as a β-VAE or an RAE."""

    def __init__(self, spec: AESpec, modality: ModalitySpec | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.modality = modality or ModalitySpec("image", "image", kinds.POLYMNIST_SHAPE)
        kind, shape = self.modality.kind, self.modality.shape
        self.encoder = kinds.build_encoder(kind, shape, spec.latent_dim, spec.width)
        self.decoder = kinds.build_decoder(kind, shape, spec.latent_dim, spec.width)

    @property
    def variational(self) -> bool:
        return self.spec.family == "vae"

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(mu, logvar) for a VAE; (code, None) for an RAE."""
        mu, logvar = self.encoder(x)
        return (mu, logvar) if self.variational else (mu, None)

    def latent(self, x: Tensor) -> Tensor:
        """The inference latent: the posterior mean (VAE) or the code (RAE) [paper A.2]."""
        return self.posterior(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        """Data in [0, 1]: images the decoder's Gaussian mean, clamped; masks, attributes the Bernoulli mean."""
        return kinds.output(self.modality.kind, self.decoder(z))

    def reconstruction(self, x: Tensor, decoded: Tensor) -> Tensor:
        """The batch mean of the per-item reconstruction term (:func:`mmbench.nets.modality.reconstruction_error`)."""
        return kinds.reconstruction_error(self.modality.kind, x, decoded).mean()

    def loss(self, x: Tensor) -> dict[str, Tensor]:
        return self._vae_loss(x) if self.variational else self._rae_loss(x)

    def _vae_loss(self, x: Tensor) -> dict[str, Tensor]:
        mu, logvar = self.encoder(x)
        rec = self.reconstruction(x, self.decoder(reparameterize(mu, logvar)))
        kl = kl_normal_standard(mu, logvar).mean()
        return {"loss": rec + self.spec.vae_beta * kl, "rec": rec, "kl": kl}

    def _rae_loss(self, x: Tensor) -> dict[str, Tensor]:
        z, _ = self.encoder(x)
        noisy = z + torch.randn_like(z) * self.spec.rae_noise_var**0.5
        rec = self.reconstruction(x, self.decoder(noisy))
        reg = z.square().sum(1).mean()
        return {"loss": rec + self.spec.rae_l2 * reg, "rec": rec, "z_norm2": reg}


def observed_loss(ae: UnimodalAE, x: Tensor, present: Tensor | None) -> dict[str, Tensor]:
    """The autoencoder's loss on the tuples that observe its modality (``present``: ``(B, 1)``, the batch's
    presence column of that modality; None = all): incomplete tuples never reach its encoder, so neither its
    gradient nor its BatchNorm statistics see an unobserved image (Wesego & Rooshenas 2024, A.10.1)."""
    rows = observed_rows(present, 0)
    if rows is None:
        return ae.loss(x)
    if rows.numel() == 0:  # nobody in this batch observes the modality: a zero loss with zero gradients
        zero = sum(p.sum() for p in ae.parameters()) * 0.0
        return {"loss": zero, "rec": zero.detach()}
    return ae.loss(x[rows])


def reset_parameters(module: nn.Module, seed: int) -> None:
    """Re-initialise every submodule from ``seed`` (so a trained state depends on the seed, not on
    how much of the global RNG stream was used before the stage started)."""
    device = next(module.parameters()).device
    with seeded(seed, device):
        for sub in module.modules():
            if sub is not module and hasattr(sub, "reset_parameters"):
                sub.reset_parameters()


def reuse_key(spec: AESpec, modality: str, data_id: str, seed: int) -> str | None:
    """The artifact key of one modality's autoencoder; None (no sharing) when the data is unnamed."""
    if not data_id:
        return None
    return config_hash({"stage": STAGE_VERSIONS[spec.family], **spec.identity(), "modality": modality, "data_id": data_id, "seed": seed}, length=32)


def autoencoder_stage(ae: UnimodalAE, modality: str, data_id: str, seed: int) -> Stage:
    """The training stage ``ae/<modality>`` of one autoencoder (reusable across models)."""

    def loss(batch: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        return observed_loss(ae, batch[modality], batch_presence(batch))

    def prepare(_batches: Any) -> None:
        reset_parameters(ae, derive_seed(seed, "ae", modality))

    spec = ae.spec
    return Stage(
        name=f"ae/{modality}", module=ae, loss=loss,
        hparams=StageHParams(steps=spec.steps, batch_size=spec.batch_size, lr=spec.lr),
        modalities=(modality,), reuse_key=reuse_key(spec, modality, data_id, seed), prepare=prepare,
    )
