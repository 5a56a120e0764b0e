"""Background images for PolyMNIST: the bundled default set or a user folder, as uint8 ``(H, W, 3)`` RGB.

Modality m uses the m-th background (Sutter et al. 2021, MoPoE ``mmnist/MMNISTDataset.py``). The paper's
ten images are not installable, so the default set is ten colour images bundled with scikit-image and
scikit-learn (PROTOCOL.md §1, Decision); ``docs/data.md`` explains the choice and the order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.hashing import sha256_array

CROP = 28
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# The default set, in alphabetical order of the image names (like the paper's sorted file names).
# Ten of the eleven bundled colour images PROTOCOL.md §1 lists; left out: sklearn ``china.jpg``, the busiest
# (foliage, roof tiles), on which a short-trained digit classifier read the inverted digit worst
# (docs/data.md has the measurement).
DEFAULT_BACKGROUNDS: tuple[str, ...] = (
    "skimage:astronaut",
    "skimage:chelsea",
    "skimage:coffee",
    "skimage:colorwheel",
    "sklearn:flower.jpg",
    "skimage:hubble_deep_field",
    "skimage:immunohistochemistry",
    "skimage:logo",
    "skimage:retina",
    "skimage:rocket",
)


class BackgroundError(ValueError):
    """Backgrounds are missing, unreadable, too few or too small."""


@dataclass(frozen=True)
class Background:
    """One background: a name, uint8 RGB pixels ``(H, W, 3)`` and the sha256 of that decoded array."""

    name: str
    pixels: np.ndarray

    @property
    def sha256(self) -> str:
        return sha256_array(self.pixels)

    def identity(self) -> dict[str, Any]:
        """What the manifest records about this background."""
        return {"name": self.name, "sha256": self.sha256, "shape": list(self.pixels.shape)}


def to_rgb_uint8(image: np.ndarray, name: str) -> np.ndarray:
    """Greyscale → three equal channels; RGBA → RGB composited over white; floats in [0, 1] → uint8."""
    a = np.asarray(image)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        if a.min() < 0 or a.max() > 1:
            raise BackgroundError(f"background {name}: float pixels outside [0, 1]")
        a = np.rint(a * 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise BackgroundError(f"background {name}: expected an (H, W[, C]) image, got shape {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if a.shape[2] == 4:
        alpha = a[:, :, 3:4].astype(np.float64) / 255.0
        a = np.rint(a[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(a)


def check_size(bg: Background) -> None:
    h, w = bg.pixels.shape[:2]
    if h < CROP or w < CROP:
        raise BackgroundError(
            f"background {bg.name} is {w}x{h}: every background must be at least {CROP}x{CROP} pixels "
            "(a 28x28 crop is cut from it); use a larger image"
        )


def _skimage_loader(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        image = getattr(skimage.data, name)()
        return image[0] if isinstance(image, tuple) else image

    return load


def _sklearn_loader(filename: str) -> Callable[[], np.ndarray]:
    """scikit-learn's sample image, decoded as ``load_sample_image`` does (PIL), without importing
    ``sklearn.datasets`` (which takes seconds): the file is found through the distribution's metadata."""

    def load() -> np.ndarray:
        import importlib.metadata

        from PIL import Image

        path = Path(str(importlib.metadata.distribution("scikit-learn").locate_file(f"sklearn/datasets/images/{filename}")))
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))

    return load


def load_builtin(spec: str) -> Background:
    """A bundled image by spec ``"skimage:NAME"`` or ``"sklearn:FILE.jpg"`` (no network)."""
    package, _, name = spec.partition(":")
    loaders = {"skimage": _skimage_loader, "sklearn": _sklearn_loader}
    if package not in loaders or not name:
        raise BackgroundError(f"unknown background {spec!r}: expected 'skimage:NAME' or 'sklearn:FILE.jpg'")
    try:
        pixels = loaders[package](name)()
    except (AttributeError, OSError, ImportError, ValueError) as exc:
        raise BackgroundError(f"background {spec}: cannot load it offline ({exc})") from exc
    bg = Background(spec, to_rgb_uint8(pixels, spec))
    check_size(bg)
    return bg


def default_backgrounds(count: int = len(DEFAULT_BACKGROUNDS)) -> list[Background]:
    """The first ``count`` images of :data:`DEFAULT_BACKGROUNDS`."""
    if count > len(DEFAULT_BACKGROUNDS):
        raise BackgroundError(
            f"the default background set has {len(DEFAULT_BACKGROUNDS)} images but {count} modalities were "
            "asked for; pass --backgrounds DIR with enough images"
        )
    return [load_builtin(spec) for spec in DEFAULT_BACKGROUNDS[:count]]


def background_files(folder: Path) -> list[Path]:
    """Image files (``*.jpg``, ``*.jpeg``, ``*.png``, any case) in ``folder``, sorted by file name."""
    if not folder.is_dir():
        raise BackgroundError(f"background folder {folder} does not exist or is not a folder")
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise BackgroundError(f"cannot read background folder {folder}: {exc}") from exc
    return sorted((p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: p.name)


def load_image_file(path: Path) -> Background:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            array = np.asarray(im.convert("RGBA") if "A" in im.getbands() else im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise BackgroundError(f"background {path}: not a readable image ({exc})") from exc
    bg = Background(path.name, to_rgb_uint8(array, path.name))
    check_size(bg)
    return bg


def folder_backgrounds(folder: Path, count: int) -> list[Background]:
    """The first ``count`` images of ``folder`` in file-name order (the paper's ``sorted(glob)``)."""
    files = background_files(folder)
    if len(files) < count:
        raise BackgroundError(
            f"background folder {folder} has {len(files)} images (*.jpg/*.jpeg/*.png) but {count} modalities "
            f"need {count}; add images or ask for fewer modalities"
        )
    return [load_image_file(p) for p in files[:count]]


def load_backgrounds(count: int, folder: str | Path | None = None) -> list[Background]:
    """``count`` backgrounds: the default set, or the first ``count`` images of ``folder``."""
    return default_backgrounds(count) if folder is None else folder_backgrounds(Path(folder), count)
