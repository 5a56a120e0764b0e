"""Import the official PolyMNIST PNG layout (Sutter et al. 2021, MoPoE ``mmnist/MMNISTDataset.py``).

The official files are ``{split}/m{i}/{k}.{d}.png`` (label d = the second-to-last dot field). MoPoE pairs the
modalities by unsorted glob order; here files are paired across modalities by file name, and tuples are
ordered by the natural order of the names. The result has the same format as a generated dataset.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.data.source import ModalitySpec, StoredSource
from mmbench.data.store import (
    DatasetError,
    array_path,
    labels_path,
    staging,
    write_manifest,
    write_verified_stamp,
)
from mmbench.hashing import sha256_bytes

SPLITS = ("train", "val", "test")
IMPORTER_VERSION = 1
_MODALITY_DIR = re.compile(r"m(\d+)")
_CHUNK = 4096


class PngImportError(DatasetError):
    """The PNG tree does not have the official layout, or a file cannot be read."""


def _natural_key(name: str) -> tuple[Any, ...]:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in name.split("."))


def png_label(name: str) -> int:
    """The label of ``{k}.{d}.png``: the second-to-last dot-separated field."""
    parts = name.split(".")
    if len(parts) < 3 or not parts[-2].isdigit():
        raise PngImportError(f"{name}: expected a file name {{index}}.{{label}}.png")
    return int(parts[-2])


def modality_dirs(split_dir: Path) -> list[str]:
    """Names ``m0..m{M-1}`` of the modality folders of a split (must be contiguous from m0)."""
    found = sorted(int(match.group(1)) for p in split_dir.iterdir() if p.is_dir() and (match := _MODALITY_DIR.fullmatch(p.name)))
    if not found:
        raise PngImportError(f"{split_dir}: no modality folders m0, m1, ... found")
    if found != list(range(len(found))):
        raise PngImportError(f"{split_dir}: modality folders must be m0..m{len(found) - 1}, found {[f'm{i}' for i in found]}")
    return [f"m{i}" for i in found]


def paired_names(split_dir: Path, modalities: Sequence[str]) -> list[str]:
    """File names present in every modality folder of a split, in natural order; mismatches are errors."""
    names = {m: {p.name for p in (split_dir / m).glob("*.png")} for m in modalities}
    reference = names[modalities[0]]
    if not reference:
        raise PngImportError(f"{split_dir / modalities[0]}: no *.png files")
    for m in modalities[1:]:
        if names[m] != reference:
            only_ref, only_m = sorted(reference - names[m])[:3], sorted(names[m] - reference)[:3]
            raise PngImportError(
                f"{split_dir}: {modalities[0]} and {m} do not hold the same file names (tuples are paired by name); "
                f"only in {modalities[0]}: {only_ref}, only in {m}: {only_m}"
            )
    return sorted(reference, key=_natural_key)


def _decode(path: Path) -> tuple[np.ndarray, str]:
    from PIL import Image, UnidentifiedImageError

    try:
        raw = path.read_bytes()
        with Image.open(io.BytesIO(raw)) as im:
            array = np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise PngImportError(f"{path}: unreadable PNG ({exc})") from exc
    return array.transpose(2, 0, 1), sha256_bytes(raw)


def _import_modality(split_dir: Path, m: str, names: list[str], out_file: Path, pool: ThreadPoolExecutor) -> list[str]:
    """Decode one modality folder into ``out_file``; returns the sha256 of every PNG, in order."""
    first, _ = _decode(split_dir / m / names[0])
    shape = (len(names), *first.shape)
    out = np.lib.format.open_memmap(out_file, mode="w+", dtype=np.uint8, shape=shape)
    digests: list[str] = []
    for start in range(0, len(names), _CHUNK):
        chunk = names[start : start + _CHUNK]
        for i, (array, digest) in enumerate(pool.map(_decode, [split_dir / m / n for n in chunk])):
            if array.shape != first.shape:
                raise PngImportError(f"{split_dir / m / chunk[i]}: shape {array.shape}, other images {first.shape}")
            out[start + i] = array
            digests.append(digest)
    out.flush()
    del out
    return digests


def _find_splits(src: Path) -> list[str]:
    if not src.is_dir():
        raise PngImportError(f"PNG source {src} does not exist or is not a folder")
    splits = [s for s in SPLITS if (src / s).is_dir()]
    if not splits:
        raise PngImportError(f"{src}: expected split folders {list(SPLITS)} holding m0/, m1/, ... with {{k}}.{{d}}.png")
    return splits


def import_png(
    src: str | Path,
    out: str | Path,
    name: str | None = None,
    force: bool = False,
    log: Callable[[str], None] | None = None,
    workers: int = 4,
) -> Path:
    """Import ``{src}/{split}/m{i}/{k}.{d}.png`` into a dataset folder ``out`` (manifest source "png-import")."""
    say = log or (lambda _msg: None)
    src_dir, target = Path(src).expanduser().resolve(), Path(out).expanduser().resolve()
    splits = _find_splits(src_dir)
    modalities = modality_dirs(src_dir / splits[0])
    plans = {}
    for split in splits:
        if modality_dirs(src_dir / split) != modalities:
            raise PngImportError(f"{src_dir / split}: modalities differ from {src_dir / splits[0]} ({modalities})")
        plans[split] = paired_names(src_dir / split, modalities)
    with staging(target, force=force) as tmp, ThreadPoolExecutor(max_workers=workers) as pool:
        lines = []
        for split, names in plans.items():
            labels_file = labels_path(tmp, split)
            labels_file.parent.mkdir(parents=True)
            np.save(labels_file, np.array([png_label(n) for n in names], dtype=np.int64))
            for m in modalities:
                digests = _import_modality(src_dir / split, m, names, array_path(tmp, split, m), pool)
                lines += [f"{split}/{m}/{n} {d}" for n, d in zip(names, digests, strict=True)]
            say(f"  {split}: {len(names)} tuples x {len(modalities)} modalities")
        info = _manifest_info(name or target.name, modalities, src_dir, lines, plans)
        info["rebuild"] = f"mmbench data import-png --src {src_dir} --out {target} --force"
        manifest = write_manifest(tmp, info)
    write_verified_stamp(target, manifest)
    say(f"imported {src_dir} into {target} (data hash {manifest['data_hash'][:16]})")
    return target


def _manifest_info(
    name: str, modalities: list[str], src: Path, lines: list[str], plans: dict[str, list[str]]
) -> dict[str, Any]:
    num_classes = 1 + max(png_label(n) for names in plans.values() for n in names)
    return {
        "name": name,
        "modalities": modalities,
        "num_classes": num_classes,
        "source_kind": "png-import",
        "generator": {"name": "png-import", "version": IMPORTER_VERSION, "pairing": "by file name"},
        "sources": {
            "kind": "png-import",
            "png": {"path": str(src), "files": len(lines), "sha256": sha256_bytes("\n".join(sorted(lines)).encode())},
        },
    }


class PngSource(StoredSource):
    """A dataset imported from PNG files: its modalities and shapes are whatever the import found."""

    family = "png"
    summary = "PolyMNIST-format images imported from PNG files (`mmbench data import-png`)"

    def modality_specs(self) -> tuple[ModalitySpec, ...]:
        from mmbench.data.store import DatasetError, load_manifest

        try:
            shape = tuple(load_manifest(self.name)["image_shape"])
        except DatasetError:
            shape = (3, 28, 28)  # the official PolyMNIST PNGs; the imported manifest says once it exists
        return tuple(ModalitySpec(f"m{m}", "image", shape) for m in range(self.num_modalities))  # type: ignore[arg-type]

    def prepare_command(self) -> str:
        from mmbench.paths import dataset_dir

        return f"mmbench data import-png --src DIR --out {dataset_dir(self.name)}"

    def classifier_base(self, dataset_hash: str) -> str:
        return f"{self.name}-{dataset_hash[:12]}"  # imported content is not fixed by the name

    @classmethod
    def prepare(cls, options: Mapping[str, Any], say: Callable[[str], None]) -> Path:
        raise ValueError("PNG files are imported with `mmbench data import-png --src DIR --out DIR`")
