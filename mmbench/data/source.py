"""The data-source interface: what the runner and ``mmbench validate`` ask a dataset.

A :class:`DataSource` is one dataset family (PolyMNIST, the synthetic patterns, CelebAMask-HQ, ...)
instantiated for a suite's dataset (name and number of modalities). It says what its modalities are
(kind and shape), identifies its content (hashes), builds itself when it can, loads splits, and names
the classifiers its metrics need. Families are registered by name in :mod:`mmbench.data.registry`.

:class:`StoredSource` is the base of every family stored on disk in the checksummed ``.npy`` +
manifest format of :mod:`mmbench.data.store`: identity comes from the manifest, loading checks the
bytes read against the manifest's block hashes, and a damaged dataset is never rebuilt silently.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mmbench.hashing import config_hash

if TYPE_CHECKING:
    from mmbench.data.dataset import MultimodalDataset

Say = Callable[[str], None]
SPLITS = ("train", "val", "test")
MODALITY_KINDS = ("image", "mask", "attributes")  # the kinds the metrics know (mmbench.metrics.base.KINDS)
CLASSIFIER_ROLES = ("eval", "substitute")


class DataMissing(RuntimeError):
    """The dataset is not built yet (``mmbench run`` builds what it can; ``--dry-run`` does not)."""


@dataclass(frozen=True)
class ModalitySpec:
    """One modality: its name, its kind (image, mask, attributes) and the shape of one item (C, H, W).

    Every modality is stored as uint8 ``(N, C, H, W)``: images 0..255 RGB, masks 0/255 with C = 1,
    attributes 0/255 with shape ``(L, 1, 1)`` for L binary attributes.
    """

    name: str
    kind: str
    shape: tuple[int, int, int]


@dataclass(frozen=True)
class Identity:
    """What a job's data is: the whole dataset's hash, and the content its trained weights depend on."""

    dataset_hash: str
    data_id: str


def data_id(content: Any, n_train: int | None) -> str:
    """The hash of a job's train content at its train size (the formula every source shares)."""
    return config_hash({"content": content, "n_train": n_train})


class DataSource(ABC):
    """One dataset of a family, as a suite names it (``name``, ``num_modalities``)."""

    family: ClassVar[str]  # the registry name
    summary: ClassVar[str]  # one line for `mmbench ls datasets`
    classifier_roles: ClassVar[tuple[str, ...]] = CLASSIFIER_ROLES  # the classifiers its metrics use

    def __init__(self, name: str, num_modalities: int) -> None:
        self.name = name
        self.num_modalities = num_modalities

    # -- what it is
    @abstractmethod
    def modality_specs(self) -> tuple[ModalitySpec, ...]:
        """Every modality of the dataset, in order."""

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modality_specs())

    def kinds(self, modalities: Sequence[str] | None = None) -> dict[str, str]:
        """``{modality: kind}`` of ``modalities`` (default all)."""
        kinds = {m.name: m.kind for m in self.modality_specs()}
        return {m: kinds[m] for m in (self.modalities if modalities is None else modalities)}

    def problems(self) -> list[str]:
        """What makes this dataset impossible as declared (checked by ``mmbench validate``)."""
        return []

    def default_sizes(self) -> dict[str, int | None]:
        """Split sizes when a budget leaves them unset (None: the whole stored split)."""
        return {s: None for s in SPLITS}

    def sizes(self, requested: Mapping[str, int | None]) -> dict[str, int | None]:
        defaults = self.default_sizes()
        return {s: requested.get(s) or defaults[s] for s in SPLITS}

    # -- identity, building, loading
    @abstractmethod
    def identity(self, modalities: Sequence[str], sizes: Mapping[str, int | None]) -> Identity:
        """Hashes of the data a job on ``modalities`` at ``sizes`` reads; :class:`DataMissing` if not built."""

    @abstractmethod
    def ensure(self, say: Say) -> None:
        """Build the dataset when it is missing and can be built; verify an existing one."""

    @abstractmethod
    def load(self, split: str, modalities: Sequence[str], n: int | None) -> MultimodalDataset:
        """The first ``n`` tuples (stratified; all when None) of ``split``, these modalities only."""

    def classifier_sizes(self, sizes: Mapping[str, int | None]) -> dict[str, int | None]:
        """The split sizes the classifiers are trained and scored on (default: the whole splits)."""
        return {s: None for s in SPLITS}

    def classifier_base(self, dataset_hash: str) -> str:
        """The prefix of the names of this dataset's classifiers (``<base>-eval`` ...)."""
        return f"{self.name}-{dataset_hash[:12]}"

    # -- the command line
    @classmethod
    def prepare(cls, options: Mapping[str, Any], say: Say) -> Path:
        """``mmbench data prepare --dataset <family>``: build the dataset from the CLI's options."""
        raise ValueError(f"dataset {cls.family!r} is not prepared by `mmbench data prepare`: {cls.summary}")


