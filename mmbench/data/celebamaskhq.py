"""CelebAMask-HQ (Lee et al. 2020, "MaskGAN") prepared as the paper's three modalities (Wesego & Rooshenas
2024, A.9): ``image`` RGB 128×128, ``mask`` the union of the face-part masks except skin (black and white,
128×128), ``attributes`` 18 of CelebA's 40 binary attributes.

Reads the official release under ``--src``::

    CelebA-HQ-img/<id>.jpg                                  # id 0..29999
    CelebAMask-HQ-mask-anno/<id // 2000>/<id:05d>_<part>.png  # one binary PNG per annotated part
    CelebAMask-HQ-attribute-anno.txt                        # count; 40 names; "<id>.jpg" and 40 values 1/-1
    CelebA-HQ-to-CelebA-mapping.txt                         # header "idx orig_idx orig_file"; one row per id
    list_eval_partition.txt                                 # CelebA's "<orig_file> <0|1|2>" (train/val/test)

The split of an image is CelebA's partition of its original file (24,183 / 2,993 / 2,824 images). A part
that is wholly occluded has no file (the release skips it), so a missing part is normal; an image with no
part file at all, or a file the listing names that is absent, is an error naming what is missing.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.data.source import SPLITS, ModalitySpec, StoredSource, require_option
from mmbench.data.store import (
    DatasetError,
    array_path,
    labels_path,
    staging,
    write_manifest,
    write_verified_stamp,
)
from mmbench.hashing import sha256_bytes

NAME = "celebamaskhq"
READER_VERSION = 1
SIZE = 128
IMAGE_DIR = "CelebA-HQ-img"
MASK_DIR = "CelebAMask-HQ-mask-anno"
ATTRIBUTE_FILE = "CelebAMask-HQ-attribute-anno.txt"
MAPPING_FILE = "CelebA-HQ-to-CelebA-mapping.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGES_PER_MASK_FOLDER = 2000
NUM_ATTRIBUTES = 40
# sbmae's mask: every part of the release's label list except skin.
MASK_PARTS = ("nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear", "mouth", "u_lip",
              "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth")
ALL_PARTS = ("skin", *MASK_PARTS)
# sbmae's 18 attributes (0-based indices into CelebA's 40; Perarnau et al. 2016's visually distinctive set).
ATTRIBUTE_INDICES = (4, 5, 8, 9, 11, 12, 15, 17, 18, 20, 21, 22, 26, 28, 31, 32, 33, 35)
PARTITIONS = {"0": "train", "1": "val", "2": "test"}
_CHUNK = 512
Log = Callable[[str], None]


class CelebAMaskHQError(DatasetError):
    """The release under ``--src`` is missing, partial or not in the official layout."""


@dataclass(frozen=True)
class Release:
    """What the release's text files say: attribute names, each id's 40 values and its split."""

    root: Path
    names: tuple[str, ...]
    attributes: dict[int, np.ndarray]  # id -> (40,) int8 in {-1, 1}
    splits: dict[str, list[int]]  # split -> ids in ascending order

    @property
    def kept_names(self) -> tuple[str, ...]:
        return tuple(self.names[i] for i in ATTRIBUTE_INDICES)


# ------------------------------------------------------------------------------------------------ layout


def mask_file(root: Path, image_id: int, part: str) -> Path:
    return Path(root) / MASK_DIR / str(image_id // IMAGES_PER_MASK_FOLDER) / f"{image_id:05d}_{part}.png"


def image_file(root: Path, image_id: int) -> Path:
    return Path(root) / IMAGE_DIR / f"{image_id}.jpg"


def _require(root: Path) -> None:
    if not root.is_dir():
        raise CelebAMaskHQError(f"CelebAMask-HQ source {root} does not exist or is not a folder")
    missing = [name for name in (IMAGE_DIR, MASK_DIR) if not (root / name).is_dir()]
    missing += [name for name in (ATTRIBUTE_FILE, MAPPING_FILE, PARTITION_FILE) if not (root / name).is_file()]
    if missing:
        raise CelebAMaskHQError(
            f"{root} is not a complete CelebAMask-HQ release: missing {', '.join(missing)}. Expected the release's "
            f"{IMAGE_DIR}/, {MASK_DIR}/, {ATTRIBUTE_FILE} and {MAPPING_FILE}, plus CelebA's {PARTITION_FILE} "
            "(from CelebA's Eval/ folder) copied beside them"
        )


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def read_attributes(path: Path) -> tuple[tuple[str, ...], dict[int, np.ndarray]]:
    """The attribute file: a count, the 40 names, then ``<id>.jpg`` and 40 values of 1 or -1 per line."""
    lines = _lines(path)
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise CelebAMaskHQError(f"{path}: expected a count on the first line and 40 attribute names on the second")
    names = tuple(lines[1].split())
    if len(names) != NUM_ATTRIBUTES:
        raise CelebAMaskHQError(f"{path}: the second line names {len(names)} attributes, expected {NUM_ATTRIBUTES}")
    count = int(lines[0])
    if len(lines) - 2 != count:
        raise CelebAMaskHQError(f"{path}: the first line says {count} images, the file lists {len(lines) - 2}")
    values: dict[int, np.ndarray] = {}
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if len(fields) != NUM_ATTRIBUTES + 1 or not fields[0].endswith(".jpg") or not fields[0][:-4].isdigit():
            raise CelebAMaskHQError(f"{path}:{number}: expected '<id>.jpg' and {NUM_ATTRIBUTES} values, got {line[:60]!r}")
        row = np.array([int(v) for v in fields[1:]], dtype=np.int8)
        if not np.isin(row, (-1, 1)).all():
            raise CelebAMaskHQError(f"{path}:{number}: attribute values must be 1 or -1")
        values[int(fields[0][:-4])] = row
    return names, values


def read_split_files(root: Path) -> dict[int, str]:
    """CelebA-HQ id -> split, from the id-to-CelebA mapping and CelebA's evaluation partition."""
    mapping_path, partition_path = root / MAPPING_FILE, root / PARTITION_FILE
    rows = _lines(mapping_path)
    if not rows or rows[0].split()[:3] != ["idx", "orig_idx", "orig_file"]:
        raise CelebAMaskHQError(f"{mapping_path}: expected the header 'idx orig_idx orig_file'")
    partition = {}
    for line in _lines(partition_path):
        fields = line.split()
        if len(fields) != 2 or fields[1] not in PARTITIONS:
            raise CelebAMaskHQError(f"{partition_path}: expected '<file> <0|1|2>' lines, got {line[:60]!r}")
        partition[fields[0]] = PARTITIONS[fields[1]]
    split_of = {}
    for line in rows[1:]:
        fields = line.split()
        if len(fields) != 3 or not fields[0].isdigit():
            raise CelebAMaskHQError(f"{mapping_path}: expected 'idx orig_idx orig_file' rows, got {line[:60]!r}")
        if fields[2] not in partition:
            raise CelebAMaskHQError(f"{partition_path}: no partition for {fields[2]} (CelebA-HQ id {fields[0]})")
        split_of[int(fields[0])] = partition[fields[2]]
    return split_of


