"""Classifier checkpoints on disk and their identity (name + sha256 of the file).

``<dir>/<name>.pt`` holds ``{"arch", "state_dict", "meta"}`` (tensors and plain types only, so it loads
with ``torch.load(weights_only=True)``); ``<dir>/<name>.json`` repeats the sha256 and the meta for
humans. Both are written atomically. Loading reads the file once and checks its bytes against the
sidecar's sha256 and against an ``expected_sha256`` when given, before unpickling them; a file with
neither (no sidecar) is refused. Metrics log the record's name and sha256.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from classifiers.nets import ARCHITECTURES, build_classifier
from mmbench import atomic, paths
from mmbench.hashing import sha256_bytes, sha256_file

ROLES = ("eval", "substitute")


class ClassifierNotFoundError(FileNotFoundError):
    """No checkpoint of that name; the message says which command trains it."""


class ClassifierHashError(ValueError):
    """The checkpoint file is not the one expected (changed, replaced or corrupted)."""


@dataclass(frozen=True)
class ClassifierRecord:
    """Who a loaded classifier is: its name, the sha256 of its file, its architecture, file and meta."""

    name: str
    sha256: str
    arch: str
    path: Path
    meta: dict[str, Any] = field(hash=False, repr=False)

    def matches_dataset(self, data_hash: str) -> bool:
        """Whether it was trained on the dataset with ``data_hash`` (a subset's ``hash[:n]`` counts too)."""
        return self.meta.get("data_hash") == data_hash.split("[", 1)[0]


def default_name(dataset: str, role: str = "eval") -> str:
    """The default checkpoint name of a dataset's classifier, e.g. ``polymnist10-eval``.

    ``dataset`` may be a name, a folder, or a loaded split's name (``polymnist10.test`` → ``polymnist10``).
    """
    if role not in ROLES:
        raise ValueError(f"unknown classifier role {role!r}; use one of {ROLES}")
    base = Path(dataset).name.split(".", 1)[0]
    return f"{base}-{role}"


def _resolve(name_or_path: str | os.PathLike[str], directory: str | os.PathLike[str] | None) -> Path:
    text = os.fspath(name_or_path)
    if text.endswith(".pt") or os.sep in text or "/" in text:
        return Path(text).expanduser()
    return Path(directory or paths.classifiers_dir()) / f"{text}.pt"


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def train_command(name: str, directory: Path | None = None) -> str:
    """The ``mmbench`` command that creates the checkpoint ``name`` (in ``directory`` if not the default)."""
    dataset, _, role = name.rpartition("-")
    if dataset and role in ROLES:
        cmd = f"mmbench classifier train --dataset {dataset} --role {role}"
    else:
        cmd = f"mmbench classifier train --dataset DATASET --role eval|substitute --name {name}"
    if directory is not None and directory.resolve() != paths.classifiers_dir():
        cmd += f" --out {directory}"
    return cmd


def weights_sha256(model: nn.Module) -> str:
    """A hash of the weights alone (names, dtypes, shapes, values), independent of the file's meta."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def arch_of(model: nn.Module) -> str:
    """The registered architecture name of a model (see :data:`classifiers.nets.ARCHITECTURES`)."""
    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise ValueError(f"{type(model).__name__} is not a registered classifier architecture")


def save_classifier(
    model: nn.Module, name: str, meta: dict[str, Any], directory: str | os.PathLike[str] | None = None
) -> ClassifierRecord:
    """Write ``<name>.pt`` and its ``<name>.json`` sidecar atomically; return the new record."""
    path = Path(directory or paths.classifiers_dir()) / f"{name}.pt"
    plain_meta = json.loads(json.dumps(meta))  # plain types only: loadable with weights_only=True
    plain_meta.setdefault("weights_sha256", weights_sha256(model))
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {"arch": arch_of(model), "state_dict": state, "meta": plain_meta}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    atomic.write_bytes(path, data)
    record = ClassifierRecord(name, sha256_bytes(data), payload["arch"], path, plain_meta)
    sidecar = {
        "name": name,
        "file": path.name,
        "sha256": record.sha256,
        "arch": record.arch,
        "meta": plain_meta,
    }
    atomic.write_json(_sidecar(path), sidecar)
    return record


def _rebuild(path: Path) -> str:
    return (f"Rebuild it with: {train_command(path.stem, path.parent)} --force (or move it away: `mmbench run` "
            "trains its suite's missing classifiers)")


def _recorded_sha256(path: Path) -> str | None:
    """The sha256 the sidecar records; None when there is no sidecar."""
    sidecar = _sidecar(path)
    if not sidecar.exists():
        return None
    try:
        recorded = json.loads(sidecar.read_text()).get("sha256")
    except (OSError, ValueError, AttributeError) as exc:
        raise ClassifierHashError(f"classifier {path}: its sidecar {sidecar.name} is unreadable ({exc}). "
                                  + _rebuild(path)) from None
    if not isinstance(recorded, str):
        raise ClassifierHashError(f"classifier {path}: its sidecar {sidecar.name} records no sha256. " + _rebuild(path))
    return recorded


def _check_hash(path: Path, actual: str, expected: str | None) -> None:
    """The file must match ``expected`` when given, and its sidecar's sha256; without either (no sidecar,
    no expected hash) it cannot be verified and is refused."""
    if expected is not None and actual != expected.lower():
        raise ClassifierHashError(f"classifier {path} has sha256 {actual}, expected {expected}")
    recorded = _recorded_sha256(path)
    if recorded is None and expected is None:
        raise ClassifierHashError(
            f"classifier {path} has no sidecar {_sidecar(path).name} recording its sha256, so it cannot be "
            "verified (pass expected_sha256 / --expected-sha256 if you know it). " + _rebuild(path)
        )
    if recorded is not None and recorded != actual:
        raise ClassifierHashError(
            f"classifier {path} has sha256 {actual} but its sidecar {_sidecar(path).name} records {recorded}: "
            "the file changed or was truncated after it was saved. " + _rebuild(path)
        )


def load_classifier(
    name_or_path: str | os.PathLike[str],
    directory: str | os.PathLike[str] | None = None,
    expected_sha256: str | None = None,
    *,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, ClassifierRecord]:
    """Load a classifier by name (from ``directory``, default ``~/.mmbench/classifiers``) or by path.

    The file is hashed before it is unpickled (``weights_only=True``); a mismatch with ``expected_sha256``
    or with the sidecar's sha256 raises :class:`ClassifierHashError`. Returns the model in eval mode.
    """
    path = _resolve(name_or_path, directory)
    if not path.is_file():
        raise ClassifierNotFoundError(
            f"no classifier {path.stem!r} at {path}; train it with: {train_command(path.stem, path.parent)}"
        )
    data = path.read_bytes()
    sha = sha256_bytes(data)
    _check_hash(path, sha, expected_sha256)
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    model = build_classifier(payload["arch"])
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    return model, ClassifierRecord(path.stem, sha, payload["arch"], path, payload["meta"])


def file_sha256(name_or_path: str | os.PathLike[str], directory: str | os.PathLike[str] | None = None) -> str:
    """The sha256 of a checkpoint file (its identity together with its name)."""
    return sha256_file(_resolve(name_or_path, directory))


def checkpoint_files(name: str, sha256: str, directory: str | os.PathLike[str] | None = None) -> tuple[Path, Path] | None:
    """The checkpoint ``name`` and its sidecar when that file is the one with ``sha256`` (e.g. the one runs were
    scored with, to attach to their bundle); None when the file is missing or another."""
    path = _resolve(name, directory)
    if not path.is_file() or not _sidecar(path).is_file() or sha256_file(path) != sha256:
        return None
    return path, _sidecar(path)


def install_checkpoint(path: Path, directory: str | os.PathLike[str] | None = None) -> str:
    """Copy a checkpoint and the sidecar beside it (from a bundle) into the classifier folder, after checking the
    file against the sidecar; a checkpoint of that name already there is kept. Returns what happened, in words."""
    actual = sha256_file(path)
    _check_hash(path, actual, None)
    target = _resolve(path.stem, directory)
    if target.is_file():
        here = sha256_file(target)
        if here == actual:
            return f"classifier {path.stem}: already here ({target})"
        return (f"classifier {path.stem}: kept the one here (sha256 {here[:12]}…), not the bundle's ({actual[:12]}…); "
                f"move {target} away and import again to score new runs as the bundle's were")
    atomic.write_bytes(_sidecar(target), _sidecar(path).read_bytes())
    atomic.write_bytes(target, path.read_bytes())
    return f"classifier {path.stem}: installed {target} (sha256 {actual[:12]}…)"
