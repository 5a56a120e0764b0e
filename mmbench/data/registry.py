"""Dataset families by name, with lazy import targets; third-party datasets through entry points.

A family maps to a ``"package.module:Class"`` string naming a :class:`mmbench.data.source.DataSource`
subclass, so listing datasets imports nothing heavy. :data:`DATASETS` is a :class:`mmbench.plugins.Registry`;
packages add datasets through its ``mmbench.datasets`` entry-point group (name = family,
value = ``package.module:Class``).
"""

from __future__ import annotations

from mmbench.data.source import DataSource
from mmbench.plugins import Entry, Registry

ENTRY_POINT_GROUP = "mmbench.datasets"
DatasetEntry = Entry  # name (the family), target ("package.module:Class"), summary (`mmbench ls datasets`)

DATASETS: Registry[type[DataSource]] = Registry("dataset", group=ENTRY_POINT_GROUP, expects=DataSource, classes=True)


def register(family: str, target: str, summary: str) -> None:
    DATASETS.register(family, target, summary)


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


def families() -> list[str]:
    return sorted(DATASETS.names())


def entry(family: str) -> DatasetEntry:
    return DATASETS.entry(family)


def source_class(family: str) -> type[DataSource]:
    return DATASETS.resolve(family)


def get_source(family: str, name: str, num_modalities: int) -> DataSource:
    """The source of a suite's dataset (``DatasetSpec(kind=family, name, num_modalities)``)."""
    return source_class(family)(name, num_modalities)
