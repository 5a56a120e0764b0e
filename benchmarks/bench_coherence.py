"""Steps and minutes each model needs on PolyMNIST to reach a leave-one-out coherence target.

This is the measurement that sizes the ``quick`` budget (issue: the cheapest budget at which every model's
leave-one-out coherence on polymnist10 is ≥ 0.5; chance is 0.1).

For each model it builds the model at one scale (the :class:`~mmbench.suites.spec.Scale` a budget would
use, mapped to the model's fields by ``mmbench.suites.scales``), trains it through the real trainer and,
every ``--eval-every`` steps of the model's **last** stage, measures the mean leave-one-out coherence
(each modality generated from all the others, scored by the evaluation classifier) on ``--eval-n`` test
tuples. Earlier stages (the SBM/MLD unimodal autoencoders, the -T encoders, the score net of -C) run
their scaled steps first; their time is counted. The evaluation runs under ``torch.random.fork_rng`` so the
training's random stream is the same as without it. It stops at the target or at ``--max-steps`` and
prints one line per evaluation and a summary row per model:

    model  stage  steps-to-target  train-minutes-to-target  best coherence (at steps)

Usage (from the repository root, data and classifier prepared)::

    python benchmarks/bench_coherence.py --dataset polymnist10 --models mvae,sbm-vae \\
        --width 0.25 --batch-size 64 --steps 2000 --max-steps 6000 --eval-every 250 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from classifiers.store import load_classifier
from mmbench import registry
from mmbench.data.store import load_dataset
from mmbench.seeding import seed_everything
from mmbench.suites.scales import scaled
from mmbench.suites.spec import Scale
from mmbench.testing import leave_one_out_coherence
from mmbench.training.artifacts import ArtifactStore
from mmbench.training.trainer import TrainerOptions, TrainingStopped, train_model


@dataclass
class Trace:
    """Coherence along the last stage's steps, and the training seconds spent up to each point."""

    model: str
    last_stage: str
    points: list[tuple[int, float, float]] = field(default_factory=list)  # (step, train seconds, coherence)
    target: float = 0.5

    @property
    def reached(self) -> tuple[int, float] | None:
        for step, seconds, value in self.points:
            if value >= self.target:
                return step, seconds
        return None

    @property
    def best(self) -> tuple[int, float]:
        step, _, value = max(self.points, key=lambda p: p[2], default=(0, 0.0, 0.0))
        return step, value


class _Watcher:
    """Trainer callback: times training (evaluation excluded) and scores the last stage every K steps."""

    def __init__(self, model, test, classifier, trace: Trace, every: int, say) -> None:
        self.model, self.test, self.classifier, self.trace = model, test, classifier, trace
        self.every, self.say = every, say
        self.train_seconds = 0.0
        self.mark = time.perf_counter()
        self.stop = False

    def __call__(self, stage: str, step: int, values: dict[str, float]) -> None:
        now = time.perf_counter()
        self.train_seconds += now - self.mark
        if stage == self.trace.last_stage and step % self.every == 0 and "val/loss" not in values:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(1)
                scores = leave_one_out_coherence(self.model, self.test, self.classifier, batch_size=250)
            mean = sum(scores.values()) / len(scores)
            self.trace.points.append((step, self.train_seconds, mean))
            self.say(f"  {self.trace.model:<10} {stage}:{step:>6}  train {self.train_seconds / 60:6.1f} min  "
                     f"coherence/loo/mean {mean:.3f}  (min {min(scores.values()):.3f}, eval "
                     f"{time.perf_counter() - now:.0f} s)")
            self.stop = mean >= self.trace.target
        self.mark = time.perf_counter()


def _overrides(name: str, scale: Scale, max_steps: int, data_id: str) -> dict:
    """The model's scaled fields, with the last stage's step count raised to ``max_steps``."""
    fields = scaled(scale, name)
    probe = registry.build(name, ["m0", "m1"], fields)
    last = probe.stages()[-1].name
    key = {"joint": "steps", "score": "score_steps", "energy": "energy_steps"}[last]
    fields[key] = max_steps
    config = registry.entry(name).target
    if config.startswith(("sbm.", "baselines.mld")):
        fields["data_id"] = data_id
    return fields


def measure(name: str, args: argparse.Namespace, train, test, classifier, store: ArtifactStore, say) -> Trace:
    scale = Scale(width=args.width, steps=args.steps, batch_size=args.batch_size, sampler_steps=args.sampler_steps,
                  score_width=args.score_width)
    overrides = _overrides(name, scale, args.max_steps, train.data_hash)
    seed_everything(0)
    model = registry.build(name, train.modalities, overrides)
    trace = Trace(name, model.stages()[-1].name, target=args.target)
    watcher = _Watcher(model, test, classifier, trace, args.eval_every, say)
    say(f"{name}: {json.dumps(overrides, sort_keys=True)}")
    with tempfile.TemporaryDirectory() as tmp:
        options = TrainerOptions(workdir=Path(tmp), config_hash=name, quiet=True, log_every=args.eval_every,
                                 callback=watcher, artifacts=store, model_name=name,
                                 should_stop=lambda: watcher.stop)
        try:
            train_model(model, train, None, options)
        except TrainingStopped:
            pass
    return trace


def summary(trace: Trace) -> str:
    hit = trace.reached
    best_step, best = trace.best
    reached = f"{hit[0]:>7} {hit[1] / 60:>9.1f}" if hit else f"{'—':>7} {'—':>9}"
    return f"{trace.model:<10} {trace.last_stage:<7} {reached} {best:>8.3f} @ {best_step}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="polymnist10")
    parser.add_argument("--classifier", default=None, help="evaluation classifier name [DATASET-eval]")
    parser.add_argument("--models", default="mvae")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2000, help="steps of every stage before the last")
    parser.add_argument("--max-steps", type=int, default=6000, help="cap on the last stage's steps")
    parser.add_argument("--sampler-steps", type=int, default=100)
    parser.add_argument("--score-width", type=int, default=64)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--eval-n", type=int, default=500, help="test tuples scored per evaluation")
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--artifacts", default=None, help="artifact store for shared stages [a temporary one]")
    parser.add_argument("--json", default=None, help="also write the traces here")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    def say(text: str) -> None:
        print(text, flush=True)

    train = load_dataset(args.dataset, "train", verify=False)
    test = load_dataset(args.dataset, "test", verify=False).subset(args.eval_n)
    classifier, record = load_classifier(args.classifier or f"{args.dataset}-eval")
    say(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}; {args.dataset} ({len(train)} train tuples, M={len(train.modalities)}), "
        f"classifier {record.name} {record.sha256[:8]}; width {args.width}, batch {args.batch_size}, earlier "
        f"stages {args.steps} steps, last stage ≤ {args.max_steps}, target {args.target}")
    traces = []
    with tempfile.TemporaryDirectory() as tmp:
        store = ArtifactStore(Path(args.artifacts or tmp))
        for name in args.models.split(","):
            traces.append(measure(name, args, train, test, classifier, store, say))
            if args.json:
                Path(args.json).write_text(json.dumps([asdict(t) for t in traces], indent=1))
    say(f"\n{'model':<10} {'stage':<7} {'steps':>7} {'train min':>9} {'best':>8}   (steps/minutes to "
        f"coherence/loo/mean ≥ {args.target}; train minutes include earlier stages)")
    for trace in traces:
        say(summary(trace))


if __name__ == "__main__":
    main()
