"""MLD: multimodal latent diffusion with multi-time masked training.

Source: Bounoua, Franzese & Michiardi 2024, "Multi-Modal Latent Diffusion" (Entropy;
``MustaphaBounoua/MLD``: ``src/models/MLD.py``, ``src/components/mm_sde.py``, ``mlp_unet.py``,
``experiments/mmnist/mmnist_mld.py``). Wesego & Rooshenas 2024 (A.9) train it with the same
unimodal autoencoders as their models: here the RAEs of SBM-RAE, shared through ``latentdiff`` (the
same config fields, stage names and reuse keys).

Facts used: per-modality latents concatenated and standardised per dimension; an MLP UNet that
predicts the noise (``score = net / σ_t``) with a *per-modality* time input fed to an MLP (no
sinusoids); VP-SDE β ∈ [0.1, 20]; multi-time masked training: with probability ``d`` = 0.2 a random
non-empty, non-full subset of modalities stays clean, its times are 0 and it is masked out of the
loss (rescaled by D / (D − clean dims)); incomplete tuples (``mmbench.data.presence``): the clean subset is
drawn among the observed modalities, an unobserved latent enters as pure noise at time T and leaves the
loss (SBM's A.10.1 scheme), the standardisation uses each modality's observed codes; Euler–Maruyama sampling; conditional generation clamps the
observed latents clean with time 0. **Decisions**: the clean subset is drawn per sample (MLD draws
one per batch); an EMA of the weights (decay 0.999) is sampled from, as MLD's; statistics over the whole
train split (MLD uses the first batch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from latentdiff.autoencoders import EPOCH, AutoencoderConfig
from latentdiff.base import LatentGenerativeModel, TrainBatches
from latentdiff.losses import sample_times
from latentdiff.sampling import Known, get_sampler
from latentdiff.sde import VPSDE, ScoreFn
from mmbench.config import src
from mmbench.contract import Stage, StageHParams
from mmbench.data.presence import batch_presence
from mmbench.data.source import ModalitySpec
from mmbench.scaling import Scale, present

MLD_DIM_PER_SCORE_WIDTH = 12  # the defaults' ratio: MLD's score net 1536 channels vs SBM's UNet 128


@dataclass(frozen=True)
class MLDConfig(AutoencoderConfig):
    # the unimodal autoencoders: AutoencoderConfig's fields, as every latent-diffusion model (Wesego &
    # Rooshenas A.9: MLD uses the SBM autoencoders), so MLD and SBM-RAE share RAEs
    # the score model
    dim: int = src(1536, "MLD mmnist_mld.py: init_dim 512*3")
    time_dim: int = src(512, "MLD mmnist_mld.py: time_dim 512")
    dim_mults: tuple[int, ...] = src((1, 1), "MLD mmnist_mld.py: unet_architecture (1, 1)")
    groups: int = src(32, "MLD mmnist_mld.py: group_norm 32")
    beta_min: float = src(0.1, "MLD mmnist_mld.py: betas [0.1, 20]")
    beta_max: float = src(20.0, "MLD mmnist_mld.py: betas [0.1, 20]")
    sde_eps: float = src(1e-5, "as SBM's t ~ U(eps, 1) (MLD: 1e-6)")
    clean_prob: float = src(0.2, "MLD mmnist_mld.py: --d 0.2")
    score_steps: int = src(200 * EPOCH, "mmbench: 200 epochs (MLD trains 3000 on PolyMNIST)")
    score_lr: float = src(1e-4, "MLD mmnist_mld.py: lr 1e-4")
    score_warmup_steps: int = src(0, "MLD: none (a constant lr); at lr 1e-3 the net needs one (docs/models.md)",
                                  keyed_when_set=True)
    score_batch_size: int = src(256, "MLD mmnist_mld.py: batch_size 256")
    score_ema_decay: float = src(0.999, "MLD MLD.py: EMA(score, decay=0.999), sampled from (use_ema=True)")
    sampler: str = src("euler", "MLD: Euler-Maruyama (PROTOCOL.md §2)")
    sampler_steps: int = src(250, "MLD: N_step 250")
    t_end: float = src(1e-3, "MLD euler sampler ends at t = 0.001")

    @staticmethod
    def scaled(scale: Scale) -> dict[str, object]:
        """A budget's scale: the shared autoencoders and the score net; the net keeps its ratio to SBM's
        (1536 vs 128 channels), which is also a multiple of its 32 norm groups."""
        return present(
            width=scale.width, ae_steps=scale.steps, score_steps=scale.steps, ae_batch_size=scale.batch_size,
            score_batch_size=scale.batch_size, sampler_steps=scale.sampler_steps, latent_dim=scale.latent_per_modality,
            dim=None if scale.score_width is None else MLD_DIM_PER_SCORE_WIDTH * scale.score_width,
        )


class ResidualMLPBlock(nn.Module):
    """GroupNorm–SiLU–Linear (+ time) → GroupNorm–SiLU–Linear, plus a linear skip (MLD ``ResnetBlock``)."""

    def __init__(self, dim: int, dim_out: int, time_dim: int, groups: int) -> None:
        super().__init__()
        for width in (dim, dim_out):
            if width % groups:
                raise ValueError(f"MLD width {width} is not divisible by groups={groups}; change dim or groups")
        self.time = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, dim_out))
        self.block1 = nn.Sequential(nn.GroupNorm(groups, dim), nn.SiLU(), nn.Linear(dim, dim_out))
        self.block2 = nn.Sequential(nn.GroupNorm(groups, dim_out), nn.SiLU(), nn.Linear(dim_out, dim_out))
        self.skip = nn.Linear(dim, dim_out) if dim != dim_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.block2(self.block1(x) + self.time(emb)) + self.skip(x)


class MLPUNet(nn.Module):
    """MLD's ``UnetMLP`` without attention: ``(B, D)``, per-modality times ``(B, M)`` → ``(B, D)``."""

    def __init__(self, data_dim: int, num_modalities: int, dim: int, time_dim: int, dim_mults: tuple[int, ...], groups: int) -> None:
        super().__init__()
        dims = [dim, *(dim * m for m in dim_mults)]
        pairs = list(zip(dims[:-1], dims[1:], strict=True))
        self.init = nn.Linear(data_dim, dim)
        self.time_mlp = nn.Sequential(nn.Linear(num_modalities, time_dim), nn.GELU(), nn.Linear(time_dim, time_dim))
        self.downs = nn.ModuleList(nn.ModuleList([ResidualMLPBlock(a, a, time_dim, groups), nn.Linear(a, b)]) for a, b in pairs)
        self.mid1 = ResidualMLPBlock(dims[-1], dims[-1], time_dim, groups)
        self.mid2 = ResidualMLPBlock(dims[-1], dims[-1], time_dim, groups)
        self.ups = nn.ModuleList(nn.ModuleList([ResidualMLPBlock(b + a, b, time_dim, groups), nn.Linear(b, a)]) for a, b in reversed(pairs))
        self.final = ResidualMLPBlock(2 * dim, dim, time_dim, groups)
        self.out = nn.Sequential(nn.GroupNorm(groups, dim), nn.SiLU(), nn.Linear(dim, data_dim))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: Tensor, times: Tensor) -> Tensor:
        emb = self.time_mlp(times)
        x = self.init(x)
        first, skips = x, []
        for block, down in self.downs:
            x = block(x, emb)
            skips.append(x)
            x = down(x)
        x = self.mid2(self.mid1(x, emb), emb)
        for block, up in self.ups:
            x = up(block(torch.cat([x, skips.pop()], dim=1), emb))
        return self.out(self.final(torch.cat([x, first], dim=1), emb))


