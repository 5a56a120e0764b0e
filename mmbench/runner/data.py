"""A suite's data and classifiers: identify them, build them when missing, load a job's splits.

PolyMNIST comes from the stored dataset (``mmbench.data.store``; built by
``mmbench.data.polymnist.build_polymnist`` when missing); the synthetic suite's splits are generated in
memory by ``mmbench.data.synthetic.make_patterns`` from fixed seeds. A job trains on the first k
modalities of its dataset; its data identity (``data_id``) hashes the content of exactly those
modalities and the train size, so polymnist10's first five modalities and polymnist5 share one id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mmbench.hashing import config_hash
from mmbench.suites.spec import Budget, DatasetSpec, Suite

Say = Callable[[str], None]
SYNTHETIC_SEEDS = {"train": 0, "val": 1, "test": 2}
SYNTHETIC_DEFAULT_SIZES = {"train": 2000, "val": 200, "test": 500}
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DataRef:
    """How a worker loads one job's data (plain, picklable) and what the data is (content hashes)."""

    kind: str
    name: str
    modalities: tuple[str, ...]
    n_train: int | None
    n_val: int | None
    n_test: int | None
    dataset_hash: str  # the whole stored dataset (manifest data_hash) or the synthetic arrays' hash
    data_id: str  # train content of these modalities at this size: what trained weights depend on

    def size(self, split: str) -> int | None:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[split]


class DataMissing(RuntimeError):
    """The suite's dataset is not built yet (``mmbench run`` builds it; ``--dry-run`` does not)."""


# ------------------------------------------------------------------------------------------------ identity


def _sizes(spec: DatasetSpec, budget: Budget) -> dict[str, int | None]:
    sizes = {"train": budget.n_train, "val": budget.n_val, "test": budget.n_test}
    if spec.kind == "synthetic":
        return {s: sizes[s] or SYNTHETIC_DEFAULT_SIZES[s] for s in SPLITS}
    return sizes


def data_ref(spec: DatasetSpec, budget: Budget, modalities: tuple[str, ...]) -> DataRef:
    """The identity of a job's data; raises :class:`DataMissing` when a stored dataset is not built."""
    sizes = _sizes(spec, budget)
    if spec.kind == "synthetic":
        hashes = {s: _synthetic(spec, s, sizes[s]).data_hash for s in SPLITS}
        dataset_hash = config_hash(hashes)
        content: Any = {"train": hashes["train"], "modalities": list(modalities)}
    else:
        manifest = _manifest(spec)
        dataset_hash = manifest["data_hash"]
        content = {"modality_hashes": [manifest["modality_hashes"][m] for m in modalities]}
    data_id = config_hash({"content": content, "n_train": sizes["train"]})
    return DataRef(spec.kind, spec.name, modalities, sizes["train"], sizes["val"], sizes["test"], dataset_hash, data_id)


def placeholder_ref(spec: DatasetSpec, budget: Budget, modalities: tuple[str, ...]) -> DataRef:
    """A data reference for planning before the dataset is built (``--dry-run``): ids are provisional."""
    sizes = _sizes(spec, budget)
    return DataRef(spec.kind, spec.name, modalities, sizes["train"], sizes["val"], sizes["test"], "not-built", "not-built")


def _manifest(spec: DatasetSpec) -> dict[str, Any]:
    from mmbench.data.store import DatasetError, load_manifest

    try:
        manifest = load_manifest(spec.name)
    except DatasetError as exc:
        raise DataMissing(str(exc)) from None
    missing = [m for m in spec.modalities if m not in manifest["modalities"]]
    if missing:
        raise DataMissing(f"dataset {spec.name} at {manifest['root']} lacks modalities {missing}")
    return manifest


def _synthetic(spec: DatasetSpec, split: str, n: int | None) -> Any:
    from mmbench.data.synthetic import make_patterns

    return make_patterns(spec.num_modalities, n=int(n or SYNTHETIC_DEFAULT_SIZES[split]), seed=SYNTHETIC_SEEDS[split])


# ---------------------------------------------------------------------------------------------- building


def ensure_dataset(spec: DatasetSpec, say: Say) -> None:
    """Build a missing PolyMNIST dataset (with a line saying so); verify an existing one once."""
    if spec.kind == "synthetic":
        return
    from mmbench.data.store import DatasetError, load_dataset

    try:
        for split in SPLITS:
            load_dataset(spec.name, split, verify="fast")
        _record_block_hashes(spec, say)
        return
    except DatasetError as exc:
        if _manifest_exists(spec):
            raise  # present but damaged: never silently rebuild over it
        say(f"dataset {spec.name} is not built yet ({exc.__class__.__name__}); building it now "
            f"(= mmbench data prepare --dataset polymnist --modalities {spec.num_modalities})")
    from mmbench.data.polymnist import build_polymnist

    build_polymnist(spec.num_modalities, log=say)


