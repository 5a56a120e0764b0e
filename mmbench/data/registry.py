"""Dataset families by name, with lazy import targets; third-party datasets through entry points.

A family maps to a ``"package.module:Class"`` string naming a :class:`mmbench.data.source.DataSource`
subclass, so listing datasets imports nothing heavy. Packages add datasets through the
``mmbench.datasets`` entry-point group (name = family, value = ``package.module:Class``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points

from mmbench.config import did_you_mean
from mmbench.data.source import DataSource

ENTRY_POINT_GROUP = "mmbench.datasets"


@dataclass(frozen=True)
class DatasetEntry:
    family: str
    target: str  # "package.module:Class"
    summary: str  # one line for `mmbench ls datasets`


DATASETS: dict[str, DatasetEntry] = {}


def register(family: str, target: str, summary: str) -> None:
    if family in DATASETS and DATASETS[family].target != target:
        raise ValueError(f"dataset {family!r} is already registered for {DATASETS[family].target}")
    DATASETS[family] = DatasetEntry(family, target, summary)


register("polymnist", "mmbench.data.polymnist:PolyMNISTSource",
         "Extended PolyMNIST (Sutter et al. 2021): M coloured-background digit images, built from MNIST")
register("png", "mmbench.data.pngimport:PngSource",
         "PolyMNIST-format images imported from PNG files (`mmbench data import-png`)")
register("synthetic", "mmbench.data.synthetic:PatternsSource",
         "class-coded square patterns generated in memory (tests, CI)")
register("celebamaskhq", "mmbench.data.celebamaskhq:CelebAMaskHQSource",
         "CelebAMask-HQ (Lee et al. 2020): image 128x128, face-part mask, 18 attributes, from the official release")
register("celeba-twin", "mmbench.data.celebatwin:CelebATwinSource",
         "CelebA-shaped synthetic shapes: image, mask and attributes from shared latent factors (offline)")

_ENTRY_POINTS_LOADED = False


def _load_entry_points() -> None:
    """Register plugin datasets once per process."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in DATASETS:
            register(ep.name, ep.value, f"plugin dataset from {ep.dist.name if ep.dist else '?'}")


def families() -> list[str]:
    _load_entry_points()
    return sorted(DATASETS)


def entry(family: str) -> DatasetEntry:
    _load_entry_points()
    if family not in DATASETS:
        raise KeyError(
            f"unknown dataset {family!r}.{did_you_mean(family, DATASETS)} Known datasets: {', '.join(sorted(DATASETS))}."
        )
    return DATASETS[family]


def source_class(family: str) -> type[DataSource]:
    module_name, _, attr = entry(family).target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, DataSource)):
        raise TypeError(f"dataset {family!r}: {entry(family).target} is not a mmbench.data.source.DataSource")
    return cls


def get_source(family: str, name: str, num_modalities: int) -> DataSource:
    """The source of a suite's dataset (``DatasetSpec(kind=family, name, num_modalities)``)."""
    return source_class(family)(name, num_modalities)