class MLDScore(nn.Module):
    """The trained score model with the latent standardisation it was trained on (saved with it)."""

    def __init__(self, num_modalities: int, latent_dim: int, config: MLDConfig) -> None:
        super().__init__()
        d = num_modalities * latent_dim
        self.net = MLPUNet(d, num_modalities, config.dim, config.time_dim, config.dim_mults, config.groups)
        self.register_buffer("mean", torch.zeros(num_modalities, latent_dim))
        self.register_buffer("std", torch.ones(num_modalities, latent_dim))


def random_clean_subsets(n: int, m: int, prob: float, device: torch.device) -> Tensor:
    """``(n, m)`` bool: with probability ``prob`` a uniformly random non-empty, non-full subset, else none."""
    if m < 2:
        return torch.zeros(n, m, dtype=torch.bool, device=device)
    codes = torch.randint(1, 2**m - 1, (n,), device=device)  # the 2^m − 2 non-empty, non-full subsets
    bits = (codes[:, None] >> torch.arange(m, device=device)) & 1
    chosen = torch.rand(n, device=device) < prob
    return bits.bool() & chosen[:, None]


class MLD(LatentGenerativeModel):
    """Multi-modal latent diffusion over deterministic unimodal autoencoders."""

    Config = MLDConfig
    paper = "Bounoua, Franzese & Michiardi 2024, Multi-Modal Latent Diffusion (Entropy); MustaphaBounoua/MLD"

    def __init__(self, modalities: Sequence[str], config: MLDConfig, specs: Mapping[str, ModalitySpec] | None = None) -> None:
        get_sampler(config.sampler)
        super().__init__(modalities, config, "rae", specs)
        self.sde = VPSDE(config.beta_min, config.beta_max)
        self.score_model = MLDScore(self.num_modalities, self.latent_dim, config)

    def stages(self) -> list[Stage]:
        cfg = self.config
        score = Stage(
            name="score", module=self.score_model, loss=self._loss,
            hparams=StageHParams(steps=cfg.score_steps, batch_size=cfg.score_batch_size, lr=cfg.score_lr,
                                 warmup_steps=cfg.score_warmup_steps, ema_decay=cfg.score_ema_decay),
            prepare=self._prepare, finalize=self.release_cache,
        )
        return [*self.ae_stages(), score]

    def _prepare(self, batches: TrainBatches) -> None:
        """Cache the codes and store their per-dimension mean and std (the standardisation)."""
        cache = self.ensure_cache(batches)
        codes, present = cache.mu, cache.presence
        for i in range(self.num_modalities):  # over the tuples that observe modality i (all, for complete data)
            observed = codes[:, i] if bool(present[:, i].all()) else codes[present[:, i], i]
            self.score_model.mean[i].copy_(observed.mean(0))
            self.score_model.std[i].copy_(observed.std(0).clamp_min(1e-6))

    def _standardise(self, z: Tensor) -> Tensor:
        return (z - self.score_model.mean) / self.score_model.std

    def _unstandardise(self, x: Tensor) -> Tensor:
        return x * self.score_model.std + self.score_model.mean

    def _loss(self, batch: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        """Multi-time masked denoising loss (MLD ``VP_SDE.train_step``, unweighted)."""
        if self.score_model.training:
            cache = self.require_cache()
            idx = cache.draw(self.config.score_batch_size)
            z, present = cache.latents(idx, sample=False), cache.presence[idx]
        else:
            z = self.encode_latents(batch, self.modalities)
            present = batch_presence(batch)
        x0 = self._standardise(z)
        n, m, d = x0.shape
        present = torch.ones(n, m, dtype=torch.bool, device=x0.device) if present is None else present.bool()
        clean = random_clean_subsets(n, m, self.config.clean_prob, x0.device) & present
        clean &= ((present & ~clean).any(1, keepdim=True))  # a tuple keeps at least one observed modality to denoise
        t = sample_times(n, self.config.sde_eps, self.sde.T, x0.device)
        noise = torch.randn_like(x0)
        x_t = torch.where(clean[:, :, None], x0, self.sde.perturb(x0, t, noise))
        times = t[:, None] * (~clean).to(t.dtype)
        missing = ~present
        if missing.any():  # unobserved latents: pure noise at time T, out of the loss (as SBM's A.10.1)
            x_t = torch.where(missing[:, :, None], torch.randn_like(x0), x_t)
            times = torch.where(missing, torch.full_like(times, self.sde.T), times)
        out = self.score_model.net(x_t.flatten(1), times).reshape(n, m, d)
        denoised = ~clean & present
        free = denoised[:, :, None].to(x0.dtype)
        per_sample = ((out + noise).square() * free).flatten(1).sum(1)
        rescale = m / denoised.sum(1).to(x0.dtype)  # D / (D − clean dims), every modality has d dims
        return {"loss": (per_sample * rescale).mean() / (m * d)}

    def score_fn(self, observed: Tensor) -> ScoreFn:
        """score(x, t) = net(x, t·(1 − observed)) / σ_t: observed modalities are told they are clean."""

        def score(x: Tensor, t: Tensor) -> Tensor:
            times = t[:, None] * (~observed).to(t.dtype)
            _, sigma = self.sde.alpha_sigma(t)
            return self.score_model.net(x.flatten(1), times).reshape(x.shape) / sigma[:, None, None]

        return score

    def _generate(self, known: Tensor, observed: Tensor, context: Tensor | None) -> Tensor:
        cfg = self.config
        x_known = self._standardise(known)
        spec = Known(observed[:, :, None].expand_as(x_known), x_known, "clean") if observed.any() else None
        x_init = self.sde.prior_sample(tuple(x_known.shape), self.device)
        result = get_sampler(cfg.sampler)(self.score_fn(observed), self.sde, x_init, known=spec,
                                          steps=cfg.sampler_steps, t_end=cfg.t_end)
        self.last_nfe = result.nfe
        return self._unstandardise(result.x)