def require_option(family: str, options: Mapping[str, Any], key: str, flag: str) -> Any:
    """An option ``prepare`` cannot do without, or a clear error naming the flag."""
    value = options.get(key)
    if value is None:
        raise ValueError(f"`mmbench data prepare --dataset {family}` needs {flag}")
    return value


# ------------------------------------------------------------------------------------- stored datasets


class StoredSource(DataSource):
    """A dataset stored under ``mmbench.paths.dataset_dir(name)`` with a checksummed manifest."""

    def prepare_command(self) -> str:
        """The command that builds this dataset (named in errors)."""
        return f"mmbench data prepare --dataset {self.family}"

    def build(self, say: Say) -> None:
        """Build the missing dataset (default: it cannot be built without the user's files)."""
        raise DataMissing(f"dataset {self.name} is not prepared; prepare it with: {self.prepare_command()}")

    def manifest(self) -> dict[str, Any]:
        from mmbench.data.store import DatasetError, load_manifest

        try:
            manifest = load_manifest(self.name)
        except DatasetError as exc:
            raise DataMissing(str(exc)) from None
        missing = [m for m in self.modalities if m not in manifest["modalities"]]
        if missing:
            raise DataMissing(f"dataset {self.name} at {manifest['root']} lacks modalities {missing}")
        return manifest

    def identity(self, modalities: Sequence[str], sizes: Mapping[str, int | None]) -> Identity:
        manifest = self.manifest()
        content = {"modality_hashes": [manifest["modality_hashes"][m] for m in modalities]}
        return Identity(manifest["data_hash"], data_id(content, sizes["train"]))

    def ensure(self, say: Say) -> None:
        from mmbench.data.store import DatasetError, load_dataset

        try:
            for split in SPLITS:
                load_dataset(self.name, split, verify="fast")
        except DatasetError as exc:
            if self._manifest_exists():
                raise  # present but damaged: never silently rebuild over it
            say(f"dataset {self.name} is not built yet ({exc.__class__.__name__}); building it now "
                f"(= {self.prepare_command()})")
            self.build(say)
            return
        self._record_block_hashes(say)

    def load(self, split: str, modalities: Sequence[str], n: int | None) -> MultimodalDataset:
        from mmbench.data.store import load_rows  # the bytes a job reads are checked against the manifest

        return load_rows(self.name, split, modalities, n)

    def classifier_base(self, dataset_hash: str) -> str:
        return self.name  # polymnist10-eval, ...: named by the stored dataset

    def _manifest_exists(self) -> bool:
        from mmbench.paths import dataset_dir

        return (dataset_dir(self.name) / "manifest.json").is_file()

    def _record_block_hashes(self, say: Say) -> None:
        """A dataset prepared before block hashes were recorded gets them once (= ``mmbench data verify``),
        so that each job hashes only the blocks it reads rather than whole files."""
        from mmbench.data.store import DatasetIntegrityError, load_manifest, rebuild_hint, verify_dataset

        manifest = load_manifest(self.name)
        if all("blocks" in entry for entry in manifest["files"].values()):
            return
        say(f"dataset {self.name} predates block hashes: hashing it once to record them (= mmbench data verify)")
        root, problems = verify_dataset(self.name)
        if problems:
            raise DatasetIntegrityError(
                f"dataset {root} does not match its manifest:\n  " + "\n  ".join(problems) + f"\n{rebuild_hint(manifest)}"
            )
