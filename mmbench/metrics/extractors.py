"""FID feature extractors, used through torch-fidelity 0.4.0's registry (``toshas/torch-fidelity``).

- ``inception-v3-compat``: torch-fidelity's own Inception-v3 (pool3, 2048-d; bilinear resize to 299 as
  TF1.x did; uint8 input), always from a LOCAL weights file: never downloaded. torch-fidelity's and
  pytorch-fid's published files share one state_dict layout; either is read.
- ``mmbench-clf``: the evaluation classifier's penultimate layer (512-d for PMClassifier), offline and
  cheap on a CPU. Its "weights" are the classifier checkpoint; its sha256 is part of every FID's identity.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmbench import paths
from mmbench.hashing import sha256_file
from mmbench.records import FID_BY_EVAL_CLASSIFIER
from mmbench.seeding import seeded

INCEPTION = "inception-v3-compat"
CLASSIFIER = FID_BY_EVAL_CLASSIFIER
EXTRACTORS = (CLASSIFIER, INCEPTION)
INCEPTION_ENV = "MMBENCH_INCEPTION_WEIGHTS"
INCEPTION_FILES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
# torch.hub names files <name>-<first 8 hex digits of the file's sha256>: the standard FID weights' prefix.
INCEPTION_SHA256_PREFIX = "6726825d"
INCEPTION_BATCH = 32  # 299x299 activations: bigger CPU batches only cost memory


class InceptionWeightsError(FileNotFoundError):
    """The Inception FID weights are not on disk, or cannot be used; the message says where to put which file."""


@dataclass(frozen=True)
class ExtractorIdentity:
    """What FID features depend on: the extractor, its layer and its weights file (sha256)."""

    name: str
    layer: str
    weights_path: str
    weights_sha256: str

    def provenance(self) -> dict[str, str]:
        out = {"fid/extractor": self.name, "fid/layer": self.layer, "fid/extractor_weights_sha256": self.weights_sha256}
        if self.name == INCEPTION:
            standard = self.weights_sha256.startswith(INCEPTION_SHA256_PREFIX)
            out["fid/extractor_weights_standard"] = str(standard).lower()
        return out


def _classifier_extractor_class() -> type:
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.helpers import vassert

    class ClassifierFeatureExtractor(FeatureExtractorBase):
        """The evaluation classifier's ``features(x)`` (penultimate layer) as a torch-fidelity extractor."""

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            if feature_extractor_weights_path is None:
                raise ValueError(f"{name}: pass the classifier checkpoint as feature_extractor_weights_path")
            from classifiers.store import load_classifier

            self.net, self.record = load_classifier(feature_extractor_weights_path)
            if not hasattr(self.net, "features"):
                raise TypeError(f"{name}: classifier {self.record.name} has no features(x) method")
            self.requires_grad_(False)
            self.eval()

        @staticmethod
        def get_provided_features_list():
            return "features", "logits"

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"isc": "logits", "fid": "features", "kid": "features", "prc": "features"}[metric]

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 28, 28, dtype=torch.uint8)

        def forward(self, x):
            vassert(torch.is_tensor(x) and x.dtype == torch.uint8, "Expecting image as torch.Tensor with dtype=torch.uint8")
            features = self.net.features(x.float() / 255.0)
            out = {"features": features}
            if "logits" in self.features_list:
                out["logits"] = self.net.head(features)
            return tuple(out[f] for f in self.features_list)

    return ClassifierFeatureExtractor