def read_release(src: str | Path) -> Release:
    """Check the layout and read the text files; every listed image must have its files."""
    root = Path(src).expanduser().resolve()
    _require(root)
    names, attributes = read_attributes(root / ATTRIBUTE_FILE)
    split_of = read_split_files(root)
    unmapped = sorted(set(attributes) - set(split_of))
    if unmapped:
        raise CelebAMaskHQError(f"{root / MAPPING_FILE}: no row for ids {unmapped[:5]} ({len(unmapped)} in all)")
    ids = sorted(attributes)
    no_image = [i for i in ids if not image_file(root, i).is_file()]
    if no_image:
        raise CelebAMaskHQError(
            f"{root / IMAGE_DIR}: missing {len(no_image)} images listed in {ATTRIBUTE_FILE}, e.g. "
            + ", ".join(f"{i}.jpg" for i in no_image[:5])
        )
    no_mask = [i for i in ids if not any(mask_file(root, i, p).is_file() for p in ALL_PARTS)]
    if no_mask:
        raise CelebAMaskHQError(
            f"{root / MASK_DIR}: no part mask for {len(no_mask)} images, e.g. "
            + ", ".join(str(mask_file(root, i, "hair").relative_to(root)).replace("_hair", "_<part>") for i in no_mask[:3])
        )
    splits = {s: [i for i in ids if split_of[i] == s] for s in SPLITS}
    empty = [s for s in SPLITS if not splits[s]]
    if empty:
        raise CelebAMaskHQError(f"{root}: the partition leaves splits {empty} empty")
    return Release(root, names, attributes, splits)


