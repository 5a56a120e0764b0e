"""The classifier networks: the paper's evaluation classifier and a different substitute for FGSM.

Both take float images ``(B, 3, 28, 28)`` (PolyMNIST) or ``(B, 3, 32, 32)`` (the CelebA twin) in [0, 1]
and expose ``features(x)`` (the penultimate layer) and ``forward(x) = head(features(x))`` (logits over 10
classes: the digits; the twin's 7 shape-presence labels use the first 7).
"""

from __future__ import annotations

from torch import Tensor, nn

NUM_CLASSES = 10


class PMClassifier(nn.Module):
    """The PolyMNIST digit classifier of Wesego & Rooshenas 2024 (sbmae ``PMCLF``), one net for all modalities.

    Three 3×3 stride-2 convolutions (3→32→64→128, padding 1, ReLU), flatten (128×4×4 = 2048 for
    28×28 input), linear 2048→512 + ReLU (the features), linear 512→10 (the logits).
    """

    feature_dim = 512

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 128, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(128 * 4 * 4, self.feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The penultimate activations ``(B, 512)`` (after the ReLU), e.g. for an offline FID."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class SubstituteClassifier(nn.Module):
    """The substitute for black-box FGSM (Papernot et al. 2017): a net of a *different* architecture.

    A LeNet-style conv net with max-pooling, unlike :class:`PMClassifier`'s strided convolutions:
    3×3 conv 3→32 + ReLU + maxpool 2 (→ 14×14), 3×3 conv 32→64 + ReLU + maxpool 2 (→ 7×7),
    flatten 3136, linear → 256 + ReLU (the features), linear 256→10. The second pool is adaptive (to 7×7),
    the same operation at 28×28, so 32×32 images (the CelebA twin) fit too.
    """

    feature_dim = 256

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.AdaptiveMaxPool2d(7),  # = MaxPool2d(2) on 28×28 input; 7×7 from 32×32 images too
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, self.feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The penultimate activations ``(B, 256)``."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "pmclf": PMClassifier,
    "substitute-cnn": SubstituteClassifier,
}


def build_classifier(arch: str) -> nn.Module:
    """A freshly initialised classifier of a named architecture (see :data:`ARCHITECTURES`)."""
    try:
        cls = ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(
            f"unknown classifier architecture {arch!r}; known: {', '.join(ARCHITECTURES)}"
        ) from None
    return cls()