def ensure_registered() -> None:
    """Register ``mmbench-clf`` with torch-fidelity once per process (a second registration asserts)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if CLASSIFIER not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(CLASSIFIER, _classifier_extractor_class())
    if INCEPTION not in FEATURE_EXTRACTORS_REGISTRY:  # torch-fidelity registers it on import
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        register_feature_extractor(INCEPTION, FeatureExtractorInceptionV3)


def default_inception_path() -> Path:
    return paths.home() / "weights" / INCEPTION_FILES[0]


def resolve_inception_weights(option: str | None = None) -> Path:
    """The local Inception FID weights: the option, else ``$MMBENCH_INCEPTION_WEIGHTS``, else the default place."""
    looked: list[str] = []
    for candidate, origin in ((option, "inception_weights option"), (os.environ.get(INCEPTION_ENV), f"${INCEPTION_ENV}")):
        if candidate:
            path = Path(candidate).expanduser()
            if path.is_file():
                return path
            looked.append(f"{path} (from {origin})")
    folder = default_inception_path().parent
    for name in INCEPTION_FILES:
        if (folder / name).is_file():
            return folder / name
        looked.append(str(folder / name))
    raise InceptionWeightsError(
        "FID extractor 'inception-v3-compat' needs the Inception-v3 FID weights as a local file; mmbench never "
        f"downloads them. Put torch-fidelity's {INCEPTION_FILES[0]} (release v0.2.0) or pytorch-fid's "
        f"{INCEPTION_FILES[1]} at {default_inception_path()}, or point ${INCEPTION_ENV} or the "
        f"inception_weights setting (--inception-weights) at it. Looked at: {'; '.join(looked)}. "
        "Or use the offline extractor fid_extractor='mmbench-clf'."
    )


def probe_inception(option: str | None = None) -> Path:
    """Load the Inception FID weights and run them on a dummy batch: a wrong, truncated or damaged file fails
    here, in seconds, before any training (not at evaluation, hours later). Returns the file's path."""
    path = resolve_inception_weights(option)
    try:
        extractor = build_extractor(ExtractorIdentity(INCEPTION, "2048", str(path), ""), "cpu")
        features = extract_features(extractor, np.zeros((2, 3, 28, 28), np.uint8), 2, "cpu")
    except Exception as exc:  # noqa: BLE001 (unpickling, missing keys, wrong shapes: all mean a wrong file)
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        raise InceptionWeightsError(_unusable(path, f"{type(exc).__name__}: {reason}")) from None
    if features.shape != (2, 2048) or not np.isfinite(features).all():
        raise InceptionWeightsError(_unusable(path, f"a dummy batch gives features of shape {features.shape} "
                                                    f"with {int((~np.isfinite(features)).sum())} non-finite values"))
    return path


def _unusable(path: Path, reason: str) -> str:
    return (f"the Inception FID weights {path} cannot be used ({reason}); put torch-fidelity's {INCEPTION_FILES[0]} "
            f"(release v0.2.0) or pytorch-fid's {INCEPTION_FILES[1]} there, or pass --inception-weights FILE")


def identify(name: str, classifier_path: str | Path | None, inception_weights: str | None) -> ExtractorIdentity:
    """The extractor's identity; missing weights raise before any feature is computed."""
    if name == INCEPTION:
        path = resolve_inception_weights(inception_weights)
        sha = sha256_file(path)
        if not sha.startswith(INCEPTION_SHA256_PREFIX):
            warnings.warn(
                f"{path} is not the standard FID Inception file (sha256 {sha[:16]}… does not start with "
                f"{INCEPTION_SHA256_PREFIX}); its FIDs are not comparable with published ones",
                stacklevel=2,
            )
        return ExtractorIdentity(INCEPTION, "2048", str(path), sha)
    if name == CLASSIFIER:
        if classifier_path is None:
            raise ValueError("the mmbench-clf extractor needs the evaluation classifier's checkpoint path")
        return ExtractorIdentity(CLASSIFIER, "features", str(classifier_path), sha256_file(classifier_path))
    raise ValueError(f"unknown FID extractor {name!r}; use one of {EXTRACTORS}")