# -------------------------------------------------------------------------------------------- modalities


def _decode(path: Path) -> tuple[Any, str]:
    from PIL import Image, UnidentifiedImageError

    try:
        raw = path.read_bytes()
        image = Image.open(io.BytesIO(raw))
        image.load()
    except (OSError, UnidentifiedImageError) as exc:
        raise CelebAMaskHQError(f"{path}: unreadable image ({exc})") from exc
    return image, sha256_bytes(raw)


def prepare_image(path: Path) -> tuple[np.ndarray, str]:
    """uint8 (3, 128, 128): the RGB image resized bilinearly (PIL, antialiased), and the file's sha256."""
    from PIL import Image

    image, digest = _decode(path)
    resized = image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    return np.asarray(resized).transpose(2, 0, 1), digest


def prepare_mask(root: Path, image_id: int) -> tuple[np.ndarray, list[str]]:
    """uint8 (1, 128, 128) in {0, 255}: the union of the parts' nonzero pixels (first channel, as the
    release's own ``g_mask.py``), downsampled by block mean and kept where at least half the block is set."""
    union: np.ndarray | None = None
    digests = []
    for part in MASK_PARTS:
        path = mask_file(root, image_id, part)
        if not path.is_file():
            continue  # an occluded part has no file
        image, digest = _decode(path)
        pixels = np.asarray(image)
        pixels = pixels[..., 0] if pixels.ndim == 3 else pixels
        union = pixels != 0 if union is None else union | (pixels != 0)
        digests.append(f"{path.name} {digest}")
    if union is None:  # only skin (or nothing) annotated: an empty mask
        return np.zeros((1, SIZE, SIZE), dtype=np.uint8), digests
    return (_block_mean(union.astype(np.float32)) >= 0.5).astype(np.uint8)[None] * 255, digests


