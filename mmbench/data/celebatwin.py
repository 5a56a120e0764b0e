"""``celeba-twin``: a CelebAMask-HQ-shaped dataset that runs anywhere (offline, seeded, 32×32).

The same three modality kinds as :mod:`mmbench.data.celebamaskhq` (``image`` RGB, ``mask`` black and
white, ``attributes`` binary), every one a function of the same latent factors, so cross-modal
generation is well defined and learnable in minutes on a CPU:

- factors per tuple: which of three shapes (circle, square, triangle) are present (at least one), each
  present shape's colour (red, green, blue), size (small, large) and quadrant (distinct quadrants, ±2
  pixels of jitter); the background's texture (stripes or checks) and grey level;
- ``image`` (3×32×32): the textured background with the shapes painted in their colours, plus noise;
- ``mask`` (1×32×32): the union of the shapes (the analogue of the face-part union);
- ``attributes`` (12×1×1): circle, square, triangle, red, green, blue, large, small, several shapes,
  striped background, a shape in the top half, a shape in the left half.

The label (for stratified subsets) is which shapes are present, 0..6. Splits train 4000, val 500,
test 1000 tuples; each split's factors come from its own stream of the seed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.data.source import SPLITS, ModalitySpec, StoredSource
from mmbench.data.store import array_path, labels_path, staging, write_manifest, write_verified_stamp

NAME = "celeba-twin"
GENERATOR_VERSION = 1
SIZE = 32
SPLIT_SIZES = {"train": 4000, "val": 500, "test": 1000}
SPLIT_INDEX = {"train": 0, "val": 1, "test": 2}
SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (0.9, 0.15, 0.15), "green": (0.15, 0.85, 0.2), "blue": (0.2, 0.3, 0.95)}
RADII = (3.0, 6.0)  # small, large
TEXTURES = ("stripes", "checks")
ATTRIBUTES = ("circle", "square", "triangle", "red", "green", "blue", "large", "small", "several",
              "striped", "top", "left")
NOISE = 0.03
Log = Callable[[str], None]


def _factors(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """The latent factors of ``n`` tuples (each array's first axis is the tuple)."""
    present = rng.random((n, len(SHAPES))) < 0.5
    none = ~present.any(axis=1)
    present[none, rng.integers(0, len(SHAPES), size=int(none.sum()))] = True
    return {
        "present": present,
        "colour": rng.integers(0, len(COLOURS), size=(n, len(SHAPES))),
        "large": rng.random((n, len(SHAPES))) < 0.5,
        "quadrant": np.argsort(rng.random((n, 4)), axis=1)[:, : len(SHAPES)],  # distinct quadrants
        "jitter": rng.integers(-2, 3, size=(n, len(SHAPES), 2)),
        "texture": rng.integers(0, len(TEXTURES), size=n),
        "phase": rng.integers(0, 4, size=n),
        "grey": rng.uniform(0.25, 0.5, size=n),
    }


def _shape_masks(f: dict[str, np.ndarray]) -> np.ndarray:
    """Boolean ``(N, shapes, 32, 32)``: each present shape's pixels."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    half = SIZE // 2
    cy = (f["quadrant"] // 2) * half + half / 2 + f["jitter"][..., 0]
    cx = (f["quadrant"] % 2) * half + half / 2 + f["jitter"][..., 1]
    r = np.where(f["large"], RADII[1], RADII[0])
    dy = yy[None, None] - cy[..., None, None]
    dx = xx[None, None] - cx[..., None, None]
    rr = r[..., None, None]
    shapes = np.stack([
        dy**2 + dx**2 <= rr**2,  # circle
        (np.abs(dy) <= 0.85 * rr) & (np.abs(dx) <= 0.85 * rr),  # square
        (np.abs(dy) <= rr) & (np.abs(dx) <= (dy + rr) / 2),  # triangle, apex up
    ], axis=2)
    index = np.arange(len(SHAPES))
    return shapes[:, index, index] & f["present"][..., None, None]


def _image(f: dict[str, np.ndarray], shapes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    stripes = ((yy[None] + f["phase"][:, None, None]) // 2) % 2
    checks = ((yy[None] // 4 + xx[None] // 4 + f["phase"][:, None, None]) % 2)
    texture = np.where(f["texture"][:, None, None] == 0, stripes, checks)
    background = f["grey"][:, None, None] + 0.15 * texture
    image = np.repeat(background[:, None], 3, axis=1)
    palette = np.array(list(COLOURS.values()))
    for s in range(len(SHAPES)):
        colour = palette[f["colour"][:, s]][:, :, None, None]  # (N, 3, 1, 1)
        image = np.where(shapes[:, s][:, None], colour, image)
    image = image + rng.normal(0.0, NOISE, size=image.shape)
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)


def _attributes(f: dict[str, np.ndarray]) -> np.ndarray:
    present = f["present"]
    colours = [(present & (f["colour"] == c)).any(axis=1) for c in range(len(COLOURS))]
    top = (present & (f["quadrant"] < 2)).any(axis=1)
    left = (present & (f["quadrant"] % 2 == 0)).any(axis=1)
    values = np.stack([
        *present.T, *colours, (present & f["large"]).any(axis=1), (present & ~f["large"]).any(axis=1),
        present.sum(axis=1) >= 2, f["texture"] == 0, top, left,
    ], axis=1)
    return (values.astype(np.uint8) * 255)[:, :, None, None]


def generate_split(seed: int, split: str, n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``({"image", "mask", "attributes"}, labels)`` of one split, a function of (seed, split, n) only."""
    if seed < 0:
        raise ValueError(f"the seed must be a non-negative integer, got {seed}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLIT_INDEX[split]]))
    factors = _factors(rng, n)
    shapes = _shape_masks(factors)
    arrays = {
        "image": _image(factors, shapes, rng),
        "mask": (shapes.any(axis=1)[:, None].astype(np.uint8) * 255),
        "attributes": _attributes(factors),
    }
    labels = (factors["present"] @ np.array([1, 2, 4])) - 1
    return arrays, labels.astype(np.int64)


def build_celeba_twin(
    seed: int = 0, out: str | Path | None = None, force: bool = False, log: Log | None = None,
    name: str = NAME,
) -> Path:
    """Generate the twin into ``out`` (default ``dataset_dir(name)``), atomically, with its manifest."""
    from mmbench.paths import dataset_dir

    say = log or (lambda _msg: None)
    target = Path(out).expanduser().resolve() if out is not None else dataset_dir(name)
    with staging(target, force=force) as tmp:
        for split in SPLITS:
            arrays, labels = generate_split(seed, split, SPLIT_SIZES[split])
            labels_path(tmp, split).parent.mkdir(parents=True)
            np.save(labels_path(tmp, split), labels)
            for modality, array in arrays.items():
                np.save(array_path(tmp, split, modality), array)
            say(f"  {split}: {len(labels)} tuples")
        manifest = write_manifest(tmp, _manifest_info(name, seed, target, out is not None))
    write_verified_stamp(target, manifest)
    say(f"wrote {name} to {target} (data hash {manifest['data_hash'][:16]})")
    return target


def _manifest_info(name: str, seed: int, target: Path, custom_out: bool) -> dict[str, Any]:
    rebuild = f"mmbench data prepare --dataset {NAME} --seed {seed}" + (f" --out {target}" if custom_out else "")
    return {
        "name": name,
        "modalities": ["image", "mask", "attributes"],
        "modality_kinds": {"image": "image", "mask": "mask", "attributes": "attributes"},
        "attribute_names": list(ATTRIBUTES),
        "num_classes": 2 ** len(SHAPES) - 1,
        "source_kind": "generated",
        "generator": {"name": NAME, "version": GENERATOR_VERSION, "seed": seed, "size": SIZE,
                      "split_sizes": SPLIT_SIZES, "label": "which shapes are present (bits circle 1, square 2, triangle 4) - 1"},
        "sources": {},
        "rebuild": rebuild + " --force",
    }


class CelebATwinSource(StoredSource):
    """The twin: ``image`` (3×32×32), ``mask`` (1×32×32), ``attributes`` (12×1×1); built when missing."""

    family = NAME
    summary = "CelebA-shaped synthetic shapes: image, mask and attributes from shared latent factors (offline)"
    # F1 compares attributes and masks directly; coherence, FID (its features) and FGSM (the substitute)
    # of the image modality use classifiers of the label (which shapes are present) on the images
    classifier_roles = ("eval", "substitute")

    def modality_specs(self) -> tuple[ModalitySpec, ...]:
        return (
            ModalitySpec("image", "image", (3, SIZE, SIZE)),
            ModalitySpec("mask", "mask", (1, SIZE, SIZE)),
            ModalitySpec("attributes", "attributes", (len(ATTRIBUTES), 1, 1)),
        )

    def problems(self) -> list[str]:
        count = len(self.modality_specs())
        return [] if self.num_modalities == count else [f"{NAME} has {count} modalities, the suite asks for {self.num_modalities}"]

    def build(self, say: Log) -> None:
        build_celeba_twin(name=self.name, log=say)

    @classmethod
    def prepare(cls, options: Mapping[str, Any], say: Log) -> Path:
        return build_celeba_twin(seed=options.get("seed") or 0, out=options.get("out"),
                                 force=bool(options.get("force")), log=say)
