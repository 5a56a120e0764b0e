"""Conditional generation of one evaluation with and without the generation plan, over batch sizes.

An SBM-VAE at `quick`'s widths (autoencoder width 0.25, score UNet dim 64), trained a few steps on the
synthetic pattern data with M modalities (the Extended PolyMNIST shape: 3×28×28 images, M = 10): its
clean conditional queries of one evaluation (M leave-one-out queries on every tuple, the 2(M−2) k-curve
queries on ``--curves`` of them) generated through :class:`mmbench.metrics.samples.SampleCache`

- *per group*: each group on its own, ``batch_size`` tuples per sampler call with all the group's queries
  (a call holds queries × batch_size samples, so M × batch_size for leave-one-out);
- *plan*: every sample of every group in one line, cut into sampler calls of ``batch_size`` samples.

Printed per batch size: wall and CPU seconds (the CPU time of one thread is the steadier figure on a
shared machine), sampler calls, the largest call, samples per CPU second, and the CPU-time ratio
per group / plan. Untrained and trained weights cost the same; the few training steps only make the
numbers a real model's. FGSM's attacked replay is not timed (it repeats the leave-one-out passes).

    python benchmarks/bench_generation_plan.py [--modalities 10] [--tuples 60] [--curves 30] \\
        [--sampler-steps 5] [--batches 64,128,256,512] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mmbench import registry
from mmbench.data.synthetic import make_patterns
from mmbench.metrics.catalog import loo_given
from mmbench.metrics.samples import SampleCache
from mmbench.training.trainer import TrainerOptions, train_model


def build(modalities: int, sampler_steps: int, train_steps: int) -> torch.nn.Module:
    names = [f"m{i}" for i in range(modalities)]
    model = registry.build("sbm-vae", names, {
        "width": 0.25, "dim": 64, "sampler_steps": sampler_steps, "ae_steps": train_steps,
        "score_steps": train_steps, "ae_batch_size": 32, "score_batch_size": 32,
    })
    train = make_patterns(modalities, n=256, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        train_model(model, train, None, TrainerOptions(workdir=Path(tmp), config_hash="bench-plan", quiet=True))
    return model


class CallCounter:
    """Wraps the model's ``_generate`` to record the samples of each sampler call."""

    def __init__(self, model) -> None:
        self.sizes: list[int] = []
        self._inner = model._generate
        model._generate = self

    def __call__(self, known, observed, context):
        self.sizes.append(known.shape[0])
        return self._inner(known, observed, context)


def generate(model, data, batch: int, curves: int, plan: bool, counter: CallCounter) -> tuple[float, float, list[int]]:
    """Wall and CPU seconds to generate every clean conditional group, and the sampler calls' sizes."""
    counter.sizes = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = SampleCache(Path(tmp), model, data, n_unconditional=2, batch_size=batch, seed=0, n_curves=curves,
                             plan_batch=batch if plan else None)
        start, cpu = time.perf_counter(), time.process_time()
        names = list(model.modalities)
        cache.conditional(loo_given(names, names[0]), names[0])
        if "curves" in cache.groups:
            given, targets = cache.groups["curves"].queries[0]
            cache.conditional(sorted(given), sorted(targets)[0])
        return time.perf_counter() - start, time.process_time() - cpu, list(counter.sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modalities", type=int, default=10)
    parser.add_argument("--tuples", type=int, default=60, help="test tuples (n_conditional)")
    parser.add_argument("--curves", type=int, default=30, help="tuples of the k-curves (n_curves)")
    parser.add_argument("--sampler-steps", type=int, default=5, help="PC steps N (2N score evaluations)")
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--batches", default="64,128,256,512")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args.modalities, args.sampler_steps, args.train_steps)
    data = make_patterns(args.modalities, n=args.tuples, seed=1)
    counter = CallCounter(model)
    generate(model, data.subset(4, stratified=False), 8, 2, True, counter)  # warm-up
    print(f"SBM-VAE, M = {args.modalities}, {args.tuples} tuples ({args.curves} for the curves), PC N = "
          f"{args.sampler_steps} ({model.last_nfe} score evaluations), {torch.get_num_threads()} thread(s)")
    print(f"{'batch':>6} {'layout':>9} {'wall s':>8} {'CPU s':>8} {'calls':>6} {'largest':>8} {'samples/CPU s':>14} {'ratio':>6}")
    for batch in [int(b) for b in args.batches.split(",")]:
        seconds = {}
        for plan in (False, True):
            elapsed, cpu, sizes = generate(model, data, batch, args.curves, plan, counter)
            seconds[plan] = cpu
            layout = "plan" if plan else "per group"
            ratio = f"{seconds[False] / cpu:6.2f}" if plan else ""
            print(f"{batch:>6} {layout:>9} {elapsed:8.2f} {cpu:8.2f} {len(sizes):>6} {max(sizes):>8} "
                  f"{int(np.sum(sizes)) / cpu:14.1f} {ratio:>6}", flush=True)


if __name__ == "__main__":
    main()
