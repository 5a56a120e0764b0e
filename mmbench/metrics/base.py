"""Metric declarations: names, needs, keys, direction (torch-free, so reports can import it cheaply).

Every metric is a :class:`MetricSpec` in :data:`METRICS`: the capabilities it needs, the lazy
``"module:function"`` that computes it from an :class:`~mmbench.metrics.context.EvalContext`, a function
listing the keys it produces for given modalities and settings, ``higher_is_better`` rules for those
keys (torchmetrics' convention: every metric declares its direction), and what it reads: the sample sets
(so an evaluation plans all generation before any metric runs) and the files it loads (so a run checks
them before training).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmbench.plugins import Registry, load_target

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_./-]+$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")  # modality names become key fragments
RESERVED_NAMES = frozenset({"mean"})
KINDS = ("image", "attributes", "mask")

# A modality list, or a mapping modality -> kind ("image" | "attributes" | "mask").
Modalities = Sequence[str] | Mapping[str, str]

# What a metric reads. Samples: "conditional" (every clean conditional query the settings imply:
# leave-one-out, k-curves, explicit subsets; generated together as one plan), "transformed" (leave-one-out
# from transformed inputs: FGSM's attacked ones), "unconditional". Resources: "classifier" (the evaluation
# classifier), "substitute" (FGSM's), "fid_extractor" (the settings' FID feature network).
CONDITIONAL_SAMPLES, TRANSFORMED, UNCONDITIONAL_SAMPLES = "conditional", "transformed", "unconditional"
SAMPLE_SETS = frozenset({CONDITIONAL_SAMPLES, TRANSFORMED, UNCONDITIONAL_SAMPLES})
CLASSIFIER, SUBSTITUTE, FID_EXTRACTOR = "classifier", "substitute", "fid_extractor"
RESOURCES = frozenset({CLASSIFIER, SUBSTITUTE, FID_EXTRACTOR})


class MetricSkipped(Exception):
    """Raised by a metric that does not apply (e.g. F1 without an attribute modality); carries the reason."""


@dataclass
class MetricOutput:
    """What one metric returns: numbers, per-key skip reasons, files it wrote, provenance strings."""

    values: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)
    provenance: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricSpec:
    """One metric: what it needs, where its code is, which keys it produces and their direction."""

    name: str
    summary: str
    source: str  # the paper / reference this metric follows
    needs: frozenset[str]  # Capability values (strings, so this module stays torch-free)
    target: str  # "module:function" taking an EvalContext and returning a MetricOutput
    keys: Callable[[dict[str, str], Any], list[str]]  # (modality kinds, settings) -> keys
    rules: tuple[tuple[str, bool | None], ...]  # fnmatch pattern -> higher_is_better, first match wins
    samples: frozenset[str] = frozenset()  # sample sets it reads, of SAMPLE_SETS
    resources: frozenset[str] = frozenset()  # files it loads, of RESOURCES

    def __post_init__(self) -> None:
        for what, given, known in (("samples", self.samples, SAMPLE_SETS), ("resources", self.resources, RESOURCES)):
            if not given <= known:
                raise ValueError(f"metric {self.name!r}: unknown {what} {sorted(given - known)}; known: {sorted(known)}")

    def load(self) -> Callable[..., MetricOutput]:
        return load_target(self.target)


# name -> MetricSpec; the built-ins register themselves in mmbench.metrics.catalog, plugins through the
# ``mmbench.metrics`` entry-point group (a ``"module:SPEC"`` naming a MetricSpec).
METRICS: Registry[MetricSpec] = Registry("metric", group="mmbench.metrics", expects=MetricSpec,
                                         builtins=("mmbench.metrics.catalog",))


def register_metric(spec: MetricSpec) -> None:
    """Add a metric; a name may be registered once (again only with the same spec)."""
    METRICS.register(spec.name, spec, spec.summary)


def get_metric(name: str) -> MetricSpec:
    return METRICS.resolve(name)


def normalise_modalities(modalities: Modalities) -> dict[str, str]:
    """``{name: kind}`` in the given order; plain sequences are all images. Names must be key-safe."""
    kinds = dict(modalities) if isinstance(modalities, Mapping) else {m: "image" for m in modalities}
    for name, kind in kinds.items():
        if not NAME_PATTERN.match(name) or name in RESERVED_NAMES:
            raise ValueError(
                f"modality name {name!r} cannot be part of a metric key: use letters, digits, '_' or '-' "
                f"and none of {sorted(RESERVED_NAMES)}"
            )
        if kind not in KINDS:
            raise ValueError(f"modality {name!r} has unknown kind {kind!r}; use one of {KINDS}")
    return kinds


def expected_keys(name: str, modalities: Modalities, settings: Any) -> list[str]:
    """The keys metric ``name`` produces for these modalities (names, or ``{name: kind}``) and settings."""
    return [check_key(k) for k in get_metric(name).keys(normalise_modalities(modalities), settings)]


def declared(metrics: Sequence[str], what: str) -> frozenset[str]:
    """The union of what ``metrics`` declare: ``what`` is ``"samples"`` or ``"resources"``."""
    return frozenset().union(*(getattr(get_metric(m), what) for m in metrics))


def check_key(key: str) -> str:
    """A valid flat MLflow metric key, or a ValueError naming the bad key."""
    if not KEY_PATTERN.match(key) or "//" in key or key.startswith("/") or key.endswith("/"):
        raise ValueError(f"invalid metric key {key!r}: use '/'-separated parts of [A-Za-z0-9_.-]")
    return key


def higher_is_better(key: str) -> bool | None:
    """Whether a larger value of ``key`` is better; ``None`` for diagnostics and unknown keys."""
    for spec in METRICS.values():
        for pattern, direction in spec.rules:
            if fnmatch.fnmatchcase(key, pattern):
                return direction
    return None


def image_modalities(kinds: Mapping[str, str]) -> list[str]:
    return [m for m, k in kinds.items() if k == "image"]


def attribute_modalities(kinds: Mapping[str, str]) -> list[str]:
    return [m for m, k in kinds.items() if k in ("attributes", "mask")]
