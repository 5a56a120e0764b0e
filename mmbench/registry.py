"""A registry of models by name with lazy import targets and did-you-mean errors.

Names map to ``"package.module:Class"`` strings, so listing models never imports torch; a class is checked
to be a :class:`~mmbench.contract.MultimodalModel` when first resolved. Third-party packages can add models
through the ``mmbench.models`` entry-point group (see :mod:`mmbench.plugins`), and a name of the form
``"package.module:Class"`` names a model class directly (docs/models.md, "Scoring your own model").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mmbench.plugins import Entry, Registry

ModelEntry = Entry  # name, target ("package.module:Class"), summary, defaults (config overrides that make the name)

MODELS: Registry[type] = Registry("model", group="mmbench.models", expects="mmbench.contract:MultimodalModel",
                                  classes=True, targets=True)


def register(name: str, target: str, summary: str, **defaults: Any) -> None:
    MODELS.register(name, target, summary, **defaults)


# The baselines (PROTOCOL.md §2).
register("mvae", "baselines.mvae.model:MVAE", "MVAE (Wu & Goodman 2018): product of Gaussian experts with prior expert")
register("mmvae", "baselines.mmvae.model:MMVAE", "MMVAE (Shi et al. 2019): uniform mixture of unimodal experts")
register("mopoe", "baselines.mopoe.model:MoPoE", "MoPoE (Sutter et al. 2021): mixture of products of experts")
register("mvtcae", "baselines.mvtcae.model:MVTCAE", "MVTCAE (Hwang et al. 2021): total-correlation objective, alpha 0.9")
register("mmvaeplus", "baselines.mmvaeplus.model:MMVAEPlus", "MMVAE+ (Palumbo et al. 2023): shared + private Laplace latents")
register("mld", "baselines.mld.model:MLD", "MLD (Bounoua et al. 2024): multi-time masked latent diffusion")
register("supervised", "baselines.supervised.model:Supervised",
         "supervised reference (Wesego & Rooshenas 2024 Table 1): image -> attributes and mask, BCE-trained heads")
register("majority", "baselines.floors.model:TrainingFrequencies",
         "F1 floor: each attribute's and mask pixel's training-majority value, whatever is given", answer="majority")
register("marginal", "baselines.floors.model:TrainingFrequencies",
         "F1 floor: each attribute and mask pixel drawn at its training frequency, whatever is given", answer="draw")
# The score-based multimodal autoencoder (Wesego & Rooshenas 2024) and its guidance variants.
register("sbm-vae", "sbm.model:SBM", "SBM-VAE: unimodal VAEs tied by a latent score model", family="vae", guidance="none")
register("sbm-rae", "sbm.model:SBM", "SBM-RAE: unimodal RAEs tied by a latent score model", family="rae", guidance="none")
register("sbm-vae-c", "sbm.model:SBM", "SBM-VAE-C: SBM-VAE with energy-based coherence guidance", family="vae", guidance="energy")
register("sbm-rae-c", "sbm.model:SBM", "SBM-RAE-C: SBM-RAE with energy-based coherence guidance", family="rae", guidance="energy")
register("sbm-vae-t", "sbm.model:SBM", "SBM-VAE-T: SBM-VAE with contrastive (CLIP-style) conditioning", family="vae", guidance="contrastive")
register("sbm-rae-t", "sbm.model:SBM", "SBM-RAE-T: SBM-RAE with contrastive (CLIP-style) conditioning", family="rae", guidance="contrastive")
# Harness tests: a model with no learning at all (lm-eval style dummy).
register("dummy", "mmbench.dummy:DummyModel", "harness test model: random images, no learning")


def entry(name: str) -> ModelEntry:
    return MODELS.entry(name)


def resolve_class(name: str) -> type:
    return MODELS.resolve(name)


def model_config(name: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """The resolved config of a registered model: class defaults, then the name's defaults, then overrides."""
    from mmbench.config import apply_overrides

    cls = resolve_class(name)
    config = apply_overrides(cls.Config(), dict(entry(name).defaults))
    return apply_overrides(config, dict(overrides or {}))


def build(name: str, modalities: Sequence[str], overrides: Mapping[str, Any] | None = None,
          specs: Mapping[str, Any] | None = None) -> Any:
    """Build a registered model for the given modality names.

    ``specs``: ``{modality: ModalitySpec}`` (kind and shape, ``mmbench.nets.modality.specs_of(dataset)``);
    None, or specs that are all RGB 28×28 images, builds the model as for PolyMNIST (and a model class
    whose constructor predates specs keeps working there)."""
    from mmbench.nets.modality import default_specs

    cls = resolve_class(name)
    config = model_config(name, overrides)
    if specs is None or dict(specs) == default_specs(modalities):
        return cls(tuple(modalities), config)
    takes = getattr(cls, "modality_kinds", frozenset({"image"}))
    unsupported = {m: s.kind for m, s in specs.items() if m in modalities and s.kind not in takes}
    if unsupported:
        raise ValueError(f"model {name!r} takes {sorted(takes)} modalities, not {unsupported}; "
                         "drop it from the suite or give it networks for these kinds (mmbench.nets.modality)")
    return cls(tuple(modalities), config, specs=dict(specs))


def names() -> list[str]:
    return sorted(MODELS.names())
