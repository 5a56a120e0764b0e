"""On-disk multimodal datasets: ``.npy`` arrays per split and modality plus a hashed ``manifest.json``.

Layout of a dataset folder (PolyMNIST, Sutter et al. 2021 MoPoE ``mmnist/MMNISTDataset.py``, stored our way)::

    manifest.json               # format, name, modalities, splits, sources, sha256 of every file, hashes
    {split}/labels.npy          # int64 (N,)
    {split}/m{i}.npy            # uint8 (N, 3, 28, 28), memory-mappable (any modality name; masks (N, 1, H, W),
                                # attributes (N, L, 1, 1); ``modality_kinds`` in the manifest says which)
    .verified.json              # optional cache: files whose sha256 was checked, keyed on size, mtime, ctime, inode

``load_dataset`` always checks the manifest, that every file of the split exists with the recorded size
and array header; ``verify="fast"`` (the default) re-hashes only files that changed since their last
successful hash (size, mtime, ctime or inode differ from the stamp: rewriting a byte and setting the
mtime back still changes the ctime); ``verify=True`` re-hashes every time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mmbench.atomic import atomic_path, write_json
from mmbench.hashing import sha256_bytes, sha256_file, sha256_file_blocks

if TYPE_CHECKING:  # the dataset class imports torch: only load_dataset needs it
    from mmbench.data.dataset import MultimodalDataset

FORMAT = "mmbench-multimodal/1"
MANIFEST = "manifest.json"
STAMP = ".verified.json"
BLOCK_BYTES = 1 << 20  # the manifest records a sha256 per block of each file, so a job checks what it reads
LABELS = "labels"
Verify = bool | Literal["fast"]


class DatasetError(ValueError):
    """A dataset is missing, malformed or cannot be written."""


class DatasetIntegrityError(DatasetError):
    """A dataset's files do not match the sha256/sizes recorded in its manifest."""


# ---------------------------------------------------------------------------------------------- layout


def array_path(root: Path, split: str, modality: str) -> Path:
    return Path(root) / split / f"{modality}.npy"


def labels_path(root: Path, split: str) -> Path:
    return Path(root) / split / f"{LABELS}.npy"


def _rel(split: str, stem: str) -> str:
    return f"{split}/{stem}.npy"


def split_files(manifest: dict[str, Any], split: str, modalities: Sequence[str] | None = None) -> list[str]:
    """Relative paths of the labels and the (selected) modality arrays of ``split``."""
    names = list(manifest["modalities"]) if modalities is None else list(modalities)
    return [_rel(split, LABELS)] + [_rel(split, m) for m in names]


# ------------------------------------------------------------------------------------------------ write


@contextlib.contextmanager
def staging(target: Path, force: bool = False) -> Iterator[Path]:
    """A fresh temporary folder beside ``target``, renamed to ``target`` only if the block succeeds."""
    target = Path(target)
    if target.exists() and not force:
        raise DatasetError(f"{target} already exists; pass --force (force=True) to replace it")
    with contextlib.ExitStack() as stack:
        try:
            tmp = stack.enter_context(atomic_path(target))
        except OSError as exc:
            raise DatasetError(f"cannot write the dataset to {target}: {exc}; choose a writable --out") from exc
        tmp.mkdir()
        yield tmp


def _hash_lines(entries: Iterable[tuple[str, str]]) -> str:
    return sha256_bytes("\n".join(f"{path} {digest}" for path, digest in sorted(entries)).encode())


def dataset_hashes(files: dict[str, dict[str, Any]], modalities: Sequence[str]) -> dict[str, Any]:
    """``data_hash`` over all files; per modality, a hash over that modality's arrays and the labels."""
    splits = sorted({rel.split("/")[0] for rel in files})
    labels = [(_rel(s, LABELS), files[_rel(s, LABELS)]["sha256"]) for s in splits]
    per_modality = {m: _hash_lines(labels + [(_rel(s, m), files[_rel(s, m)]["sha256"]) for s in splits]) for m in modalities}
    return {
        "data_hash": _hash_lines((rel, entry["sha256"]) for rel, entry in files.items()),
        "labels_hash": _hash_lines(labels),
        "modality_hashes": per_modality,
    }


