"""What every latent-diffusion multimodal model here shares: per-modality autoencoders, a cache of
their latents over the train split, and the contract's sampling API on top of one ``_generate``.

Used by SBM (Wesego & Rooshenas 2024) and MLD (Bounoua et al. 2024). A subclass implements
``_generate(known, observed, context)``: latents ``(B, M, D)`` for every modality, given the observed
latents ``known`` ``(B, M, D)`` (read where ``observed`` ``(B, M)`` is True, per sample). Several
conditional queries on one batch run as one ``_generate`` call over the stacked queries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from latentdiff.autoencoders import AESpec, AutoencoderConfig, UnimodalAE, autoencoder_stage
from mmbench.contract import (
    Batch,
    Capability,
    ConditionalAnswer,
    ConditionalRequest,
    MultimodalModel,
    Stage,
    Subset,
    evaluating,
)
from mmbench.data.presence import PRESENCE_KEY
from mmbench.data.source import ModalitySpec

TrainBatches = Callable[[], Iterator[tuple[dict[str, Tensor], Tensor]]]


@dataclass
class LatentCache:
    """Encoder outputs over the whole train split, computed once (no stage re-encodes images)."""

    mu: Tensor  # (N, M, D): VAE posterior means or RAE codes
    logvar: Tensor | None  # (N, M, D) for VAEs
    presence: Tensor  # (N, M) bool
    features: Tensor | None = None  # (N, M, F): auxiliary encoder features (contrastive guidance)

    def __len__(self) -> int:
        return self.mu.shape[0]

    def draw(self, batch_size: int) -> Tensor:
        """Random tuple indices (with replacement, from torch's global RNG, so resuming is exact)."""
        return torch.randint(len(self), (min(batch_size, len(self)),), device=self.mu.device)

    def latents(self, idx: Tensor, sample: bool) -> Tensor:
        """Latents of tuples ``idx``: a posterior sample (VAE, ``sample=True``) or the mean/code."""
        mu = self.mu[idx]
        if sample and self.logvar is not None:
            return mu + torch.randn_like(mu) * (0.5 * self.logvar[idx]).exp()
        return mu


def simulated_presence(n: int, m: int, rate: float, generator: torch.Generator) -> Tensor:
    """Each (tuple, modality) missing with probability ``rate``, independently (paper A.10.1); a tuple
    left with nothing keeps one random modality."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"missing_rate must lie in [0, 1), got {rate}")
    present = torch.rand(n, m, generator=generator) >= rate
    empty = ~present.any(1)
    keep = torch.randint(m, (n,), generator=generator)
    present[empty, keep[empty]] = True
    return present


class LatentGenerativeModel(MultimodalModel):
    """Base of SBM and MLD: independent unimodal autoencoders tied by a model of their joint latents."""

    capabilities = frozenset({
        Capability.CONDITIONAL, Capability.UNCONDITIONAL, Capability.ENCODE, Capability.LATENT_INFERENCE,
        Capability.INCOMPLETE,  # autoencoders on the tuples observing their modality; latent models read the mask
    })
    packs_requests = True  # ``_generate`` reads the observed modalities per sample

    modality_kinds = frozenset({"image", "mask", "attributes"})

    def __init__(self, modalities: Sequence[str], config: AutoencoderConfig, family: str,
                 specs: Mapping[str, ModalitySpec] | None = None) -> None:
        super().__init__(modalities, config, specs)
        self.ae_spec = AESpec.from_config(config, family)
        self.autoencoders = nn.ModuleList(UnimodalAE(self.ae_spec, self.specs[m]) for m in self.modalities)
        self.cache: LatentCache | None = None

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    @property
    def latent_dim(self) -> int:
        return self.ae_spec.latent_dim

    def ae_stages(self) -> list[Stage]:
        cfg = self.config
        return [autoencoder_stage(ae, m, cfg.data_id, cfg.seed) for ae, m in zip(self.autoencoders, self.modalities, strict=True)]

    # --- latents ----------------------------------------------------------------------------------
    def encode_latents(self, batch: Batch, which: Iterable[str]) -> Tensor:
        """Inference latents ``(B, M, D)`` of the named modalities; zeros elsewhere."""
        which = set(which)
        missing = sorted(which - set(batch))
        if missing:
            raise KeyError(f"the batch lacks modalities {missing}; it has {sorted(batch)}")
        out = torch.zeros(self.batch_size_of(batch), self.num_modalities, self.latent_dim, device=self.device)
        for i, m in enumerate(self.modalities):
            if m in which:
                out[:, i] = self.autoencoders[i].latent(batch[m].to(self.device))
        return out

    def decode_latents(self, z: Tensor, targets: Iterable[str]) -> dict[str, Tensor]:
        targets = set(targets)
        return {m: self.autoencoders[i].decode(z[:, i]) for i, m in enumerate(self.modalities) if m in targets}

    def ensure_cache(self, batches: TrainBatches) -> LatentCache:
        """Encode the train split once (frozen autoencoders), keeping mu/logvar for VAEs."""
        if self.cache is None:
            self.cache = self._build_cache(batches)
        return self.cache

    def release_cache(self) -> None:
        self.cache = None

    def require_cache(self) -> LatentCache:
        if self.cache is None:
            raise RuntimeError(
                f"{type(self).__name__}: the latent cache is empty. Training stages fill it in their prepare "
                "hook; run them through mmbench.training.train_model (or call ensure_cache first)."
            )
        return self.cache

    def _build_cache(self, batches: TrainBatches) -> LatentCache:
        mus, logvars, presences = [], [], []
        with torch.no_grad():
            for batch, _ in batches():
                stats = [ae.posterior(batch[m].to(self.device)) for ae, m in zip(self.autoencoders, self.modalities, strict=True)]
                mus.append(torch.stack([mu for mu, _ in stats], 1))
                if self.ae_spec.family == "vae":
                    logvars.append(torch.stack([lv for _, lv in stats], 1))
                if PRESENCE_KEY in batch:
                    presences.append(batch[PRESENCE_KEY].to(self.device, torch.bool))
        mu = torch.cat(mus)
        presence = torch.cat(presences) if presences else self._presence_for(mu.shape[0])
        return LatentCache(mu, torch.cat(logvars) if logvars else None, presence)

    def _presence_for(self, n: int) -> Tensor:
        rate = float(getattr(self.config, "missing_rate", 0.0))
        generator = torch.Generator().manual_seed(int(self.config.seed))
        return simulated_presence(n, self.num_modalities, rate, generator).to(self.device)

    def generate_latents(self, known: Tensor, observed: Tensor, context: Tensor | None = None) -> Tensor:
        """Latents ``(B, M, D)`` of every modality given the ``observed`` ``(B, M)`` ones in ``known``
        (one sampler pass, no decoding; eval mode and no grad, train state restored). For benchmarks
        and metrics that work in latent space; ``last_nfe`` holds the pass's score evaluations."""
        with evaluating(self):
            return self._generate(known, observed, context)

    # --- the contract -----------------------------------------------------------------------------
    def _index(self, names: Iterable[str]) -> list[int]:
        names = set(names)
        return [i for i, m in enumerate(self.modalities) if m in names]

    def _encode(self, batch: Batch, given: Subset) -> Tensor:
        z = self.encode_latents(batch, given)
        return z[:, self._index(given)].flatten(1)

    def _decode(self, latent: Tensor, targets: Subset) -> dict[str, Tensor]:
        idx, d = self._index(targets), self.latent_dim
        if latent.dim() != 2 or latent.shape[1] not in (len(idx) * d, self.num_modalities * d):
            raise ValueError(
                f"decode expects (B, {len(idx) * d}) (the targets' latents in modality order, as encode returns "
                f"them) or (B, {self.num_modalities * d}) (every modality), got {tuple(latent.shape)}"
            )
        z = latent.reshape(latent.shape[0], -1, d)
        if z.shape[1] == len(idx) and len(idx) != self.num_modalities:
            full = z.new_zeros(z.shape[0], self.num_modalities, d)
            full[:, idx] = z
            z = full
        return self.decode_latents(z, targets)

    def _sample_conditional(self, batch: Batch, given: Subset, targets: Subset) -> dict[str, Tensor]:
        return self._sample_conditional_many(batch, [(given, targets)])[0]

    def _sample_conditional_many(self, batch: Batch, queries: Sequence[tuple[Subset, Subset]]) -> list[dict[str, Tensor]]:
        z = self._generate_queries(batch, [g for g, _ in queries])
        return [self.decode_latents(zq, targets) for zq, (_, targets) in zip(z, queries, strict=True)]

    def _sample_unconditional(self, n: int) -> dict[str, Tensor]:
        known = torch.zeros(n, self.num_modalities, self.latent_dim, device=self.device)
        observed = torch.zeros(n, self.num_modalities, dtype=torch.bool, device=self.device)
        return self.decode_latents(self._generate(known, observed, None), self.modalities)

    def _infer_latent(self, batch: Batch, given: Subset, target: str) -> Tensor:
        return self._infer_latent_many(batch, [(given, target)])[0]

    def _infer_latent_many(self, batch: Batch, queries: Sequence[tuple[Subset, str]]) -> list[Tensor]:
        """One sampler pass for every query: the same latents ``sample_conditional_many`` decodes."""
        return self._target_latents(self._generate_queries(batch, [g for g, _ in queries]), queries)

    def _sample_with_latents_many(
        self, batch: Batch, queries: Sequence[tuple[Subset, str]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """One sampler pass: each target's latent and its decoding."""
        z = self._generate_queries(batch, [g for g, _ in queries])
        images = [self.decode_latents(zq, frozenset({t}))[t] for zq, (_, t) in zip(z, queries, strict=True)]
        return images, self._target_latents(z, queries)

    def _target_latents(self, z: Sequence[Tensor], queries: Sequence[tuple[Subset, str]]) -> list[Tensor]:
        return [zq[:, self.modalities.index(target)] for zq, (_, target) in zip(z, queries, strict=True)]

    def _generate_queries(self, batch: Batch, givens: Sequence[Subset]) -> list[Tensor]:
        """One ``_generate`` pass over every query stacked along the batch; latents per query."""
        union = frozenset().union(*givens)
        known = self.encode_latents(batch, union)
        context = self._context(batch, union)
        n, q = known.shape[0], len(givens)
        masks = torch.tensor([[m in g for m in self.modalities] for g in givens], dtype=torch.bool, device=self.device)
        observed = masks.repeat_interleave(n, dim=0)
        tiled_context = None if context is None else context.repeat(q, *([1] * (context.dim() - 1)))
        z = self._generate(known.repeat(q, 1, 1), observed, tiled_context)
        return list(z.split(n))

    def _sample_conditional_requests(self, requests: Sequence[ConditionalRequest]) -> list[ConditionalAnswer]:
        """One ``_generate`` pass over every request, each sample conditioned on its own request's subset."""
        if not requests:
            return []
        knowns, masks, contexts = [], [], []
        for r in requests:
            known = self.encode_latents(r.batch, r.given)
            knowns.append(known)
            mask = torch.tensor([m in r.given for m in self.modalities], dtype=torch.bool, device=self.device)
            masks.append(mask.expand(known.shape[0], -1))
            contexts.append(self._context(r.batch, r.given))
        context = None if any(c is None for c in contexts) else torch.cat(contexts)
        z = self._generate(torch.cat(knowns), torch.cat(masks), context)
        answers = []
        for zr, r in zip(z.split([k.shape[0] for k in knowns]), requests, strict=True):
            latents = {t: zr[:, self.modalities.index(t)] for t in r.targets} if r.latents else {}
            answers.append(ConditionalAnswer(self.decode_latents(zr, r.targets), latents))
        return answers

    # --- what subclasses implement -------------------------------------------------------------
    def _context(self, batch: Batch, given: Subset) -> Tensor | None:
        """Per-modality information ``(B, M, ...)`` the sampler needs besides latents (default: none)."""
        return None

    def _generate(self, known: Tensor, observed: Tensor, context: Tensor | None) -> Tensor:
        raise NotImplementedError
