"""SBM-VAE / SBM-RAE with optional energy (-C) or contrastive (-T) guidance.

Source: Wesego & Rooshenas 2024, "Score-Based Multimodal Autoencoder" (TMLR; ``rooshenasgroup/sbmae``):
§2 (two-stage training), §2.1 (conditional sampling by fixing observed latents), §2.2 (guidance),
A.1–A.3 and Table 4 (hyperparameters), A.10.1 (training with missing modalities: the presence mask of a
batch, ``mmbench.data.presence``, or else ``missing_rate``'s simulated one).

Stages, in order: ``ae/<m>`` per modality (shared across models through ``reuse_key``), ``aux``
(-T: contrastive encoders), ``score`` (the latent score model), ``energy`` (-C). The unconditional score
model is the same network for SBM and SBM-C (guidance only wraps it at sampling), so their ``score``
stages share one ``reuse_key`` when everything that trains it agrees.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from latentdiff.autoencoders import EPOCH, FAMILIES, AutoencoderConfig, reset_parameters
from latentdiff.base import PRESENCE_KEY, LatentCache, LatentGenerativeModel, TrainBatches
from latentdiff.grids import GRIDS
from latentdiff.losses import WEIGHTINGS, dsm_loss
from latentdiff.sampling import REIMPOSE_MODES, Known, get_sampler, takes_grid
from latentdiff.sde import VPSDE, ScoreFn
from latentdiff.standardise import STANDARDISE_MODES, LatentStandardiser
from mmbench.config import src, to_dict
from mmbench.contract import Batch, Stage, StageHParams, Subset
from mmbench.data.source import ModalitySpec
from mmbench.hashing import config_hash
from mmbench.scaling import Scale, present
from mmbench.seeding import derive_seed
from sbm.contrastive import AuxEncoders, clip_loss, condition_from, random_given
from sbm.energy import PairEnergy, nce_loss
from sbm.guidance import EnergyGuidance, WithCondition
from sbm.unet import UNet

GUIDANCES = ("none", "energy", "contrastive")
# SBMConfig fields that do not change what the unconditional score stage trains (sampling, guidance)
_NOT_SCORE_TRAINING = frozenset({
    "guidance", "sampler", "sampler_steps", "corrector_steps", "snr", "t_end", "reimpose", "sampler_grid",
    "energy_gamma", "energy_width", "energy_layers", "energy_steps", "energy_lr", "energy_batch_size",
    "aux_width", "aux_proj_dim", "aux_steps", "aux_lr", "aux_batch_size", "cond_null_prob",
})
# score-net fields added after stores existed: in the score stage's key only when changed from these defaults
_KEYED_WHEN_CHANGED = {"unet_level_attention": True, "unet_block_mult": 2}


@dataclass(frozen=True)
class SBMConfig(AutoencoderConfig):
    # what the registry names set
    family: str = src("vae", "registry: sbm-vae* = vae, sbm-rae* = rae [paper §2, A.1]")
    guidance: str = src("none", "registry: -C = energy [§2.2.1], -T = contrastive [§2.2.2]")
    # stage 1: unimodal autoencoders (the shared fields come from AutoencoderConfig)
    vae_beta: float = src(0.1, "paper A.2 and Table 6 (sbmae's script uses 0.5)")
    # stage 2: the score model
    dim: int = src(0, "sbmae UNet dim: 128 for more than 5 modalities, else 64 (0 = that rule)")
    dim_mults: tuple[int, ...] = src((1, 2, 2, 2), "sbmae: annotated-diffusion UNet dim_mults")
    attn_heads: int = src(4, "annotated-diffusion UNet attention heads")
    attn_dim_head: int = src(32, "annotated-diffusion UNet attention head size")
    unet_level_attention: bool = src(True, "annotated-diffusion UNet: linear attention at every level (False = lean, docs/sbm.md)")
    unet_block_mult: int = src(2, "annotated-diffusion ConvNeXt block expansion (1 = lean, docs/sbm.md)")
    time_scale: float = src(1.0, "sbmae: sinusoidal embedding of the raw t in [eps, 1]")
    beta_min: float | None = src(None, "Table 4: 0.1 for 10 modalities, 1 for fewer (None = that rule)")
    beta_max: float = src(5.0, "Table 4")
    sde_eps: float = src(1e-5, "score_sde / paper §2: t ~ U(eps, 1)")
    loss_weighting: str = src("sigma2", "score_sde likelihood_weighting=False (lambda = sigma^2); 'unit' = literal lambda = 1 (docs/sbm.md)")
    score_steps: int = src(200 * EPOCH, "mmbench: 200 epochs (the paper gives no epoch count)")
    score_lr: float = src(2e-4, "paper A.2: Adam lr 0.0002")
    score_batch_size: int = src(256, "paper Table 4")
    score_ema_decay: float = src(0.0, "sbmae: no EMA for PolyMNIST (train_poly_unet_cont.py); its CelebA score model uses 0.999 (0 = off)")
    missing_rate: float = src(0.0, "paper A.10.1 used 0.2 on CelebAMask-HQ; 0 = complete tuples")
    latent_standardise: str = src(
        "none", "mmbench: 'dimension'/'modality' = the score model trains and samples on latents standardised by "
        "the training latents' moments (Rombach et al. 2022 §4.3.2; latentdiff.standardise); the paper does not",
        keyed_when_set=True)
    # sampling
    sampler: str = src("pc", "paper §2.1 / A.2: predictor-corrector")
    sampler_steps: int = src(100, "Table 4: N = 100")
    corrector_steps: int = src(1, "Table 4: LD per step = 1")
    snr: float = src(0.16, "score_sde default Langevin snr (sbmae)")
    t_end: float = src(1e-3, "score_sde: sampling ends at t = 1e-3")
    reimpose: str = src("fresh", "fresh noise (PROTOCOL.md §2); 'sbmae' = alpha*z + sigma*z as the reference code, "
                        "which every suite budget sets (mmbench.suites.protocol)")
    sampler_grid: str = src("", "mmbench: time grid of samplers that take one ('' = the sampler's default; docs/sbm.md)")
    # -C: energy-based coherence guidance
    energy_gamma: float = src(1.0, "per sample; chosen on validation coherence over {0, 1, 3.9, 10, 30} (docs/sbm.md, bench_guidance.py); the paper's EBM-scale 1000 at batch 256 is 3.9 (guidance.per_sample_gamma)")
    energy_width: int = src(128, "sbmae: 128-wide MLP")
    energy_layers: int = src(6, "sbmae: six layers, skip from the input at layer 5")
    energy_steps: int = src(50 * EPOCH, "mmbench: 50 epochs (the paper gives none)")
    energy_lr: float = src(2e-4, "mmbench: the score model's lr (the paper gives none)")
    energy_batch_size: int = src(256, "Table 4 batch size")
    # -T: contrastive guidance
    aux_width: float = src(1.0, "paper A.9: encoders like the VAE encoders")
    aux_proj_dim: int = src(512, "paper A.9: projection head to 512")
    aux_steps: int = src(50 * EPOCH, "mmbench: 50 epochs (the paper gives none)")
    aux_lr: float = src(1e-3, "mmbench: the encoders' lr of A.2")
    aux_batch_size: int = src(256, "Table 4 batch size")
    cond_null_prob: float = src(0.1, "mmbench: share of score-training tuples given nothing (the null condition)")

    @staticmethod
    def scaled(scale: Scale) -> dict[str, object]:
        """A budget's scale: every stage shrinks together. The energy (-C) and contrastive-encoder (-T)
        stages keep the defaults' ratio to the main stages (50 vs 200 epochs): a quarter of ``steps``."""
        side = None if scale.steps is None else max(1, scale.steps // 4)
        batch = scale.batch_size
        return present(
            width=scale.width, aux_width=scale.width, ae_steps=scale.steps, score_steps=scale.steps,
            energy_steps=side, aux_steps=side, ae_batch_size=batch, score_batch_size=batch,
            energy_batch_size=batch, aux_batch_size=batch, sampler_steps=scale.sampler_steps,
            dim=scale.score_width, latent_dim=scale.latent_per_modality,
        )


def resolve_dim(config: SBMConfig, num_modalities: int) -> int:
    return config.dim or (128 if num_modalities > 5 else 64)


def resolve_beta_min(config: SBMConfig, num_modalities: int) -> float:
    return config.beta_min if config.beta_min is not None else (0.1 if num_modalities >= 10 else 1.0)


def _check(config: SBMConfig) -> None:
    choices = {"family": (config.family, FAMILIES), "guidance": (config.guidance, GUIDANCES),
               "latent_standardise": (config.latent_standardise, STANDARDISE_MODES),
               "loss_weighting": (config.loss_weighting, WEIGHTINGS), "reimpose": (config.reimpose, REIMPOSE_MODES)}
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise ValueError(f"SBMConfig.{name} = {value!r}; use one of {allowed}")
    get_sampler(config.sampler)
    if config.sampler_grid and (config.sampler_grid not in GRIDS or not takes_grid(config.sampler)):
        raise ValueError(f"SBMConfig.sampler_grid = {config.sampler_grid!r}: use '' or one of {GRIDS} with a sampler "
                         f"that takes a grid (not {config.sampler!r})")
    side = math.isqrt(config.latent_dim)
    if side * side != config.latent_dim:
        raise ValueError(f"latent_dim {config.latent_dim} must be a perfect square (it is reshaped to side x side)")
    if side % 2 ** (len(config.dim_mults) - 1):
        raise ValueError(
            f"a {side}x{side} latent cannot be halved {len(config.dim_mults) - 1} times; shorten dim_mults {config.dim_mults}"
        )


class SBM(LatentGenerativeModel):
    """Score-based multimodal autoencoder: unimodal VAEs/RAEs tied by a latent score model."""

    Config = SBMConfig
    paper = "Wesego & Rooshenas 2024, Score-Based Multimodal Autoencoder (TMLR); rooshenasgroup/sbmae"

    @classmethod
    def min_observed(cls, config: SBMConfig) -> tuple[int, str]:
        """-C's energy model learns from pairs of observed latents (NCE), so each tuple must observe two."""
        if config.guidance == "energy":
            return 2, "the energy model (-C) trains on pairs of observed modalities of one tuple"
        return 1, ""

    def __init__(self, modalities: Sequence[str], config: SBMConfig, specs: Mapping[str, ModalitySpec] | None = None) -> None:
        _check(config)
        super().__init__(modalities, config, config.family, specs)
        m = self.num_modalities
        self.side = math.isqrt(config.latent_dim)
        self.sde = VPSDE(resolve_beta_min(config, m), config.beta_max)
        contrastive = config.guidance == "contrastive"
        self.aux = (AuxEncoders(m, config.aux_width, proj_dim=config.aux_proj_dim, specs=list(self.specs.values()))
                    if contrastive else None)
        self.score_net = UNet(
            m, resolve_dim(config, m), config.dim_mults, cond_dim=config.aux_proj_dim if contrastive else 0,
            time_scale=config.time_scale, heads=config.attn_heads, dim_head=config.attn_dim_head,
            level_attention=config.unet_level_attention, block_mult=config.unet_block_mult,
        )
        self.energy = PairEnergy(config.latent_dim, m, config.energy_width, config.energy_layers) if config.guidance == "energy" else None
        self.standardiser = (LatentStandardiser(m, config.latent_dim) if config.latent_standardise != "none" else None)

    # --- training stages --------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        stages = self.ae_stages()
        if self.aux is not None:
            stages.append(self._aux_stage())
        stages.append(self._score_stage())
        if self.energy is not None:
            stages.append(self._energy_stage())
        stages[-1].finalize = self.release_cache
        return stages

    def _score_stage(self) -> Stage:
        cfg = self.config
        return Stage(
            name="score", module=self._score_module(), loss=self._score_loss,
            hparams=StageHParams(steps=cfg.score_steps, batch_size=cfg.score_batch_size, lr=cfg.score_lr,
                                 ema_decay=cfg.score_ema_decay),
            prepare=self._prepare_score, reuse_key=self._score_key(),
        )

    def _score_module(self) -> nn.Module:
        """What the score stage trains and stores: the net, and with standardisation its statistics beside it."""
        if self.standardiser is None:
            return self.score_net
        return nn.ModuleDict({"net": self.score_net, "stats": self.standardiser})

    def _score_key(self) -> str | None:
        """Shared by SBM and SBM-C with the same autoencoders and score settings; None for -T (its score
        net is conditioned) and for unnamed data."""
        ae_keys = [s.reuse_key for s in self.ae_stages()]
        if self.config.guidance == "contrastive" or not all(ae_keys):
            return None
        fields = {k: v for k, v in to_dict(self.config).items()
                  if k not in _NOT_SCORE_TRAINING and (k not in _KEYED_WHEN_CHANGED or v != _KEYED_WHEN_CHANGED[k])}
        return config_hash({"stage": "sbm.score/1", "fields": fields, "autoencoders": ae_keys,
                            "modalities": list(self.modalities)}, length=32)

    def _prepare_score(self, batches: TrainBatches) -> None:
        """A fresh initialisation from (seed, "score"), so the stage does not depend on what was built before."""
        reset_parameters(self.score_net, derive_seed(self.config.seed, "score", "init"))
        self._prepare_cache(batches)
        if self.standardiser is not None:  # the moments of what the score net trains on: samples for a VAE
            cache = self.require_cache()
            self.standardiser.fit(cache.mu, cache.logvar, cache.presence, self.config.latent_standardise)

    def _energy_stage(self) -> Stage:
        cfg = self.config
        return Stage(
            name="energy", module=self.energy, loss=self._energy_loss,
            hparams=StageHParams(steps=cfg.energy_steps, batch_size=cfg.energy_batch_size, lr=cfg.energy_lr),
            prepare=self._prepare_energy,
        )

    def _prepare_energy(self, batches: TrainBatches) -> None:
        """A fresh initialisation from (seed, "energy"), as the score stage's from (seed, "score")."""
        reset_parameters(self.energy, derive_seed(self.config.seed, "energy", "init"))
        self._prepare_cache(batches)

    def _aux_stage(self) -> Stage:
        cfg = self.config
        key = None
        if cfg.data_id:
            key = config_hash({"stage": "sbm.contrastive/2", "width": cfg.aux_width, "proj": cfg.aux_proj_dim,
                               "steps": cfg.aux_steps, "lr": cfg.aux_lr, "batch": cfg.aux_batch_size,
                               "missing_rate": cfg.missing_rate, "modalities": list(self.modalities),
                               "data_id": cfg.data_id, "seed": cfg.seed}, length=32)
        return Stage(
            name="aux", module=self.aux, loss=self._aux_loss,
            hparams=StageHParams(steps=cfg.aux_steps, batch_size=cfg.aux_batch_size, lr=cfg.aux_lr),
            reuse_key=key, prepare=self._prepare_aux,
        )

    def _prepare_aux(self, _batches: TrainBatches) -> None:
        """A fresh initialisation from (seed, "aux"): SBM-VAE-T and SBM-RAE-T share this stage's key, so what
        it trains must not depend on what each model built before it (version 2 of the key: version 1 did)."""
        reset_parameters(self.aux, derive_seed(self.config.seed, "aux", "init"))

    def _prepare_cache(self, batches: TrainBatches) -> None:
        cache = self.ensure_cache(batches)
        if self.aux is not None and cache.features is None:
            cache.features = self._aux_features(batches)

    def _aux_features(self, batches: TrainBatches) -> Tensor:
        with torch.no_grad():
            return torch.cat([self._trunk_features(batch) for batch, _ in batches()])

    def _trunk_features(self, batch: Batch) -> Tensor:
        return torch.stack([self.aux.features(i, batch[m]) for i, m in enumerate(self.modalities)], 1)

    # --- losses -----------------------------------------------------------------------------------
    def _score_loss(self, batch: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        """DSM on cached latents while training; on the batch's own images in eval mode (validation)."""
        z, present, features = self._training_latents(batch, self.score_net.training, self.config.score_batch_size)
        cond = None
        if self.aux is not None:
            embeddings = self.aux.project_all(features)
            cond = condition_from(embeddings, random_given(present, self.config.cond_null_prob))
        x0 = torch.where(present[:, :, None], z, torch.randn_like(z))  # missing modalities: noise [A.10.1]
        mask = present[:, :, None, None].expand(-1, -1, self.side, self.side)
        losses = dsm_loss(self._net_score, self.sde, self._to_image(x0), eps=self.config.sde_eps,
                          weighting=self.config.loss_weighting, loss_mask=mask, cond=cond)
        return {"loss": losses.mean()}

    def _energy_loss(self, batch: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        z, present, _ = self._training_latents(batch, self.energy.training, self.config.energy_batch_size)
        return nce_loss(self.energy, self.sde, z, present, eps=self.config.sde_eps)

    def _aux_loss(self, batch: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        n = self.batch_size_of(batch)
        present = batch.get(PRESENCE_KEY)
        if present is None:
            present = torch.rand(n, self.num_modalities, device=self.device) >= self.config.missing_rate
        embeddings = self._observed_embeddings(batch, present.bool())
        loss = clip_loss(embeddings, present.bool(), self.aux.logit_scale)
        return {"loss": loss, "temperature": 1.0 / self.aux.logit_scale.exp()}

    def _observed_embeddings(self, batch: dict[str, Tensor], present: Tensor) -> Tensor:
        """Contrastive embeddings ``(B, M, P)`` with each modality's encoder run only on the tuples that observe
        it (zeros elsewhere, out of ``clip_loss``): unobserved images reach neither gradients nor BatchNorm."""
        if bool(present.all()):
            return self.aux.embed_all([batch[m] for m in self.modalities])
        n = self.batch_size_of(batch)
        out = torch.zeros(n, self.num_modalities, self.aux.proj_dim, device=present.device)
        for i, m in enumerate(self.modalities):
            rows = present[:, i].nonzero().squeeze(1)
            if rows.numel():
                out = out.index_put((rows, torch.full_like(rows, i)), self.aux.embed(i, batch[m][rows]))
        return out

    def _training_latents(
        self, batch: dict[str, Tensor], training: bool, batch_size: int
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(latents (B, M, D), presence (B, M), aux features or None): a random cached minibatch while
        training (VAE: a fresh posterior sample), else the batch's own images encoded; standardised when
        ``latent_standardise`` is on (the space the score and energy models live in)."""
        if training:
            cache: LatentCache = self.require_cache()
            idx = cache.draw(batch_size)
            features = cache.features[idx] if cache.features is not None else None
            return self._standardised(cache.latents(idx, sample=True)), cache.presence[idx], features
        z = torch.stack([self._posterior_sample(i, batch[m]) for i, m in enumerate(self.modalities)], 1)
        present = batch.get(PRESENCE_KEY, torch.ones(z.shape[:2], dtype=torch.bool, device=z.device)).bool()
        return self._standardised(z), present, self._trunk_features(batch) if self.aux is not None else None

    def _standardised(self, z: Tensor) -> Tensor:
        return z if self.standardiser is None else self.standardiser.standardise(z)

    def _posterior_sample(self, index: int, x: Tensor) -> Tensor:
        mu, logvar = self.autoencoders[index].posterior(x)
        return mu if logvar is None else mu + torch.randn_like(mu) * (0.5 * logvar).exp()

    # --- the score function -------------------------------------------------------------------------
    def _to_image(self, z: Tensor) -> Tensor:
        return z.reshape(z.shape[0], self.num_modalities, self.side, self.side)

    def _net_score(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """s_θ(x, t) = −ε_θ(x, t) / σ_t (the UNet predicts the noise; Song et al. 2021's parameterisation)."""
        _, sigma = self.sde.alpha_sigma(t)
        return -self.score_net(x, t, cond) / sigma[:, None, None, None]

    def score_fn(self, observed: Tensor, cond: Tensor | None) -> ScoreFn:
        """The sampler's score: the net (with its condition), wrapped in energy guidance for -C."""
        fn: ScoreFn = WithCondition(self._net_score, cond) if cond is not None else self._net_score
        if self.energy is not None:
            fn = EnergyGuidance(fn, self.energy, observed, self.config.energy_gamma)
        return fn

    # --- sampling ---------------------------------------------------------------------------------
    def _context(self, batch: Batch, given: Subset) -> Tensor | None:
        if self.aux is None:
            return None
        return self.aux.embed_all([batch[m].to(self.device) if m in given else None for m in self.modalities])

    def _generate(self, known: Tensor, observed: Tensor, context: Tensor | None) -> Tensor:
        cfg, n = self.config, known.shape[0]
        cond = None
        if self.aux is not None:
            cond = condition_from(context, observed) if context is not None else known.new_zeros(n, cfg.aux_proj_dim)
        mask = observed[:, :, None, None].expand(-1, -1, self.side, self.side)
        spec = Known(mask, self._to_image(self._standardised(known)), cfg.reimpose) if observed.any() else None
        x_init = self.sde.prior_sample((n, self.num_modalities, self.side, self.side), self.device)
        grid = {"grid": cfg.sampler_grid} if cfg.sampler_grid else {}
        result = get_sampler(cfg.sampler)(
            self.score_fn(observed, cond), self.sde, x_init, known=spec, steps=cfg.sampler_steps,
            corrector_steps=cfg.corrector_steps, snr=cfg.snr, t_end=cfg.t_end, **grid,
        )
        self.last_nfe = result.nfe
        z = result.x.reshape(n, self.num_modalities, -1)
        if self.standardiser is None:
            return z
        return torch.where(observed[:, :, None], known, self.standardiser.unstandardise(z))  # observed: exact
