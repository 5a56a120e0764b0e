"""What every metric computes from: the model, the evaluation data, the sample cache and the classifiers.

The context loads classifiers and the FID extractor lazily (only metrics that need them pay), memoises
predictions and features of cached samples (several metrics score the same samples), and writes CSV
artifacts atomically under ``<workdir>/artifacts``. With ``share_forward`` (FID through ``mmbench-clf``,
whose network *is* the evaluation classifier's file) one forward pass of the registered extractor gives
both the FID features and the logits of a sample set.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmbench import atomic
from mmbench.contract import MultimodalModel
from mmbench.data.dataset import MultimodalDataset
from mmbench.metrics.base import attribute_modalities, image_modalities
from mmbench.metrics.samples import SampleCache
from mmbench.metrics.settings import EvalSettings


class EvalContext:
    """Shared state of one evaluation (one model, one test split, one settings)."""

    def __init__(
        self,
        model: MultimodalModel,
        data: MultimodalDataset,
        real_unconditional: MultimodalDataset,
        kinds: dict[str, str],
        settings: EvalSettings,
        workdir: Path,
        progress: Callable[[str], None] | None = None,
        share_forward: bool = False,
    ) -> None:
        self.model = model
        self.data = data  # the tuples conditional metrics use (N = settings.n_conditional)
        self.real_unconditional = real_unconditional  # real images unconditional FID compares with
        self.kinds = kinds
        self.names = list(kinds)
        self.images = image_modalities(kinds)
        self.attributes = attribute_modalities(kinds)
        self.settings = settings
        self.workdir = Path(workdir)
        self.progress = progress
        self.share_forward = share_forward and settings.fid_extractor == "mmbench-clf"
        self.labels = np.asarray(data.labels)
        self.cache = SampleCache(
            self.workdir / "samples", model, data,
            n_unconditional=settings.n_unconditional, batch_size=settings.batch_size, seed=settings.seed,
            k_curves=settings.k_curves, n_curves=settings.n_curves, subsets=settings.subsets, progress=progress,
            plan_batch=settings.generation_batch if settings.generation_plan else None, kinds=kinds,
        )
        self.provenance: dict[str, str] = {}
        self._classifiers: dict[str, tuple[torch.nn.Module, Any]] = {}
        self._predictions: dict[tuple, np.ndarray] = {}
        self._features: dict[tuple, np.ndarray] = {}
        self._extractor: torch.nn.Module | None = None
        self._identity = None

    def unanswered(self, given: Sequence[str], target: str) -> str | None:
        """Why the model does not answer ``target`` given ``given`` (``MultimodalModel.answers``), or None."""
        return self.model.unanswered(frozenset(given), target)

    def say(self, message: str) -> None:
        if self.progress:
            self.progress(message)

    # --- classifiers -----------------------------------------------------------------------------
    def _load(self, role: str, name_or_path: str) -> tuple[torch.nn.Module, Any]:
        if role not in self._classifiers:
            from classifiers.store import load_classifier

            net, record = load_classifier(name_or_path, device=self.settings.device)
            self._classifiers[role] = (net, record)
            self.provenance[f"{role}/name"] = record.name
            self.provenance[f"{role}/sha256"] = record.sha256
            self.provenance[f"{role}/arch"] = record.arch
        return self._classifiers[role]

    @property
    def classifier(self) -> tuple[torch.nn.Module, Any]:
        """(evaluation classifier, its ClassifierRecord)."""
        return self._load("classifier", self.settings.classifier)

    @property
    def substitute(self) -> tuple[torch.nn.Module, Any]:
        """(FGSM substitute classifier, its ClassifierRecord)."""
        return self._load("substitute", self.settings.substitute)

    @torch.no_grad()
    def predict(self, images: np.ndarray, net: torch.nn.Module | None = None) -> np.ndarray:
        """Class predictions (argmax) of uint8 images, in batches on the settings' device."""
        net = self.classifier[0] if net is None else net
        out = []
        for start in range(0, len(images), self.settings.batch_size):
            x = torch.from_numpy(np.array(images[start : start + self.settings.batch_size]))
            out.append(net(x.to(self.settings.device).float() / 255.0).argmax(1).cpu())
        return torch.cat(out).numpy()

    @property
    def num_classes(self) -> int:
        net = self.classifier[0]
        shape = self.data.image_shape
        with torch.no_grad():
            return int(net(torch.zeros(1, *shape, device=self.settings.device)).shape[1])

    def conditional_predictions(self, given: Sequence[str], target: str) -> np.ndarray:
        return self._predicted(("conditional", frozenset(given), target), lambda: self.cache.conditional(given, target))

    def scored(self, given: Sequence[str], target: str, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(predictions, labels) of a conditional query on the tuples ``rows`` (default: all it answers)."""
        predictions = self.conditional_predictions(given, target)
        if rows is None:
            return predictions, self.labels[self.cache.rows(given, target)]
        return predictions[self.cache.positions(given, target, rows)], self.labels[rows]

    def conditional_features(self, given: Sequence[str], target: str, rows: np.ndarray | None = None) -> np.ndarray:
        """Extractor features of a conditional query's samples on the tuples ``rows`` (default: all)."""
        features = self.features(("conditional", frozenset(given), target), self.cache.conditional(given, target))
        return features if rows is None else features[self.cache.positions(given, target, rows)]

    def unconditional_predictions(self, modality: str) -> np.ndarray:
        return self._predicted(("unconditional", modality), lambda: self.cache.unconditional(modality))

    def _predicted(self, key: tuple, images: Callable[[], np.ndarray]) -> np.ndarray:
        if key not in self._predictions:
            if self.share_forward:
                self._forward(key, images())
            else:
                self._predictions[key] = self.predict(images())
        return self._predictions[key]

    # --- FID features ----------------------------------------------------------------------------
    @property
    def extractor_identity(self):
        if self._identity is None:
            from mmbench.metrics.extractors import CLASSIFIER, identify

            path = self.classifier[1].path if self.settings.fid_extractor == CLASSIFIER else None
            self._identity = identify(self.settings.fid_extractor, path, self.settings.inception_weights)
            self.provenance.update(self._identity.provenance())
        return self._identity

    def features(self, key: tuple, images: np.ndarray) -> np.ndarray:
        """Memoised extractor features of ``images`` (``key`` names them, e.g. the query they answer)."""
        if key not in self._features:
            self._forward(key, images)
        return self._features[key]

    def _forward(self, key: tuple, images: np.ndarray) -> None:
        from mmbench.metrics.extractors import build_extractor, extract_layers

        if self._extractor is None:
            extra = ("logits",) if self.share_forward else ()
            self._extractor = build_extractor(self.extractor_identity, self.settings.device, extra)
        layers = extract_layers(self._extractor, images, self.settings.batch_size, self.settings.device)
        self._features[key] = layers[0]
        if self.share_forward:
            self._predictions.setdefault(key, layers[1].argmax(1))

    # --- artifacts -------------------------------------------------------------------------------
    def artifact_path(self, name: str) -> Path:
        return self.workdir / "artifacts" / name

    def write_csv(self, name: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        path = self.artifact_path(name)
        atomic.write_text(path, buffer.getvalue())
        return path
