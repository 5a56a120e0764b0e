"""A suite's data and classifiers: identify them, build them when missing, load a job's splits.

The runner asks the suite's :class:`mmbench.data.source.DataSource` (registered by family in
:mod:`mmbench.data.registry`) and never switches on the dataset's kind. A job trains on the first k
modalities of its dataset; its data identity (``data_id``) hashes the content of exactly those
modalities and the train size, so polymnist10's first five modalities and polymnist5 share one id.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mmbench.data.presence import check_share, presence_mask
from mmbench.data.registry import get_source
from mmbench.data.source import SPLITS, DataMissing, DataSource
from mmbench.hashing import config_hash
from mmbench.suites.spec import Budget, DatasetSpec, Suite

Say = Callable[[str], None]
__all__ = [
    "DataMissing", "DataRef", "data_ref", "declared_specs", "ensure_dataset", "load_splits", "modality_kinds", "placeholder_ref",
    "source_of", "with_observed_share",
]


@dataclass(frozen=True)
class DataRef:
    """How a worker loads one job's data (plain, picklable) and what the data is (content hashes)."""

    kind: str  # the dataset family (mmbench.data.registry)
    name: str
    modalities: tuple[str, ...]
    n_train: int | None
    n_val: int | None
    n_test: int | None
    dataset_hash: str  # the whole stored dataset (manifest data_hash) or the generated arrays' hash
    data_id: str  # train content of these modalities at this size: what trained weights depend on
    # incomplete training data (mmbench.data.presence): the share of observed modalities per train tuple and
    # the seed of the masks; 1.0 = complete (and then neither is part of the job's identity)
    observed_share: float = 1.0
    presence_seed: int = 0

    def size(self, split: str) -> int | None:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[split]

    def identity(self) -> dict[str, Any]:
        """The fields a job id hashes: complete data hashes as before the incomplete-data axis existed."""
        out = dataclasses.asdict(self)
        if self.observed_share == 1.0:
            out.pop("observed_share")
            out.pop("presence_seed")
        return out


def with_observed_share(ref: DataRef, share: float, seed: int) -> DataRef:
    """``ref`` trained on tuples that observe a share η of their modalities, masks fixed by ``seed``: the
    ``data_id`` folds (η, seed) in, so stages trained on incomplete data are never reused for complete data
    (nor for other η or seeds). η = 1 returns ``ref`` unchanged."""
    share = check_share(share)
    if share == 1.0:
        return ref
    data_id = config_hash({"data_id": ref.data_id, "observed_share": share, "presence_seed": int(seed)}, length=32)
    return dataclasses.replace(ref, observed_share=share, presence_seed=int(seed), data_id=data_id)


# ------------------------------------------------------------------------------------------------ identity


def source_of(spec: DatasetSpec) -> DataSource:
    return get_source(spec.kind, spec.name, spec.num_modalities)


def _sizes(source: DataSource, budget: Budget) -> dict[str, int | None]:
    return source.sizes({"train": budget.n_train, "val": budget.n_val, "test": budget.n_test})


def data_ref(spec: DatasetSpec, budget: Budget, modalities: tuple[str, ...]) -> DataRef:
    """The identity of a job's data; raises :class:`DataMissing` when a stored dataset is not built."""
    source = source_of(spec)
    sizes = _sizes(source, budget)
    identity = source.identity(modalities, sizes)
    return DataRef(spec.kind, spec.name, modalities, sizes["train"], sizes["val"], sizes["test"],
                   identity.dataset_hash, identity.data_id)


def placeholder_ref(spec: DatasetSpec, budget: Budget, modalities: tuple[str, ...]) -> DataRef:
    """A data reference for planning before the dataset is built (``--dry-run``): ids are provisional."""
    sizes = _sizes(source_of(spec), budget)
    return DataRef(spec.kind, spec.name, modalities, sizes["train"], sizes["val"], sizes["test"], "not-built", "not-built")


def declared_specs(ref: DataRef) -> dict[str, Any] | None:
    """The kind and shape of each of the data's modalities as its source declares them; None (PolyMNIST
    images) where the source cannot be asked or does not name them all."""
    try:
        specs = {s.name: s for s in get_source(ref.kind, ref.name, len(ref.modalities)).modality_specs()}
    except (KeyError, ImportError, AttributeError, TypeError, NotImplementedError):
        return None
    return {m: specs[m] for m in ref.modalities} if set(ref.modalities) <= set(specs) else None


def modality_kinds(ref: DataRef) -> dict[str, str]:
    """``{modality: kind}`` of a job's modalities from its data source (images where the source cannot say)."""
    specs = declared_specs(ref)
    return {m: "image" if specs is None else specs[m].kind for m in ref.modalities}


# ---------------------------------------------------------------------------------------------- building


def ensure_dataset(spec: DatasetSpec, say: Say) -> None:
    """Build a missing dataset (with a line saying so) when its source can; verify an existing one once."""
    source_of(spec).ensure(say)


