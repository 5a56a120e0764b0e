"""Black-box FGSM robustness of conditional generation (Wesego & Rooshenas 2024 §4.2.1, Table 3).

FGSM (Goodfellow et al. 2015): ``x_adv = clamp(x + ε·sign(∇_x CE(f(x), y)), 0, 1)``. Black box (Papernot
et al. 2017): ``f`` is a separately trained *substitute* classifier, not the generative model nor the
evaluation classifier. Every observed image modality is attacked; each modality is then generated from
all the others (leave-one-out), once from clean and once from attacked inputs, with the same seeds, and
the metric (coherence for images, F1 for attribute data) is reported both ways with the percentage drop
``100·(clean − adv)/clean``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmbench.metrics.base import MetricOutput, MetricSkipped
from mmbench.metrics.catalog import loo_given
from mmbench.metrics.coherence import coherence
from mmbench.metrics.context import EvalContext
from mmbench.metrics.f1 import as_unit, f1_samples
from mmbench.metrics.samples import Transform


def fgsm_attack(net: nn.Module, x: Tensor, labels: Tensor, epsilon: float) -> Tensor:
    """One signed-gradient step of size ``epsilon`` that increases ``net``'s cross-entropy, clamped to [0, 1]."""
    was_training = net.training
    net.eval()
    try:
        with torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            loss = F.cross_entropy(net(x), labels)
            (grad,) = torch.autograd.grad(loss, x)
    finally:
        net.train(was_training)
    return (x.detach() + epsilon * grad.sign()).clamp_(0.0, 1.0)


def fgsm_transform(net: nn.Module, epsilon: float, modalities: list[str], device: str | torch.device) -> Transform:
    """A batch transform attacking the named (image) modalities with ``net``'s gradient."""

    def attack(batch: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        y = labels.to(device)
        return {
            m: fgsm_attack(net, x.to(device), y, epsilon).cpu() if m in modalities else x for m, x in batch.items()
        }

    return attack


def drop_pct(clean: float, adversarial: float) -> float:
    return 100.0 * (clean - adversarial) / clean


def _accuracies(ctx: EvalContext, substitute: nn.Module, epsilon: float) -> dict[str, float]:
    """Accuracy of the substitute and of the evaluation classifier on clean and attacked observed images."""
    evaluator = ctx.classifier[0]
    correct = {"substitute_acc/clean": 0, "substitute_acc/adv": 0, "eval_acc/clean": 0, "eval_acc/adv": 0}
    device = ctx.settings.device
    for batch, labels in ctx.data.iter_batches(ctx.settings.batch_size, ctx.images):
        y = labels.to(device)
        for m in ctx.images:
            x = batch[m].to(device)
            adv = fgsm_attack(substitute, x, y, epsilon)
            with torch.no_grad():
                for name, net in (("substitute_acc", substitute), ("eval_acc", evaluator)):
                    correct[f"{name}/clean"] += int((net(x).argmax(1) == y).sum())
                    correct[f"{name}/adv"] += int((net(adv).argmax(1) == y).sum())
    total = len(ctx.data) * len(ctx.images)
    return {k: v / total for k, v in correct.items()}


def _report(out: MetricOutput, metric: str, clean: dict[str, float], adv: dict[str, float]) -> None:
    for m in clean:
        out.values[f"fgsm/{metric}/clean/{m}"] = clean[m]
        out.values[f"fgsm/{metric}/adv/{m}"] = adv[m]
    mean_clean, mean_adv = float(np.mean(list(clean.values()))), float(np.mean(list(adv.values())))
    out.values[f"fgsm/{metric}/clean/mean"] = mean_clean
    out.values[f"fgsm/{metric}/adv/mean"] = mean_adv
    if mean_clean > 0:
        out.values[f"fgsm/{metric}/drop_pct"] = drop_pct(mean_clean, mean_adv)
    else:
        out.skipped[f"fgsm/{metric}/drop_pct"] = f"clean {metric} is 0: a relative drop is undefined"


def compute_fgsm(ctx: EvalContext) -> MetricOutput:
    if not ctx.images:
        raise MetricSkipped("FGSM attacks image modalities; the data has none")
    gaps = [m for m in ctx.names if ctx.unanswered(loo_given(ctx.names, m), m)]
    if gaps:
        raise MetricSkipped(f"FGSM compares leave-one-out generation from clean and attacked inputs; "
                            f"{type(ctx.model).__name__} does not answer it for {gaps}")
    s = ctx.settings
    substitute, record = ctx.substitute
    attack = fgsm_transform(substitute, s.fgsm_epsilon, ctx.images, s.device)
    attack_id = {"attack": "fgsm", "epsilon": s.fgsm_epsilon, "substitute_sha256": record.sha256, "attacked": ctx.images}
    out, clean, adv = MetricOutput(), {}, {}
    for m in ctx.images:
        clean[m] = coherence(ctx.conditional_predictions(loo_given(ctx.names, m), m), ctx.labels)
        adv[m] = coherence(ctx.predict(ctx.cache.adversarial(m, attack, attack_id)), ctx.labels)
    _report(out, "coherence", clean, adv)
    for key, value in _accuracies(ctx, substitute, s.fgsm_epsilon).items():
        out.values[f"fgsm/{key}"] = value
    if ctx.attributes:
        clean, adv = {}, {}
        for m in ctx.attributes:
            truth = as_unit(ctx.data.images[m])
            clean[m] = f1_samples(truth, as_unit(ctx.cache.conditional(loo_given(ctx.names, m), m)), ctx.kinds[m])
            adv[m] = f1_samples(truth, as_unit(ctx.cache.adversarial(m, attack, attack_id)), ctx.kinds[m])
        _report(out, "f1", clean, adv)
    rows = [(k, v) for k, v in out.values.items()]
    out.artifacts["fgsm.csv"] = ctx.write_csv("fgsm.csv", ["key", "value"], rows)
    out.provenance.update({"fgsm/epsilon": str(s.fgsm_epsilon), "fgsm/n": str(len(ctx.data))})
    return out
