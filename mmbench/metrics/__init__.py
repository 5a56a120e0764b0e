"""The metric pipeline (PROTOCOL.md §3; keys and definitions in docs/metrics.md).

``evaluate(model, test, metrics, settings, workdir)`` generates every sample once (a sample cache under
the workdir), runs the requested metrics and returns flat ``{key: float}`` values, skip reasons,
artifacts and provenance. Importing this package does not import torch.
"""

from mmbench.metrics.base import MetricOutput, MetricSkipped, MetricSpec, register_metric
from mmbench.metrics.pipeline import (
    EvalResult,
    EvalSettings,
    check_resources,
    dataset_kinds,
    evaluate,
    expected_keys,
    higher_is_better,
    metric_names,
    metric_needs,
)

__all__ = [
    "EvalResult",
    "EvalSettings",
    "MetricOutput",
    "MetricSkipped",
    "MetricSpec",
    "check_resources",
    "dataset_kinds",
    "evaluate",
    "expected_keys",
    "higher_is_better",
    "metric_names",
    "metric_needs",
    "register_metric",
]