def _record_block_hashes(spec: DatasetSpec, say: Say) -> None:
    """A dataset prepared before block hashes were recorded gets them once (= ``mmbench data verify``), so
    that each job hashes only the blocks it reads rather than whole files."""
    from mmbench.data.store import DatasetIntegrityError, load_manifest, rebuild_hint, verify_dataset

    manifest = load_manifest(spec.name)
    if all("blocks" in entry for entry in manifest["files"].values()):
        return
    say(f"dataset {spec.name} predates block hashes: hashing it once to record them (= mmbench data verify)")
    root, problems = verify_dataset(spec.name)
    if problems:
        raise DatasetIntegrityError(
            f"dataset {root} does not match its manifest:\n  " + "\n  ".join(problems) + f"\n{rebuild_hint(manifest)}"
        )


def _manifest_exists(spec: DatasetSpec) -> bool:
    from mmbench.paths import dataset_dir

    return (dataset_dir(spec.name) / "manifest.json").is_file()


def load_splits(ref: DataRef) -> tuple[Any, Any, Any]:
    """(train, val, test) of a job: its modalities, each split cut to the budget's size (stratified)."""
    if ref.kind == "synthetic":
        spec = DatasetSpec("synthetic", ref.name, len(ref.modalities))
        splits = [_synthetic(spec, s, ref.size(s)) for s in SPLITS]
    else:  # the bytes the job reads are checked against the manifest's block hashes
        from mmbench.data.store import load_rows

        splits = [load_rows(ref.name, s, ref.modalities, ref.size(s)) for s in SPLITS]
    out = []
    for split, data in zip(SPLITS, splits, strict=True):
        data = data.select_modalities(ref.modalities)
        n = ref.size(split)
        out.append(data.subset(n) if n is not None else data)
    return tuple(out)  # type: ignore[return-value]


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
    """Names: ``<dataset>-<role>`` (polymnist10-eval, ...); the synthetic data's carry its hash;
    a budget that trains them shorter than the recipe adds ``-<steps>steps``."""
    base = suite.dataset.name if suite.dataset.kind == "polymnist" else f"{suite.dataset.name}-{dataset_hash[:12]}"
    suffix = f"-{budget.classifier_steps}steps" if budget.classifier_steps else ""
    return ClassifierPlan(f"{base}-eval{suffix}", f"{base}-substitute{suffix}", budget.classifier_steps)


def ensure_classifiers(suite: Suite, budget: Budget, plan: ClassifierPlan, say: Say, device: str) -> dict[str, str]:
    """Train the missing classifiers on the suite's full train split; returns role -> sha256."""
    from classifiers.store import ClassifierNotFoundError, load_classifier

    hashes = {}
    for role, name in (("eval", plan.eval_name), ("substitute", plan.substitute_name)):
        try:
            hashes[role] = load_classifier(name)[1].sha256
        except ClassifierNotFoundError:
            say(f"classifier {name} not found: training it now ({role} recipe"
                f"{f', {plan.steps} steps' if plan.steps else ''}) on {suite.dataset.name}")
            hashes[role] = _train_classifier(suite, budget, role, name, plan.steps, say, device)
    return hashes


def _full_splits(spec: DatasetSpec, budget: Budget) -> tuple[Any, Any]:
    if spec.kind == "synthetic":
        sizes = _sizes(spec, budget)
        return _synthetic(spec, "train", sizes["train"]), _synthetic(spec, "test", sizes["test"])
    from mmbench.data.store import load_rows

    return load_rows(spec.name, "train"), load_rows(spec.name, "test")


def _train_classifier(
    suite: Suite, budget: Budget, role: str, name: str, steps: int | None, say: Say, device: str
) -> str:
    import time

    from classifiers.store import save_classifier
    from classifiers.train import RECIPES, evaluate_classifier, format_accuracies, summarize, train_classifier

    recipe = RECIPES[role]
    train, test = _full_splits(suite.dataset, budget)
    start = time.perf_counter()
    model = train_classifier(
        recipe.arch, train, None, epochs=recipe.epochs, steps=steps, batch_size=recipe.batch_size, lr=recipe.lr,
        schedule=recipe.schedule, seed=recipe.seed, device=device, progress=say,
    )
    if steps is not None:  # a budget's short classifier: scored on a stratified share of the test split
        test = test.subset(SHORT_CLASSIFIER_TEST_TUPLES)
    accuracy = evaluate_classifier(model, test)
    say(f"classifier {name}: test ({len(test)} tuples) {format_accuracies(accuracy)}")
    meta = {
        "role": role, "arch": recipe.arch, "dataset": train.name, "data_hash": train.data_hash,
        "test_accuracy": accuracy, "test_tuples": len(test), "mean_accuracy": summarize(accuracy)["mean"],
        "epochs": recipe.epochs,
        "steps": steps, "batch_size": recipe.batch_size, "lr": recipe.lr, "schedule": recipe.schedule,
        "seed": recipe.seed, "train_seconds": round(time.perf_counter() - start, 1),
        "trained_by": f"mmbench run --suite {suite.name}",
    }
    return save_classifier(model, name, meta).sha256
