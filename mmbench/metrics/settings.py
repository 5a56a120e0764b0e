"""What an evaluation is run with (sizes come from the suite's budget) and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class EvalSettings:
    """Sizes, classifiers, FID extractor and options of one evaluation (PROTOCOL.md §3)."""

    n_conditional: int | None = None  # test tuples used for conditional metrics (None = whole test split)
    n_unconditional: int = 10_000  # unconditional samples (PROTOCOL §3: 10,000)
    batch_size: int = 256
    classifier: str = "polymnist10-eval"  # name or path, via classifiers.store.load_classifier
    substitute: str = "polymnist10-substitute"  # FGSM's gradient source (Papernot et al. 2017)
    fid_extractor: str = "mmbench-clf"  # or "inception-v3-compat"
    inception_weights: str | None = None  # local file; env var MMBENCH_INCEPTION_WEIGHTS
    fgsm_epsilon: float = 0.05  # PROTOCOL §3, [0,1] pixel units
    k_curves: bool = True  # coherence/FID of last/first modality given k = 1..M-1
    n_curves: int | None = None  # tuples the k-curves use: a class-stratified part of the conditional ones (None = all)
    seed: int = 0
    device: str = "cpu"
    # additions beyond the harness interface (all optional):
    subsets: tuple[tuple[str, ...], ...] = ()  # explicit given subsets for coherence/given/<a.b>/<target>
    kid: bool = True  # KID next to the leave-one-out and unconditional FIDs
    kid_subsets: int = 10  # torch-fidelity uses 100; KID is unbiased at any count, 10 keeps it cheap on a CPU
    kid_subset_size: int = 1000  # torch-fidelity's default; lowered to the set size when smaller
    grid_size: int = 8  # samples per row in the PNG sample grids (0 = no grids)
    # one generation plan: every clean conditional query in sampler passes of generation_batch samples
    # (False: each sample group on its own, batch_size tuples per pass with all the group's queries)
    generation_plan: bool = True
    generation_batch: int = 1024  # samples per sampler pass of the plan (docs/metrics.md, measured)

    def __post_init__(self) -> None:
        if self.n_conditional is not None and self.n_conditional < 2:
            raise ValueError(f"n_conditional must be at least 2 (or None for the whole split), got {self.n_conditional}")
        if self.n_curves is not None and self.n_curves < 2:
            raise ValueError(f"n_curves must be at least 2 (or None for every conditional tuple), got {self.n_curves}")
        if self.n_unconditional < 2:
            raise ValueError(f"n_unconditional must be at least 2, got {self.n_unconditional}")
        if self.batch_size < 1 or self.generation_batch < 1:
            raise ValueError(f"batch sizes must be positive, got {self.batch_size} and {self.generation_batch}")
        if not 0.0 <= self.fgsm_epsilon <= 1.0:
            raise ValueError(f"fgsm_epsilon is in [0,1] pixel units, got {self.fgsm_epsilon}")
        if self.kid_subsets < 1 or self.kid_subset_size < 2:
            raise ValueError("kid_subsets must be >= 1 and kid_subset_size >= 2")
        if self.grid_size < 0:
            raise ValueError(f"grid_size must be >= 0, got {self.grid_size}")
        object.__setattr__(self, "subsets", tuple(tuple(s) for s in self.subsets))


@dataclass(frozen=True)
class EvalResult:
    """Flat metric values, skip reasons, files written under the workdir and provenance strings."""

    values: dict[str, float]  # flat keys, only [A-Za-z0-9_./-]
    skipped: dict[str, str]  # metric or key -> reason (never a zero)
    artifacts: dict[str, Path] = field(default_factory=dict)  # CSV tables, mode-coverage counts, grids
    provenance: dict[str, str] = field(default_factory=dict)  # classifier/extractor hashes, N, dataset hash