def _file_entry(path: Path) -> dict[str, Any]:
    array = np.load(path, mmap_mode="r")
    digest, blocks = sha256_file_blocks(path, BLOCK_BYTES)
    return {
        "sha256": digest, "bytes": path.stat().st_size, "dtype": array.dtype.str, "shape": list(array.shape),
        "blocks": {"bytes": BLOCK_BYTES, "sha256": blocks},
    }


def write_manifest(root: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Hash every array under ``root`` and write ``manifest.json`` (``info`` names the modalities etc.)."""
    root = Path(root)
    modalities = list(info["modalities"])
    split_names = sorted(p.parent.name for p in root.glob(f"*/{LABELS}.npy"))
    if not split_names:
        raise DatasetError(f"{root}: no split holds {LABELS}.npy")
    files: dict[str, dict[str, Any]] = {}
    splits: dict[str, dict[str, Any]] = {}
    for split in split_names:
        labels = np.load(labels_path(root, split))
        splits[split] = {"size": int(len(labels)), "label_counts": np.bincount(labels).astype(int).tolist()}
        for rel in split_files({"modalities": modalities}, split):
            path = root / rel
            if not path.is_file():
                raise DatasetError(f"{root}: split {split} lacks {rel}")
            files[rel] = _file_entry(path)
            if files[rel]["shape"][:1] != [len(labels)]:
                raise DatasetError(f"{root}: {rel} has {files[rel]['shape'][0]} items, labels have {len(labels)}")
    image_shape = files[_rel(split_names[0], modalities[0])]["shape"][1:]
    manifest = {"format": FORMAT, **info, "image_shape": image_shape, "splits": splits, "files": files}
    manifest.update(dataset_hashes(files, modalities))
    write_json(root / MANIFEST, manifest)
    return manifest


# ------------------------------------------------------------------------------------------------- read


def resolve_dataset(name_or_path: str | os.PathLike[str]) -> Path:
    """A dataset folder from a name (``polymnist10`` → ``mmbench.paths.dataset_dir``) or a path."""
    from mmbench.paths import dataset_dir

    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    looks_like_path = os.sep in text or "/" in text or text.startswith(".") or path.is_dir()
    root = path.resolve() if looks_like_path else dataset_dir(text)
    if not (root / MANIFEST).is_file():
        what = "folder" if root.is_dir() else "dataset"
        raise DatasetError(f"no {what} with a {MANIFEST} at {root}. {build_hint(root.name)}")
    return root


def build_hint(name: str) -> str:
    match = re.fullmatch(r"polymnist(\d+)", name)
    if match:
        return f"Build it with: mmbench data prepare --dataset polymnist --modalities {match.group(1)}"
    if name == "celebamaskhq":
        return "Build it from the official release with: mmbench data prepare --dataset celebamaskhq --src DIR"
    if name == "celeba-twin":
        return "Build it with: mmbench data prepare --dataset celeba-twin"
    return "Build it with `mmbench data prepare` or `mmbench data import-png`, or pass the dataset's folder."


def read_manifest(root: Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable manifest ({exc}). {build_hint(Path(root).name)}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DatasetError(f"{path}: not an mmbench dataset manifest (format {FORMAT!r} expected)")
    for key in ("name", "modalities", "splits", "files", "data_hash"):
        if key not in manifest:
            raise DatasetError(f"{path}: the manifest lacks {key!r}")
    return manifest


def rebuild_hint(manifest: dict[str, Any]) -> str:
    command = manifest.get("rebuild") or build_hint(str(manifest.get("name", "")))
    return f"Rebuild it with: {command}" if not command.startswith("Build") else command


def check_files(root: Path, manifest: dict[str, Any], rels: Iterable[str], full: bool) -> list[str]:
    """Problems of ``rels``: missing, wrong size, or (``full``) a sha256 different from the manifest's."""
    problems = []
    for rel in rels:
        entry = manifest["files"].get(rel)
        path = Path(root) / rel
        if entry is None:
            problems.append(f"{rel}: not listed in the manifest")
        elif not path.is_file():
            problems.append(f"{rel}: missing")
        elif path.stat().st_size != entry["bytes"]:
            problems.append(f"{rel}: {path.stat().st_size} bytes, the manifest says {entry['bytes']}")
        elif full and (digest := sha256_file(path)) != entry["sha256"]:
            problems.append(f"{rel}: sha256 {digest[:16]}… does not match the manifest's {entry['sha256'][:16]}…")
    return problems


def check_hashes(manifest: dict[str, Any]) -> list[str]:
    """The manifest's own consistency: recomputed data/modality hashes equal the recorded ones."""
    expected = dataset_hashes(manifest["files"], manifest["modalities"])
    return [
        f"manifest: {key} does not match its file list"
        for key in ("data_hash", "modality_hashes")
        if manifest.get(key) != expected[key]
    ]


def verify_dataset(name_or_path: str | os.PathLike[str]) -> tuple[Path, list[str]]:
    """Re-hash every file of a dataset; returns the folder and the list of problems (empty = intact).

    The block hashes are checked too; a manifest written before they were recorded gets them (the
    files hashed as the manifest says), so jobs then check only the blocks they read.
    """
    root = resolve_dataset(name_or_path)
    manifest = read_manifest(root)
    problems = check_hashes(manifest) + check_files(root, manifest, sorted(manifest["files"]), full=False)
    added = False
    for rel, entry in sorted(manifest["files"].items()):
        if any(p.startswith(f"{rel}:") for p in problems):
            continue
        digest, blocks = sha256_file_blocks(root / rel, BLOCK_BYTES)
        recorded = entry.get("blocks")
        if digest != entry["sha256"]:
            problems.append(f"{rel}: sha256 {digest[:16]}… does not match the manifest's {entry['sha256'][:16]}…")
        elif recorded is None:
            entry["blocks"] = {"bytes": BLOCK_BYTES, "sha256": blocks}
            added = True
        elif recorded != {"bytes": BLOCK_BYTES, "sha256": blocks}:
            problems.append(f"{rel}: the manifest's block hashes do not match the file (its sha256 does)")
    if not problems:
        if added:
            with contextlib.suppress(OSError):
                write_json(root / MANIFEST, manifest)
        write_verified_stamp(root, manifest)
    return root, problems


# ---------------------------------------------------------------------------------------------- stamps


def _read_stamp(root: Path) -> dict[str, Any]:
    try:
        stamp = json.loads((root / STAMP).read_text())
        return stamp if isinstance(stamp, dict) else {}
    except (OSError, ValueError):
        return {}


def _stat_key(path: Path) -> list[int]:
    """Size, modification and status-change times and inode: any write through the file system changes
    the status-change time (ctime), which, unlike the modification time, cannot be set back."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def write_verified_stamp(root: Path, manifest: dict[str, Any], rels: Iterable[str] | None = None) -> None:
    """Record that ``rels`` (default all files) hash as the manifest says; skipped if read-only."""
    root = Path(root)
    stamp = _read_stamp(root)
    for rel in manifest["files"] if rels is None else rels:
        stamp[rel] = {"stat": _stat_key(root / rel), "sha256": manifest["files"][rel]["sha256"]}
    with contextlib.suppress(OSError):
        write_json(root / STAMP, stamp)


def _stale(root: Path, manifest: dict[str, Any], rels: Sequence[str]) -> list[str]:
    stamp = _read_stamp(root)
    stale = []
    for rel in rels:
        entry = stamp.get(rel) or {}
        fresh = entry.get("sha256") == manifest["files"][rel]["sha256"] and entry.get("stat") == _stat_key(root / rel)
        if not fresh:
            stale.append(rel)
    return stale


# ------------------------------------------------------------------------------------------------- load


def load_manifest(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a dataset by name or path (adds ``root``)."""
    root = resolve_dataset(name_or_path)
    return {**read_manifest(root), "root": str(root)}


def split_hash(manifest: dict[str, Any], split: str, modalities: Sequence[str] | None = None) -> str:
    """A content key for one split (and a subset of its modalities), e.g. for caches of real-data statistics."""
    return _hash_lines((rel, manifest["files"][rel]["sha256"]) for rel in split_files(manifest, split, modalities))


def load_dataset(
    name_or_path: str | os.PathLike[str],
    split: str = "train",
    verify: Verify = "fast",
    modalities: Sequence[str] | None = None,
) -> MultimodalDataset:
    """One split of a stored dataset, memory-mapped read-only, after checking it against its manifest.

    ``data_hash`` of the result identifies its content: the split's labels and the loaded modalities
    (:func:`split_hash`), so val and test differ, and the first k modalities of ``polymnist10`` give the
    same hash as ``polymnist{k}``. The whole dataset's hash is ``load_manifest(...)["data_hash"]``.

    ``verify``: ``False`` checks sizes and headers; ``"fast"`` also hashes files changed since their last
    verified hash; ``True`` hashes every file of the split. A mismatch raises :class:`DatasetIntegrityError`
    naming the file and the command that rebuilds the dataset.
    """
    from mmbench.data.dataset import MultimodalDataset

    root = resolve_dataset(name_or_path)
    manifest = read_manifest(root)
    if split not in manifest["splits"]:
        raise DatasetError(f"{root}: no split {split!r}; it has {sorted(manifest['splits'])}")
    names = list(manifest["modalities"]) if modalities is None else list(modalities)
    unknown = [m for m in names if m not in manifest["modalities"]]
    if unknown:
        raise DatasetError(f"{root}: no modalities {unknown}; it has {manifest['modalities']}")
    rels = split_files(manifest, split, names)
    _check_or_raise(root, manifest, rels, verify)
    labels = np.load(root / rels[0])
    images = {m: _open_array(root, manifest, rel) for m, rel in zip(names, rels[1:], strict=True)}
    content = split_hash(manifest, split, names)  # this object's content; the dataset's is manifest["data_hash"]
    kinds = {m: k for m, k in manifest.get("modality_kinds", {}).items() if m in names}
    return MultimodalDataset(images, labels, name=f"{manifest['name']}.{split}", data_hash=content, modality_kinds=kinds)


def load_rows(
    name_or_path: str | os.PathLike[str], split: str, modalities: Sequence[str] | None = None, n: int | None = None
) -> MultimodalDataset:
    """The first ``n`` tuples of a split (stratified, as :meth:`MultimodalDataset.subset`; all when None),
    after hashing every block of the files that holds them (and the labels) against the manifest's block
    hashes: the bytes a job reads are checked, at the cost of reading them once.

    A manifest written before block hashes were recorded: each loaded file is hashed whole (and a line
    says that ``mmbench data verify`` records the block hashes). A mismatch raises
    :class:`DatasetIntegrityError` naming the file and the command that rebuilds the dataset.
    """
    data = load_dataset(name_or_path, split, verify=False, modalities=modalities)
    root = resolve_dataset(name_or_path)
    manifest = read_manifest(root)
    rows = stratified_rows(np.asarray(data.labels), n)
    problems = check_blocks(root, manifest, _rel(split, LABELS), None)
    for m in data.modalities:
        problems += check_blocks(root, manifest, _rel(split, m), rows, data.images[m])
    if problems:
        _raise(root, manifest, problems)
    return data if n is None else data.subset(n)


def stratified_rows(labels: np.ndarray, n: int | None) -> np.ndarray | None:
    """The rows ``MultimodalDataset.subset(n)`` keeps (None: all of them)."""
    from mmbench.data.dataset import stratified_first

    return None if n is None or n >= len(labels) else stratified_first(labels, n)


def _row_blocks(array: np.memmap, rows: np.ndarray, block: int) -> np.ndarray:
    """Indices of the blocks of a memory-mapped ``.npy`` file holding its header and the rows ``rows``."""
    row_bytes = max(1, int(np.prod(array.shape[1:], dtype=np.int64)) * array.itemsize)
    starts = int(array.offset) + np.asarray(rows, dtype=np.int64) * row_bytes
    first, last = starts // block, (starts + row_bytes - 1) // block
    spans = [first, last] if row_bytes <= block else [np.arange(a, b + 1) for a, b in zip(first, last, strict=True)]
    return np.unique(np.concatenate([np.arange(int(array.offset) // block + 1), *spans]))


_WHOLE_FILE_NOTICE: set[str] = set()


def check_blocks(
    root: Path, manifest: dict[str, Any], rel: str, rows: np.ndarray | None, array: np.memmap | None = None
) -> list[str]:
    """Problems of the blocks of ``rel`` that hold ``rows`` (None: every block; else ``array`` is the file
    memory-mapped) against the manifest."""
    entry, path = manifest["files"][rel], Path(root) / rel
    blocks = entry.get("blocks")
    if not blocks:
        if str(root) not in _WHOLE_FILE_NOTICE:
            _WHOLE_FILE_NOTICE.add(str(root))
            from mmbench.integrity import notify

            notify(f"dataset {root} predates block hashes: whole files are hashed as they are loaded; "
                   f"`mmbench data verify --dataset {root}` records them")
        return check_files(root, manifest, [rel], full=True)
    size, digests = int(blocks["bytes"]), blocks["sha256"]
    if rows is not None and not isinstance(array, np.memmap):
        raise ValueError("check_blocks needs the memory-mapped array to locate rows")
    wanted = range(len(digests)) if rows is None else _row_blocks(array, rows, size)
    with open(path, "rb") as fh:
        for i in wanted:
            fh.seek(int(i) * size)
            data = fh.read(size)
            if i >= len(digests) or sha256_bytes(data) != digests[i]:
                return [f"{rel}: bytes {int(i) * size}–{int(i) * size + len(data)} (block {i}) do not match "
                        "the manifest's sha256 of that block"]
    return []


def _raise(root: Path, manifest: dict[str, Any], problems: list[str]) -> None:
    raise DatasetIntegrityError(
        f"dataset {root} does not match its manifest:\n  " + "\n  ".join(problems) + f"\n{rebuild_hint(manifest)}"
    )


def _check_or_raise(root: Path, manifest: dict[str, Any], rels: list[str], verify: Verify) -> None:
    if verify not in (True, False, "fast"):
        raise ValueError(f"verify must be True, False or 'fast', got {verify!r}")
    problems = check_hashes(manifest) + check_files(root, manifest, rels, full=False)
    if not problems and verify:
        to_hash = rels if verify is True else _stale(root, manifest, rels)
        problems = check_files(root, manifest, to_hash, full=True)
        if not problems and to_hash:
            write_verified_stamp(root, manifest, to_hash)
    if problems:
        _raise(root, manifest, problems)


def _open_array(root: Path, manifest: dict[str, Any], rel: str) -> np.ndarray:
    entry = manifest["files"][rel]
    try:
        array = np.load(root / rel, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise DatasetIntegrityError(f"{root / rel}: unreadable array ({exc}). {rebuild_hint(manifest)}") from exc
    if array.dtype.str != entry["dtype"] or list(array.shape) != entry["shape"]:
        raise DatasetIntegrityError(
            f"{root / rel}: {array.dtype} {array.shape}, the manifest says {entry['dtype']} {entry['shape']}. "
            + rebuild_hint(manifest)
        )
    return array


def list_datasets() -> list[Path]:
    """Folders under ``mmbench.paths.data_dir()`` holding a manifest."""
    from mmbench.paths import data_dir

    root = data_dir()
    return sorted(p.parent for p in root.glob(f"*/{MANIFEST}")) if root.is_dir() else []


def _split_order(splits: Iterable[str]) -> list[str]:
    canonical = {"train": 0, "val": 1, "test": 2}
    return sorted(splits, key=lambda s: (canonical.get(s, 3), s))


def summary(manifest: dict[str, Any]) -> str:
    """A few lines describing a dataset (for ``mmbench data info``)."""
    sources = manifest.get("sources", {})
    mnist = sources.get("mnist", {})
    lines = [
        f"{manifest['name']}  ({manifest.get('root', '')})",
        f"  modalities: {', '.join(manifest['modalities'])}   image shape: {manifest.get('image_shape')}",
        "  splits: " + ", ".join(f"{s} {manifest['splits'][s]['size']}" for s in _split_order(manifest["splits"])),
        f"  data hash: {manifest['data_hash']}",
    ]
    if "generator" in manifest:
        gen = manifest["generator"]
        lines.append(f"  generator: {gen.get('name')} v{gen.get('version')} seed {gen.get('seed')}")
    if mnist:
        lines.append(f"  mnist: {mnist.get('kind')} sha256 {str(mnist.get('sha256', ''))[:16]}…  ({mnist.get('path')})")
    for m, bg in sources.get("backgrounds", {}).items():
        lines.append(f"  {m}: {bg.get('name')}  {bg.get('shape')}  sha256 {bg.get('sha256', '')[:16]}…")
    if "png" in sources:
        lines.append(f"  imported from PNG files under {sources['png'].get('path')}")
    return "\n".join(lines)