def load_splits(ref: DataRef) -> tuple[Any, Any, Any]:
    """(train, val, test) of a job: its modalities, each split cut to the budget's size (stratified)."""
    source = get_source(ref.kind, ref.name, len(ref.modalities))
    out = []
    for split in SPLITS:
        data = source.load(split, ref.modalities, ref.size(split)).select_modalities(ref.modalities)
        n = ref.size(split)
        data = data.subset(n) if n is not None else data
        if split == "train" and ref.observed_share < 1.0:  # only training is incomplete; evaluation sees whole tuples
            data = _with_presence(data, ref)
        out.append(data)
    return tuple(out)  # type: ignore[return-value]


def _with_presence(data: Any, ref: DataRef) -> Any:
    """A copy of the train split whose batches carry the seeded presence masks (the stored arrays are shared)."""
    from mmbench.data.dataset import MultimodalDataset

    mask = presence_mask(len(data), ref.observed_share, len(ref.modalities), ref.presence_seed)
    return MultimodalDataset(data.images, data.labels, data.name, data.data_hash, data.modality_kinds, mask)


# -------------------------------------------------------------------------------------------- classifiers


# A classifier trained to a budget's short length (``Budget.classifier_steps``) is scored on this many
# test tuples (stratified) instead of the whole split: scoring 10,000 PolyMNIST tuples took 15 s (eval) and
# 71 s (substitute) of the polymnist10 smoke's 2.4 minutes of classifier work; the full recipe's
# classifiers (shared by every other budget) are scored on the whole test split.
SHORT_CLASSIFIER_TEST_TUPLES = 1000


@dataclass(frozen=True)
class ClassifierPlan:
    """The classifiers a suite's metrics use, by role, and how to train them when missing."""

    eval_name: str
    substitute_name: str
    steps: int | None


def classifier_plan(suite: Suite, budget: Budget, dataset_hash: str) -> ClassifierPlan:
    """Names: ``<base>-<role>`` where the source names the base (polymnist10; generated data carry
    their hash: patterns3-<hash>); a budget that trains them shorter than the recipe adds ``-<steps>steps``."""
    base = source_of(suite.dataset).classifier_base(dataset_hash)
    suffix = f"-{budget.classifier_steps}steps" if budget.classifier_steps else ""
    return ClassifierPlan(f"{base}-eval{suffix}", f"{base}-substitute{suffix}", budget.classifier_steps)


def ensure_classifiers(
    suite: Suite, budget: Budget, plan: ClassifierPlan, say: Say, device: str
) -> dict[str, str | None]:
    """Train the missing classifiers the dataset's source needs on its full train split; returns
    role -> sha256 (None for a role the source needs no classifier for)."""
    from classifiers.store import ClassifierNotFoundError, load_classifier

    source = source_of(suite.dataset)
    hashes: dict[str, str | None] = {}
    for role, name in (("eval", plan.eval_name), ("substitute", plan.substitute_name)):
        if role not in source.classifier_roles:
            hashes[role] = None
            continue
        try:
            hashes[role] = load_classifier(name)[1].sha256
        except ClassifierNotFoundError:
            say(f"classifier {name} not found: training it now ({role} recipe"
                f"{f', {plan.steps} steps' if plan.steps else ''}) on {suite.dataset.name}")
            hashes[role] = _train_classifier(suite, budget, source, role, name, plan.steps, say, device)
    return hashes


def classifier_weights(suite: Suite, plan: ClassifierPlan) -> dict[str, str | None]:
    """role -> the sha256 of each classifier's weights alone, which a retrained copy with the same weights shares
    though its file's does not (the file's meta holds times); None for a role the source needs no classifier for."""
    from classifiers.store import load_classifier, weights_sha256

    roles = source_of(suite.dataset).classifier_roles
    out: dict[str, str | None] = {}
    for role, name in (("eval", plan.eval_name), ("substitute", plan.substitute_name)):
        if role in roles:
            model, record = load_classifier(name)
            out[role] = record.meta.get("weights_sha256") or weights_sha256(model)
        else:
            out[role] = None
    return out


def _train_classifier(
    suite: Suite, budget: Budget, source: DataSource, role: str, name: str, steps: int | None, say: Say, device: str
) -> str:
    from classifiers.recipe import fit_classifier
    from classifiers.train import format_accuracies

    sizes = source.classifier_sizes(_sizes(source, budget))
    images = [m for m, kind in source.kinds().items() if kind == "image"]  # classifiers read images only
    train = source.load("train", images, sizes["train"])
    test = source.load("test", images, sizes["test"])
    if steps is not None:  # a budget's short classifier: scored on a stratified share of the test split
        test = test.subset(SHORT_CLASSIFIER_TEST_TUPLES)
    fitted = fit_classifier(role, name, train, test, steps=steps, device=device, progress=say,
                            trained_by=f"mmbench run --suite {suite.name}")
    say(f"classifier {name}: test ({len(test)} tuples) {format_accuracies(fitted.test_accuracy)}")
    return fitted.record.sha256
