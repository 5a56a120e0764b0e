"""Steps and minutes each model needs on PolyMNIST to reach a leave-one-out coherence target.

This is the measurement that sizes the ``quick`` budget (issue: the cheapest budget at which every model's
leave-one-out coherence on polymnist10 is ≥ 0.5; chance is 0.1).

For each model it builds the model at one scale (the :class:`~mmbench.scaling.Scale` a budget would
use, mapped onto the model's fields by its own Config), trains it through the real trainer and,
every ``--eval-every`` steps of the model's **last** stage, measures the mean leave-one-out coherence
(each modality generated from all the others, scored by the evaluation classifier) on ``--eval-n`` test
tuples. Earlier stages (the SBM/MLD unimodal autoencoders, the -T encoders, the score net of -C) run
their scaled steps first; their time is counted. The evaluation runs under ``mmbench.seeding.seeded`` (a forked RNG) so the
training's random stream is the same as without it. It stops at the target or at ``--max-steps`` and
prints one line per evaluation and a summary row per model:

    model  stage  steps-to-target  train-minutes-to-target  best coherence (at steps)

Resumable: with ``--state DIR`` each model keeps its trainer checkpoints and its trace (points and the
training seconds logged every ``--log-every`` steps) in ``DIR/<model>-<hash of the settings>``; a rerun
with the same settings resumes from the last checkpoint (earlier points kept, the points after it
re-measured, the training clock restored to the checkpoint's step within ``--log-every`` steps) and a
model already at its target or cap is reported without training. The hash leaves out the last stage's step
cap when that stage's rate is constant, so a rerun with a larger ``--max-steps`` extends a record from its
last checkpoint (folders named before 2026-12-02 hash the cap too and cannot be extended). With ``--artifacts`` the finished
earlier stages (the autoencoders) are stored by their reuse key and shared by every model (and by ``mmbench run``,
when it is the harness's store, ``$MMBENCH_HOME/artifacts``, and the settings match a budget's); the measured
last stage is always trained here, never loaded from the store nor written to it (``RecordStore``).

``--set FIELD=VALUE`` (repeatable; VALUE a Python literal, strings quoted) overrides a config field of
every measured model after the scale's fields, e.g. ``--set cross_targets=2`` for MMVAE's sub-sampled
cross reconstructions; the overrides are part of the settings, so of the state directory's hash.

Usage (from the repository root, data and classifier prepared)::

    python benchmarks/bench_coherence.py --dataset polymnist10 --models mvae,sbm-vae \\
        --width 0.25 --batch-size 64 --steps 2000 --max-steps 6000 --eval-every 500 --threads 2 \\
        --state ~/.mmbench/bench/coherence --artifacts ~/.mmbench/artifacts
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from classifiers.store import load_classifier
from mmbench import atomic, registry
from mmbench.config import parse_sets
from mmbench.data.store import load_dataset
from mmbench.hashing import config_hash
from mmbench.runner.models import scaled
from mmbench.scaling import Scale
from mmbench.seeding import seed_everything, seeded
from mmbench.suites.polymnist import PAPER_MODELS
from mmbench.testing import leave_one_out_coherence
from mmbench.training.artifacts import ArtifactStore
from mmbench.training.device import resolve_device
from mmbench.training.trainer import TrainerOptions, TrainingStopped, stage_progress, train_model


@dataclass
class Trace:
    """Coherence along the last stage's steps, and the training seconds spent up to each point."""

    model: str
    last_stage: str
    points: list[tuple[int, float, float]] = field(default_factory=list)  # (step, train seconds, coherence)
    target: float = 0.5
    clock: list[tuple[str, int, float]] = field(default_factory=list)  # (stage, step, train seconds) as logged
    settings: dict = field(default_factory=dict)

    def save(self, path: Path | None) -> None:
        if path is not None:
            atomic.write_text(path, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> Trace:
        data = json.loads(path.read_text())
        data["points"] = [tuple(p) for p in data["points"]]
        data["clock"] = [tuple(c) for c in data["clock"]]
        return cls(**data)

    def rewind(self, progress: list[tuple[str, int, bool]]) -> float:
        """Forget what happened after the checkpoints a resumed run starts from; the training seconds then."""
        order = {name: i for i, (name, _, _) in enumerate(progress)}
        resume = next(((i, step) for i, (_, step, done) in enumerate(progress) if not done), (len(progress), 0))
        kept = [c for c in self.clock if (order[c[0]], c[1]) <= resume]
        self.clock = kept
        last = order[self.last_stage]
        if resume[0] <= last:  # the last stage restarts at resume[1] (at 0 when an earlier stage is unfinished)
            self.points = [p for p in self.points if p[0] <= (resume[1] if resume[0] == last else 0)]
        return max((c[2] for c in kept), default=0.0)

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

    def __init__(self, model, test, classifier, trace: Trace, every: int, say, path: Path | None = None,
                 train_seconds: float = 0.0) -> None:
        self.model, self.test, self.classifier, self.trace = model, test, classifier, trace
        self.every, self.say, self.path = every, say, path
        self.train_seconds = train_seconds
        self.mark = time.perf_counter()
        self.stop = False

    def __call__(self, stage: str, step: int, values: dict[str, float]) -> None:
        now = time.perf_counter()
        self.train_seconds += now - self.mark
        if "val/loss" not in values:
            previous = self.trace.clock[-1] if self.trace.clock else None
            if previous is not None and previous[0] != stage:
                self.say(f"  {self.trace.model:<10} {previous[0]} done after {previous[1]} steps, "
                         f"train {previous[2] / 60:6.1f} min so far")
            self.trace.clock.append((stage, step, self.train_seconds))
        if stage == self.trace.last_stage and step % self.every == 0 and "val/loss" not in values:
            with seeded(1, self.model.device):
                scores = leave_one_out_coherence(self.model, self.test, self.classifier, batch_size=250)
            mean = sum(scores.values()) / len(scores)
            self.trace.points = [p for p in self.trace.points if p[0] != step] + [(step, self.train_seconds, mean)]
            self.say(f"  {self.trace.model:<10} {stage}:{step:>6}  train {self.train_seconds / 60:6.1f} min  "
                     f"coherence/loo/mean {mean:.3f}  (min {min(scores.values()):.3f}, eval "
                     f"{time.perf_counter() - now:.0f} s)")
            self.stop = mean >= self.trace.target
        self.trace.save(self.path)
        self.mark = time.perf_counter()


def last_steps_field(name: str, fields: dict[str, Any] | None = None) -> str:
    """The Config field holding the step count of the model's last stage."""
    probe = registry.build(name, ["m0", "m1"], fields or {})
    return {"joint": "steps", "score": "score_steps", "energy": "energy_steps"}[probe.stages()[-1].name]


def _overrides(name: str, scale: Scale, max_steps: int, data_id: str, sets: dict[str, Any] | None = None) -> dict:
    """The model's scaled fields, with the last stage's step count raised to ``max_steps``, then ``sets``."""
    fields = scaled(name, scale)
    fields[last_steps_field(name, fields)] = max_steps
    config = registry.entry(name).target
    if config.startswith(("sbm.", "baselines.mld")):
        fields["data_id"] = data_id
    return {**fields, **(sets or {})}


def runner_data_id(dataset: str, modalities: Sequence[str], family: str = "polymnist") -> str:
    """The data identity ``mmbench run`` gives the dataset's full train split on these modalities (its
    source's ``identity``, as ``mmbench.runner.data.data_ref``): the stages trained here carry it in their reuse
    keys, so a run's jobs load them and these records load a run's. (Before 2026-12-01 the records used the
    dataset's content hash, which no run's key matches: stages stored then are shared with no run.)"""
    from mmbench.data.registry import get_source

    source = get_source(family, dataset, len(modalities))
    return source.identity(tuple(modalities), source.sizes({})).data_id


def run_settings(name: str, overrides: dict, args: argparse.Namespace, data_hash: str) -> dict:
    """What a trace was measured with (its state directory is named by their hash)."""
    return json.loads(json.dumps({"model": name, "overrides": overrides, "eval_every": args.eval_every,
                                  "eval_n": args.eval_n, "target": args.target, "dataset": data_hash}))


def state_key(name: str, settings: dict, model, state: str | None) -> dict:
    """What names a record's state folder and its checkpoints: its settings without the last stage's step cap
    when that stage's rate is constant, so that a record run again with a larger ``--max-steps`` trains on
    from where it stopped (the trainer extends a finished constant-rate stage). A folder named by the whole
    settings (records started before 2026-12-02) keeps its name, and so cannot be extended."""
    if model.stages()[-1].hparams.lr_schedule != "constant":
        return settings
    legacy = Path(state).expanduser() / f"{name}-{config_hash(settings, length=12)}" if state else None
    if legacy is not None and legacy.is_dir():
        return settings
    overrides = {k: v for k, v in settings["overrides"].items() if k != last_steps_field(name, settings["overrides"])}
    return {**settings, "overrides": overrides}


class RecordStore(ArtifactStore):
    """The artifact store as a record uses it: the earlier stages shared both ways, the measured last stage
    neither loaded nor stored. A record is the curve of training that stage here; loaded from a run's store
    (the same reuse key as a `quick` job's), it would train nothing and measure nothing."""

    def __init__(self, root: Path, measured_key: str | None) -> None:
        super().__init__(root)
        self.measured_key = measured_key

    def has(self, key: str) -> bool:
        return key != self.measured_key and super().has(key)

    def load(self, key: str, map_location: str | torch.device = "cpu") -> tuple[dict, dict] | None:
        return None if key == self.measured_key else super().load(key, map_location)

    def save(self, key: str, state_dict: dict, meta: dict) -> Path:
        """Stores every stage but the measured one (its path is returned, nothing written)."""
        return self.path(key) if key == self.measured_key else super().save(key, state_dict, meta)


def measure(name: str, args: argparse.Namespace, train, test, classifier, store: ArtifactStore, say) -> Trace:
    scale = Scale(width=args.width, steps=args.steps, batch_size=args.batch_size, sampler_steps=args.sampler_steps,
                  score_width=args.score_width)
    overrides = _overrides(name, scale, args.max_steps, runner_data_id(args.dataset, train.modalities, args.family), args.sets)
    seed_everything(0)
    model = registry.build(name, train.modalities, overrides)
    settings = state_key(name, run_settings(name, overrides, args, train.data_hash), model, args.state)
    say(f"{name}: {json.dumps(overrides, sort_keys=True)}")
    store = RecordStore(store.root, model.stages()[-1].reuse_key)
    with _workdir(args.state, f"{name}-{config_hash(settings, length=12)}") as workdir:
        options = TrainerOptions(workdir=workdir, config_hash=config_hash(settings), quiet=True,
                                 log_every=args.log_every, artifacts=store, model_name=name,
                                 device=resolve_device(args.device), amp=args.amp)
        trace_path = workdir / "trace.json" if args.state else None
        trace, seconds = _resume(model, options, trace_path, settings, args.target, say)
        if trace.reached or (trace.points and trace.points[-1][0] >= args.max_steps):
            say(f"  {name}: already measured ({len(trace.points)} points in {trace_path})")
            return trace
        trace.save(trace_path)  # at once: a run cut before its first point still names its settings
        watcher = _Watcher(model, test, classifier, trace, args.eval_every, say, trace_path, seconds)
        options.callback, options.should_stop = watcher, lambda: watcher.stop
        try:
            train_model(model, train, None, options)
        except TrainingStopped:
            pass
        except KeyboardInterrupt:  # cut (Ctrl-C, a deadline): keep the clock; the trainer's checkpoints stay
            trace.save(trace_path)
            raise
        trace.save(trace_path)
    return trace


@contextlib.contextmanager
def _workdir(state: str | None, name: str) -> Iterator[Path]:
    if state:
        path = Path(state).expanduser() / name
        path.mkdir(parents=True, exist_ok=True)
        yield path
    else:
        with tempfile.TemporaryDirectory() as tmp:
            yield Path(tmp)


def _resume(model, options: TrainerOptions, path: Path | None, settings: dict, target: float,
            say) -> tuple[Trace, float]:
    """The stored trace rewound to the trainer's checkpoints (a fresh one without), and its training seconds."""
    if path is None or not path.exists():
        return Trace(settings["model"], model.stages()[-1].name, target=target, settings=settings), 0.0
    trace = Trace.load(path)
    if trace.settings != settings:
        raise SystemExit(f"{path} was measured with other settings; use another --state directory")
    seconds = trace.rewind(stage_progress(model, options))
    say(f"  {trace.model}: resuming at {trace.clock[-1][0] if trace.clock else 'the start'} "
        f"step {trace.clock[-1][1] if trace.clock else 0}, {seconds / 60:.1f} train min so far, "
        f"{len(trace.points)} points kept")
    return trace, seconds


def summary(trace: Trace) -> str:
    hit = trace.reached
    best_step, best = trace.best
    reached = f"{hit[0]:>7} {hit[1] / 60:>9.1f}" if hit else f"{'—':>7} {'—':>9}"
    return f"{trace.model:<10} {trace.last_stage:<7} {reached} {best:>8.3f} @ {best_step}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)  # a deadline (timeout) cuts a run as Ctrl-C does: its trace is kept
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="polymnist", help="the dataset's family (mmbench ls datasets)")
    parser.add_argument("--dataset", default="polymnist10")
    parser.add_argument("--classifier", default=None, help="evaluation classifier name [DATASET-eval]")
    parser.add_argument("--models", default="mvae", help="comma-separated registered names, or 'all' (the suites' twelve)")
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
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (training and evaluation)")
    parser.add_argument("--amp", action="store_true", help="mixed precision on CUDA (ignored on the CPU)")
    parser.add_argument("--state", default=None, help="keep checkpoints and traces here, resume from them [none]")
    parser.add_argument("--log-every", type=int, default=50, help="steps between training-clock records")
    parser.add_argument("--set", dest="set_items", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a config field of every model (repeatable; VALUE a Python literal)")
    args = parser.parse_args()
    try:
        args.sets = parse_sets(args.set_items)
    except ValueError as error:
        parser.error(str(error))
    if args.eval_every % args.log_every:
        parser.error(f"--eval-every ({args.eval_every}) must be a multiple of --log-every ({args.log_every})")
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    def say(text: str) -> None:
        print(text, flush=True)

    train = load_dataset(args.dataset, "train", verify=False)
    test = load_dataset(args.dataset, "test", verify=False).subset(args.eval_n)
    classifier, record = load_classifier(args.classifier or f"{args.dataset}-eval")
    classifier.to(resolve_device(args.device))
    say(f"torch {torch.__version__}, device {resolve_device(args.device)}{' (amp)' if args.amp else ''}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}; {args.dataset} ({len(train)} train tuples, M={len(train.modalities)}), "
        f"classifier {record.name} {record.sha256[:8]}; width {args.width}, batch {args.batch_size}, earlier "
        f"stages {args.steps} steps, last stage ≤ {args.max_steps}, target {args.target}")
    traces = []
    with tempfile.TemporaryDirectory() as tmp:
        store = ArtifactStore(Path(args.artifacts or tmp).expanduser())
        for name in (PAPER_MODELS if args.models == "all" else args.models.split(",")):
            traces.append(measure(name, args, train, test, classifier, store, say))
            if args.json:
                Path(args.json).write_text(json.dumps([asdict(t) for t in traces], indent=1))
    say(f"\n{'model':<10} {'stage':<7} {'steps':>7} {'train min':>9} {'best':>8}   (steps/minutes to "
        f"coherence/loo/mean ≥ {args.target}; train minutes include earlier stages)")
    for trace in traces:
        say(summary(trace))


if __name__ == "__main__":
    main()