def check_inception_file(path: str | Path) -> None:
    """Raise a ValueError naming the problem unless ``path`` holds an Inception FID state_dict in the layout
    torch-fidelity's and pytorch-fid's published files share (``Conv2d_1a_3x3.conv.weight`` … ``fc.bias``).

    The file is read with ``weights_only=True`` (tensors only), so an arbitrary pickle is refused before
    torch-fidelity unpickles it; torch-fidelity's strict ``load_state_dict`` then checks every key and shape.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types (UnpicklingError, RuntimeError, EOFError, ...)
        raise ValueError(
            f"{path} is not a torch state_dict file of tensors (torch.load with weights_only=True raised "
            f"{type(exc).__name__}: a pickled module or other objects are refused); "
            f"{INCEPTION} needs torch-fidelity's {INCEPTION_FILES[0]} or pytorch-fid's {INCEPTION_FILES[1]}"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(
            f"{path} holds a {type(state).__name__}, not a state_dict of tensors; save the network's "
            f"state_dict() (torch-fidelity's {INCEPTION_FILES[0]} and pytorch-fid's {INCEPTION_FILES[1]} are)"
        )
    if any(str(k).startswith("blocks.") for k in state):
        raise ValueError(
            f"{path} is the state_dict of pytorch-fid's InceptionV3 wrapper (keys 'blocks.N...'), which lacks "
            "the 1008-class fc layer; use pytorch-fid's published pt_inception-2015-12-05-6726825d.pth or the "
            "state_dict of pytorch_fid.inception.fid_inception_v3() (keys 'Conv2d_1a_3x3...', 'fc...')"
        )


def build_extractor(
    identity: ExtractorIdentity, device: str | torch.device = "cpu", extra_layers: tuple[str, ...] = ()
) -> torch.nn.Module:
    """A torch-fidelity feature extractor for ``identity`` (plus ``extra_layers``), on ``device``, in eval mode."""
    from torch_fidelity.utils import create_feature_extractor

    ensure_registered()
    if identity.name == INCEPTION:
        check_inception_file(identity.weights_path)
    try:
        extractor = create_feature_extractor(
            identity.name, [identity.layer, *extra_layers], cuda=False, verbose=False,
            feature_extractor_weights_path=identity.weights_path,
        )
    except RuntimeError as exc:  # load_state_dict: wrong keys or shapes
        raise ValueError(f"{identity.weights_path} does not hold weights for {identity.name}: {exc}") from exc
    return extractor.to(device)


@torch.no_grad()
def extract_layers(
    extractor: torch.nn.Module, images: np.ndarray, batch_size: int, device: str | torch.device
) -> tuple[np.ndarray, ...]:
    """float32 outputs ``(N, D_i)`` of every layer the extractor was built with, for uint8 ``(N, 3, H, W)``."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"FID features need uint8 (N, 3, H, W) images, got {images.dtype} {images.shape}")
    if getattr(extractor, "name", "") == INCEPTION:
        batch_size = min(batch_size, INCEPTION_BATCH)
    chunks: list[tuple[Tensor, ...]] = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.array(images[start : start + batch_size])).to(device)
        chunks.append(tuple(out.float().cpu() for out in extractor(x)))
    return tuple(torch.cat(parts).numpy() for parts in zip(*chunks, strict=True))


def extract_features(extractor: torch.nn.Module, images: np.ndarray, batch_size: int, device: str | torch.device) -> np.ndarray:
    """float32 features ``(N, D)`` (the extractor's first layer) of uint8 images ``(N, 3, H, W)``, in batches."""
    return extract_layers(extractor, images, batch_size, device)[0]


def random_inception_weights(path: str | Path, seed: int = 0) -> Path:
    """Write a randomly initialised torch-fidelity Inception state_dict (tests and speed benchmarks only)."""
    from unittest import mock

    from torch_fidelity import feature_extractor_inceptionv3 as tfi

    with seeded(seed, torch.device("cpu")):
        with mock.patch.object(tfi, "load_state_dict_from_url", return_value=None), mock.patch.object(
            tfi.FeatureExtractorInceptionV3, "load_state_dict", return_value=None
        ):
            module = tfi.FeatureExtractorInceptionV3(INCEPTION, ["2048"], feature_extractor_weights_path=None)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(module.state_dict(), path)
    return path
