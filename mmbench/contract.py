"""The model contract every mmbench model implements (in MultiVae's vocabulary).

A *batch* is a dict from modality name to a float tensor ``(B, C, H, W)`` in [0, 1]; a *subset* of
modalities is a ``frozenset`` of names. A model declares its modalities, its capabilities and its
training stages, and answers ``encode``, ``decode``, ``sample_conditional`` and
``sample_unconditional``. Public methods check the declared capabilities (an undeclared one raises
:class:`CapabilityError`), run without gradients, and never leave the model's train/eval state changed.

Randomness: models draw from torch's global RNG; callers seed it (``mmbench.seeding.seed_everything``).
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mmbench.hashing import config_hash
from mmbench.seeding import forked_rng

Batch = Mapping[str, Tensor]
Subset = frozenset[str]


class Capability(enum.StrEnum):
    """What a model can do; metrics declare which of these they need."""

    CONDITIONAL = "conditional"  # sample_conditional for any non-empty given subset
    UNCONDITIONAL = "unconditional"  # sample_unconditional
    ENCODE = "encode"  # encode(batch, given) -> latent; decode(latent, targets)
    LATENT_INFERENCE = "latent_inference"  # infer_latent(batch, given, target), for latent cosine similarity
    # trains on incomplete tuples: every stage's objective over the observed subset of each tuple, read from the
    # batch's presence mask (mmbench.data.presence.PRESENCE_KEY); the η < 1 rows of a suite need it
    INCOMPLETE = "incomplete"


class CapabilityError(RuntimeError):
    """A caller asked a model for something it does not declare."""


@dataclass(frozen=True)
class ConditionalRequest:
    """Samples of ``targets`` given ``given`` for every tuple of ``batch``; with ``latents``, also the latent
    each target is decoded from (as ``sample_with_latents_many`` returns it)."""

    batch: Batch
    given: Subset
    targets: Subset
    latents: bool = False


@dataclass(frozen=True)
class ConditionalAnswer:
    """What one :class:`ConditionalRequest` gets: ``{target: images}`` and, if asked, ``{target: latents}``."""

    images: dict[str, Tensor]
    latents: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class StageHParams:
    """How one training stage runs (paper values live in each model's config)."""

    steps: int  # optimiser steps (the budget's unit; epochs follow from steps and data size)
    batch_size: int = 256
    lr: float = 1e-3
    amsgrad: bool = False
    weight_decay: float = 0.0
    grad_clip: float | None = None  # max global grad-norm, None = off
    lr_schedule: str = "constant"  # "constant" | "cosine"
    warmup_steps: int = 0
    checkpoint_every: int = 500  # steps between checkpoints (also one at the end of each epoch)
    ema_decay: float = 0.0  # > 0: keep an EMA of the parameters and finish the stage with it (mmbench.training.ema)


LossFn = Callable[[dict[str, Tensor], Tensor], dict[str, Tensor]]


@dataclass
class Stage:
    """One training stage: a module whose parameters are trained by minimising ``loss``.

    ``loss(batch, labels)`` returns a dict with a scalar ``"loss"`` (what is minimised) and any other
    scalars worth logging. ``modalities`` limits which modalities are moved to the device for this stage.
    ``reuse_key``: a content hash of everything that determines the trained state (config of this stage,
    data hash, seed); when set, the harness stores the result under that key and any later job with the
    same key loads it instead of training (e.g. SBM's unimodal autoencoders shared by six variants).
    ``prepare(train_batches)`` runs once before training (e.g. compute latent statistics from frozen
    earlier stages); ``train_batches`` yields ``(batch, labels)`` over the whole train split.
    ``finalize()`` runs after training or after loading a reused state.
    A stage trained with an EMA (``hparams.ema_decay`` > 0) folds the decay into its ``reuse_key``, so an
    averaged state and a plain one never share an artifact.
    """

    name: str
    module: nn.Module
    loss: LossFn
    hparams: StageHParams
    modalities: tuple[str, ...] | None = None
    reuse_key: str | None = None
    prepare: Callable[[Callable[[], Iterator[tuple[dict[str, Tensor], Tensor]]]], None] | None = None
    finalize: Callable[[], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reuse_key and self.hparams.ema_decay:
            self.reuse_key = config_hash({"reuse_key": self.reuse_key, "ema_decay": self.hparams.ema_decay}, length=32)

    def parameters(self) -> list[nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Eval mode and no grad inside; the previous train/eval state of every submodule is restored."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes.items():
            m.train(mode)


class MultimodalModel(nn.Module):
    """Base class of every model. Subclasses implement the ``_``-prefixed methods they declare.

    Subclasses set ``Config`` (a dataclass; defaults = the paper's values), ``capabilities`` and a
    ``paper`` line, and implement ``stages()``.
    """

    Config: ClassVar[type]
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    paper: ClassVar[str] = ""
    # True: ``sample_conditional_requests`` answers requests on different tuples and subsets in one sampler
    # pass (per-sample conditioning); False: one call per request.
    packs_requests: ClassVar[bool] = False

    # the modality kinds (mmbench.nets.modality) the model's networks take; a model whose nets assume
    # images keeps the default and is refused data with masks or attributes
    modality_kinds: ClassVar[frozenset[str]] = frozenset({"image"})
    # why a model without Capability.INCOMPLETE cannot train on incomplete tuples (``mmbench validate`` says it)
    incomplete_reason: ClassVar[str] = ""

    @classmethod
    def min_observed(cls, config: Any) -> tuple[int, str]:
        """How many modalities every incomplete training tuple must observe under ``config``, and why (1: any
        tuple with one observed modality trains); ``mmbench validate`` refuses rows whose η·M falls short."""
        return 1, ""

    def __init__(self, modalities: Sequence[str], config: Any, specs: Mapping[str, Any] | None = None) -> None:
        """``specs``: ``{modality: mmbench.data.source.ModalitySpec}`` (kind and item shape); None = every
        modality an RGB 28×28 image (PolyMNIST)."""
        super().__init__()
        if len(modalities) < 2:
            raise ValueError(f"a multimodal model needs at least 2 modalities, got {list(modalities)}")
        if len(set(modalities)) != len(modalities):
            raise ValueError(f"modality names must be unique, got {list(modalities)}")
        from mmbench.nets.modality import resolve_specs

        self.modalities: tuple[str, ...] = tuple(modalities)
        self.config = config
        self.specs = resolve_specs(self.modalities, specs)
        unsupported = {m: s.kind for m, s in self.specs.items() if s.kind not in self.modality_kinds}
        if unsupported:
            raise ValueError(
                f"{type(self).__name__} takes {sorted(self.modality_kinds)} modalities, not {unsupported}; "
                "drop the model from the suite or give it networks for these kinds (mmbench.nets.modality)"
            )

    # --- what the trainer uses -------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        raise NotImplementedError(f"{type(self).__name__} must define its training stages")

    # --- public API (capability-checked, eval mode, no grad) ----------------------------------------
    def has(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def answers(self, given: Subset, target: str) -> bool:
        """Whether ``sample_conditional`` answers ``target`` given exactly ``given`` (default: every query,
        when the model declares conditional sampling). A model that answers only some queries (a
        supervised image → attributes net) says so here; metrics then record why a key has no value."""
        return Capability.CONDITIONAL in self.capabilities

    def unanswered(self, given: Subset, target: str) -> str | None:
        """Why ``answers(given, target)`` is False (None when the model answers it)."""
        if self.answers(frozenset(given), target):
            return None
        return f"{type(self).__name__} does not answer {target} given {'+'.join(sorted(given))}"

    def _require(self, capability: Capability) -> None:
        if capability not in self.capabilities:
            raise CapabilityError(
                f"{type(self).__name__} does not support {capability.value!r} "
                f"(it declares: {sorted(c.value for c in self.capabilities) or 'nothing'})"
            )

    def _require_answers(self, given: Subset, targets: Subset) -> None:
        for target in sorted(targets):
            reason = self.unanswered(given, target)
            if reason:
                raise CapabilityError(f"{reason}; ask only queries for which answers(given, target) is True")

    def _check_target_queries(self, queries: Sequence[tuple[Subset, str]]) -> list[tuple[Subset, str]]:
        """(given subset, one target) queries with both checked against the model's modalities."""
        checked = []
        for given, target in queries:
            self._check_subset(frozenset({target}), "target")
            checked.append((self._check_subset(given, "given"), target))
        return checked

    def _check_subset(self, subset: Subset, what: str) -> Subset:
        subset = frozenset(subset)
        unknown = subset - set(self.modalities)
        if unknown:
            raise ValueError(f"{what} names unknown modalities {sorted(unknown)}; known: {list(self.modalities)}")
        if not subset:
            raise ValueError(f"{what} must name at least one modality")
        return subset

    def encode(self, batch: Batch, given: Subset) -> Tensor:
        """The model's latent for the given modalities ``(B, D)`` (posterior mean where there is one)."""
        self._require(Capability.ENCODE)
        given = self._check_subset(given, "given")
        with evaluating(self):
            return self._encode(batch, given)

    def decode(self, latent: Tensor, targets: Subset) -> dict[str, Tensor]:
        """Images of ``targets`` decoded from a latent as returned by ``encode``/``infer_latent``."""
        self._require(Capability.ENCODE)
        targets = self._check_subset(targets, "targets")
        with evaluating(self):
            return self._decode(latent, targets)

    def sample_conditional(self, batch: Batch, given: Subset, targets: Subset | None = None) -> dict[str, Tensor]:
        """Generate ``targets`` (default: every modality not given) from the observed ``given`` ones."""
        self._require(Capability.CONDITIONAL)
        given = self._check_subset(given, "given")
        targets = self._check_subset(targets or frozenset(self.modalities) - given, "targets")
        self._require_answers(given, targets)
        with evaluating(self):
            return self._sample_conditional(batch, given, targets)

    def sample_conditional_many(
        self, batch: Batch, queries: Sequence[tuple[Subset, Subset]]
    ) -> list[dict[str, Tensor]]:
        """Answer several (given, targets) queries on the same batch; models may batch them together."""
        self._require(Capability.CONDITIONAL)
        checked = [
            (self._check_subset(g, "given"), self._check_subset(t, "targets")) for g, t in queries
        ]
        for g, t in checked:
            self._require_answers(g, t)
        with evaluating(self):
            return self._sample_conditional_many(batch, checked)

    def sample_unconditional(self, n: int) -> dict[str, Tensor]:
        """``n`` joint samples of every modality."""
        self._require(Capability.UNCONDITIONAL)
        if n < 1:
            raise ValueError(f"n must be positive, got {n}")
        with evaluating(self):
            return self._sample_unconditional(n)

    def infer_latent(self, batch: Batch, given: Subset, target: str) -> Tensor:
        """The latent from which the model generates ``target`` given ``given`` (``(B, D)``).

        Compared with ``encode(batch, {target})`` by the latent cosine similarity metric.
        """
        self._require(Capability.LATENT_INFERENCE)
        given = self._check_subset(given, "given")
        self._check_subset(frozenset({target}), "target")
        with evaluating(self):
            return self._infer_latent(batch, given, target)

    def infer_latent_many(self, batch: Batch, queries: Sequence[tuple[Subset, str]]) -> list[Tensor]:
        """``infer_latent`` for several (given, target) queries on the same batch; models may batch them."""
        self._require(Capability.LATENT_INFERENCE)
        checked = self._check_target_queries(queries)
        with evaluating(self):
            return self._infer_latent_many(batch, checked)

    def sample_with_latents_many(
        self, batch: Batch, queries: Sequence[tuple[Subset, str]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """For each (given, target) query, the sampled images of ``target`` and the latent inferred for it.

        Under one RNG state, the images are those ``sample_conditional_many`` generates for the queries and
        the latents those ``infer_latent_many`` returns (each as if called alone from that state; afterwards
        the RNG is where ``sample_conditional_many`` leaves it). Latent-generative models answer both from
        one sampler pass, so the latent cosine similarity is measured on the latents behind the samples the
        coherence metric scores, at no extra cost.
        """
        self._require(Capability.CONDITIONAL)
        self._require(Capability.LATENT_INFERENCE)
        checked = self._check_target_queries(queries)
        for g, t in checked:
            self._require_answers(g, frozenset({t}))
        with evaluating(self):
            return self._sample_with_latents_many(batch, checked)

    def sample_conditional_requests(self, requests: Sequence[ConditionalRequest]) -> list[ConditionalAnswer]:
        """Answer requests that may differ in tuples, given subset and targets. A model that
        ``packs_requests`` runs them all as one sampler pass; otherwise each is answered on its own, in order
        (as ``sample_conditional_many`` with one query, or ``sample_with_latents_many`` where latents are asked)."""
        self._require(Capability.CONDITIONAL)
        if any(r.latents for r in requests):
            self._require(Capability.LATENT_INFERENCE)
        checked = [
            ConditionalRequest(r.batch, self._check_subset(r.given, "given"), self._check_subset(r.targets, "targets"), r.latents)
            for r in requests
        ]
        for r in checked:
            self._require_answers(r.given, r.targets)
        with evaluating(self):
            return self._sample_conditional_requests(checked)

    # --- what subclasses implement -------------------------------------------------------------------
    def _encode(self, batch: Batch, given: Subset) -> Tensor:
        raise CapabilityError(f"{type(self).__name__} declares encode but does not implement it")

    def _decode(self, latent: Tensor, targets: Subset) -> dict[str, Tensor]:
        raise CapabilityError(f"{type(self).__name__} declares encode but does not implement decode")

    def _sample_conditional(self, batch: Batch, given: Subset, targets: Subset) -> dict[str, Tensor]:
        raise CapabilityError(f"{type(self).__name__} declares conditional sampling but does not implement it")

    def _sample_conditional_many(
        self, batch: Batch, queries: Sequence[tuple[Subset, Subset]]
    ) -> list[dict[str, Tensor]]:
        return [self._sample_conditional(batch, g, t) for g, t in queries]

    def _sample_conditional_requests(self, requests: Sequence[ConditionalRequest]) -> list[ConditionalAnswer]:
        return [self._answer(r) for r in requests]

    def _answer(self, request: ConditionalRequest) -> ConditionalAnswer:
        if not request.latents:
            return ConditionalAnswer(self._sample_conditional_many(request.batch, [(request.given, request.targets)])[0])
        queries = [(request.given, t) for t in sorted(request.targets)]
        images, latents = self._sample_with_latents_many(request.batch, queries)
        targets = [t for _, t in queries]
        return ConditionalAnswer(dict(zip(targets, images, strict=True)), dict(zip(targets, latents, strict=True)))

    def _sample_unconditional(self, n: int) -> dict[str, Tensor]:
        raise CapabilityError(f"{type(self).__name__} declares unconditional sampling but does not implement it")

    def _infer_latent(self, batch: Batch, given: Subset, target: str) -> Tensor:
        raise CapabilityError(f"{type(self).__name__} declares latent inference but does not implement it")

    def _infer_latent_many(self, batch: Batch, queries: Sequence[tuple[Subset, str]]) -> list[Tensor]:
        return [self._infer_latent(batch, g, t) for g, t in queries]

    def _sample_with_latents_many(
        self, batch: Batch, queries: Sequence[tuple[Subset, str]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        with forked_rng(self.device):  # the latents see the RNG state the samples start from
            latents = self._infer_latent_many(batch, queries)
        samples = self._sample_conditional_many(batch, [(g, frozenset({t})) for g, t in queries])
        return [s[t] for s, (_, t) in zip(samples, queries, strict=True)], latents

    # --- helpers ----------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def batch_size_of(self, batch: Batch) -> int:
        return int(next(iter(batch.values())).shape[0])
