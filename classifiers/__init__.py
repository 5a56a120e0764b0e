"""Digit classifiers for the metrics: the paper's evaluation classifier and the FGSM substitute.

- :mod:`classifiers.nets`: :class:`PMClassifier` (sbmae ``PMCLF``) and :class:`SubstituteClassifier`;
- :mod:`classifiers.train`: :func:`train_classifier`, :func:`evaluate_classifier` and the role recipes;
- :mod:`classifiers.store`: checkpoints, identity (name + sha256) and :func:`load_classifier`.
"""

from classifiers.nets import ARCHITECTURES, PMClassifier, SubstituteClassifier, build_classifier
from classifiers.store import (
    ClassifierHashError,
    ClassifierNotFoundError,
    ClassifierRecord,
    default_name,
    load_classifier,
    save_classifier,
)
from classifiers.train import RECIPES, Recipe, evaluate_classifier, summarize, train_classifier

__all__ = [
    "ARCHITECTURES",
    "RECIPES",
    "ClassifierHashError",
    "ClassifierNotFoundError",
    "ClassifierRecord",
    "PMClassifier",
    "Recipe",
    "SubstituteClassifier",
    "build_classifier",
    "default_name",
    "evaluate_classifier",
    "load_classifier",
    "save_classifier",
    "summarize",
    "train_classifier",
]