def _block_mean(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    if h % SIZE or w % SIZE:
        raise CelebAMaskHQError(f"mask of shape {mask.shape}: expected a multiple of {SIZE} (the release's is 512)")
    return mask.reshape(SIZE, h // SIZE, SIZE, w // SIZE).mean(axis=(1, 3))


def prepare_attributes(values: np.ndarray) -> np.ndarray:
    """uint8 (18, 1, 1): the kept attributes, 1 -> 255 and -1 -> 0."""
    return ((values[list(ATTRIBUTE_INDICES)] > 0).astype(np.uint8) * 255)[:, None, None]


# ------------------------------------------------------------------------------------------------ build


def _write_split(tmp: Path, release: Release, split: str, pool: ThreadPoolExecutor) -> list[str]:
    ids = release.splits[split]
    n = len(ids)
    labels_file = labels_path(tmp, split)
    labels_file.parent.mkdir(parents=True)
    np.save(labels_file, np.zeros(n, dtype=np.int64))  # no class label: subsets keep the first n
    shapes = {"image": (n, 3, SIZE, SIZE), "mask": (n, 1, SIZE, SIZE), "attributes": (n, len(ATTRIBUTE_INDICES), 1, 1)}
    out = {m: np.lib.format.open_memmap(array_path(tmp, split, m), mode="w+", dtype=np.uint8, shape=shape)
           for m, shape in shapes.items()}
    lines: list[str] = []
    for start in range(0, n, _CHUNK):  # bounded memory: decode a chunk, write it, go on
        chunk = ids[start : start + _CHUNK]
        images = pool.map(lambda i: prepare_image(image_file(release.root, i)), chunk)
        masks = pool.map(lambda i: prepare_mask(release.root, i), chunk)
        for row, (image_id, (image, digest), (mask, mask_digests)) in enumerate(zip(chunk, images, masks, strict=True)):
            out["image"][start + row], out["mask"][start + row] = image, mask
            out["attributes"][start + row] = prepare_attributes(release.attributes[image_id])
            folder = image_id // IMAGES_PER_MASK_FOLDER
            lines += [f"{IMAGE_DIR}/{image_id}.jpg {digest}", *(f"{MASK_DIR}/{folder}/{d}" for d in mask_digests)]
    for array in out.values():
        array.flush()
    return lines


def build_celebamaskhq(
    src: str | Path, out: str | Path | None = None, force: bool = False, log: Log | None = None, workers: int = 4
) -> Path:
    """Prepare the release under ``src`` into ``out`` (default ``dataset_dir("celebamaskhq")``), atomically."""
    from mmbench.paths import dataset_dir

    say = log or (lambda _msg: None)
    release = read_release(src)
    target = Path(out).expanduser().resolve() if out is not None else dataset_dir(NAME)
    with staging(target, force=force) as tmp, ThreadPoolExecutor(max_workers=workers) as pool:
        lines = []
        for split in SPLITS:
            lines += _write_split(tmp, release, split, pool)
            say(f"  {split}: {len(release.splits[split])} images")
        text_files = {name: sha256_bytes((release.root / name).read_bytes())
                      for name in (ATTRIBUTE_FILE, MAPPING_FILE, PARTITION_FILE)}
        manifest = write_manifest(tmp, _manifest_info(release, lines, text_files, target, out is not None))
    write_verified_stamp(target, manifest)
    say(f"wrote {NAME} to {target} (data hash {manifest['data_hash'][:16]})")
    return target


def _manifest_info(release: Release, lines: list[str], text_files: dict[str, str], target: Path, custom_out: bool) -> dict[str, Any]:
    rebuild = f"mmbench data prepare --dataset {NAME} --src {release.root}"
    return {
        "name": NAME if not custom_out else target.name,
        "modalities": ["image", "mask", "attributes"],
        "modality_kinds": {"image": "image", "mask": "mask", "attributes": "attributes"},
        "attribute_names": list(release.kept_names),
        "num_classes": 1,
        "source_kind": "celebamaskhq-release",
        "generator": {
            "name": "celebamaskhq", "version": READER_VERSION, "size": SIZE,
            "mask_parts": list(MASK_PARTS), "attribute_indices": list(ATTRIBUTE_INDICES),
            "construction": "Wesego & Rooshenas 2024 A.9; image bilinear (PIL), mask union of parts except skin "
                            "(nonzero, 4x4 block mean >= 0.5), attributes 1 -> 255, -1 -> 0",
            "split_rule": f"CelebA's {PARTITION_FILE} of each image's original file ({MAPPING_FILE})",
        },
        "sources": {
            "celebamaskhq": {"path": str(release.root), "files": len(lines),
                             "sha256": sha256_bytes("\n".join(sorted(lines)).encode()), "text_files": text_files},
        },
        "rebuild": rebuild + (f" --out {target}" if custom_out else "") + " --force",
    }


# ---------------------------------------------------------------------------------------------- source


class CelebAMaskHQSource(StoredSource):
    """The prepared CelebAMask-HQ: ``image`` (3×128×128), ``mask`` (1×128×128), ``attributes`` (18×1×1)."""

    family = "celebamaskhq"
    summary = "CelebAMask-HQ (Lee et al. 2020): image 128x128, face-part mask, 18 attributes, from the official release"
    classifier_roles = ()  # the digit classifiers do not apply; F1 compares attributes and masks directly

    def modality_specs(self) -> tuple[ModalitySpec, ...]:
        return (
            ModalitySpec("image", "image", (3, SIZE, SIZE)),
            ModalitySpec("mask", "mask", (1, SIZE, SIZE)),
            ModalitySpec("attributes", "attributes", (len(ATTRIBUTE_INDICES), 1, 1)),
        )

    def problems(self) -> list[str]:
        count = len(self.modality_specs())
        return [] if self.num_modalities == count else [f"CelebAMask-HQ has {count} modalities, the suite asks for {self.num_modalities}"]

    def prepare_command(self) -> str:
        return f"mmbench data prepare --dataset {self.family} --src DIR (the official release; it cannot be downloaded here)"

    @classmethod
    def prepare(cls, options: Mapping[str, Any], say: Log) -> Path:
        src = require_option(cls.family, options, "src", "--src DIR (the unpacked official CelebAMask-HQ release)")
        return build_celebamaskhq(src, out=options.get("out"), force=bool(options.get("force")), log=say)
