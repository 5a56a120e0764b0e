"""Validation coherence of an energy-guided SBM (-C) against the per-sample guidance strength γ, and of a
score net sampled from its EMA average against its last weights.

Sources: Wesego & Rooshenas 2024, Eq. 8 (energy guidance) and Table 4 (EBM-scale 1000 on the batch mean at
batch 256, i.e. γ = 1000/256 ≈ 3.9 per sample: ``sbm.guidance.per_sample_gamma``); EMA as in
``mmbench.training.ema``.

What it does: builds one SBM model (default ``sbm-vae-c``) at a budget-like scale, trains it through the
real trainer (stages already in ``--artifacts`` are loaded, e.g. the autoencoders and score net of a
``quick`` run or of ``bench_coherence.py``), then scores, on ``--n`` tuples of the **validation** split and
with the same sampler noise for every row, the coherence of the other modalities given one modality (the
first) and the leave-one-out coherence, for each γ of ``--gammas`` (γ = 0 is the unguided model: the same
score net). With ``--ema D`` the score stage trains with an EMA of decay D and both its average and its last
weights are scored (needs the score stage trained in ``--state``, not loaded from the store).

Usage (polymnist10 at quick's scale; data and classifier prepared)::

    python benchmarks/bench_guidance.py --dataset polymnist10 --model sbm-vae-c --width 0.25 --batch-size 64 \\
        --steps 3000 --gammas 0,1,3.90625,10,30 --n 200 --threads 1 \\
        --artifacts ~/.mmbench/artifacts --state ~/.mmbench/bench/guidance

    # the easy synthetic pattern data (three modalities; minutes):
    python benchmarks/bench_guidance.py --patterns 3 --gammas 0,1,3.90625,10,30,100 --n 300 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from pathlib import Path

import torch

from mmbench import registry
from mmbench.config import parse_sets
from mmbench.contract import MultimodalModel
from mmbench.data.dataset import MultimodalDataset
from mmbench.hashing import config_hash
from mmbench.runner.models import scaled
from mmbench.scaling import Scale
from mmbench.seeding import seed_everything, seeded
from mmbench.testing import leave_one_out_coherence
from mmbench.training import checkpoint as ckpt
from mmbench.training.artifacts import ArtifactStore
from mmbench.training.trainer import TrainerOptions, train_model

# the tests' settings for the pattern data (tests/test_sbm.py, LEARN and LEARN_SBM)
PATTERN_SETTINGS = {
    "width": 0.125, "latent_dim": 16, "ae_batch_size": 32, "ae_lr": 3e-3, "ae_steps": 400, "dim": 8,
    "dim_mults": (1,), "attn_heads": 2, "attn_dim_head": 8, "score_steps": 300, "score_batch_size": 64,
    "score_lr": 1e-3, "sampler_steps": 50, "energy_steps": 200, "energy_batch_size": 64, "energy_lr": 1e-3,
    "energy_width": 64,
}


def coherence_given(model: MultimodalModel, data: MultimodalDataset, classifier: torch.nn.Module,
                    given: frozenset[str], batch_size: int) -> float:
    """Mean over the generated modalities of the share the classifier labels as the tuple's label."""
    targets = frozenset(model.modalities) - given
    correct, total = 0, 0
    for batch, labels in data.iter_batches(batch_size, model.modalities):
        out = model.sample_conditional(batch, given, targets)
        with torch.no_grad():
            for m in targets:
                correct += int((classifier(out[m]).argmax(1) == labels).sum())
                total += len(labels)
    return correct / total


def score_row(model: MultimodalModel, val: MultimodalDataset, classifier: torch.nn.Module, batch_size: int) -> tuple[float, float, float]:
    """(coherence given the first modality, leave-one-out coherence, seconds), with fixed sampler noise."""
    start = time.perf_counter()
    with seeded(1, model.device):
        one = coherence_given(model, val, classifier, frozenset(model.modalities[:1]), batch_size)
    with seeded(2, model.device):
        per_modality = leave_one_out_coherence(model, val, classifier, batch_size)
        loo = sum(per_modality.values()) / len(per_modality)
    return one, loo, time.perf_counter() - start


def with_gamma(model: MultimodalModel, gamma: float) -> None:
    model.config = dataclasses.replace(model.config, energy_gamma=gamma)


def load_data(args: argparse.Namespace) -> tuple[MultimodalDataset, MultimodalDataset, torch.nn.Module, dict]:
    if args.patterns:
        from classifiers.train import train_classifier
        from mmbench.data.synthetic import make_patterns

        train, val = make_patterns(args.patterns, n=2000, seed=0), make_patterns(args.patterns, n=args.n, seed=2)
        torch.manual_seed(0)
        classifier = train_classifier("pmclf", train, None, epochs=1, batch_size=128, lr=1e-3, seed=0, device="cpu",
                                      progress=False)
        return train, val, classifier, dict(PATTERN_SETTINGS)
    from classifiers.store import load_classifier
    from mmbench.data.store import load_dataset

    train = load_dataset(args.dataset, "train", verify=False)
    val = load_dataset(args.dataset, "val", verify=False).subset(args.n)
    classifier, _ = load_classifier(f"{args.dataset}-eval")
    scale = Scale(width=args.width, steps=args.steps, batch_size=args.batch_size, sampler_steps=args.sampler_steps,
                  score_width=args.score_width)
    return train, val, classifier, scaled(args.model, scale)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="polymnist10")
    parser.add_argument("--patterns", type=int, default=0, help="use the synthetic pattern data with this many modalities")
    parser.add_argument("--model", default="sbm-vae-c")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--sampler-steps", type=int, default=100)
    parser.add_argument("--score-width", type=int, default=64)
    parser.add_argument("--gammas", default="0,1,3.90625,10,30")
    parser.add_argument("--ema", type=float, default=0.0, help="train the score stage with this EMA decay and compare")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override one model config field (a Python literal), e.g. --set energy_steps=2000")
    parser.add_argument("--n", type=int, default=200, help="validation tuples scored per row")
    parser.add_argument("--eval-batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--artifacts", default=None)
    parser.add_argument("--state", default="~/.mmbench/bench/guidance", help="trainer checkpoints (resumable)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    train, val, classifier, overrides = load_data(args)
    overrides = {**overrides, **parse_sets(args.set), "data_id": train.data_hash, "score_ema_decay": args.ema}
    seed_everything(0)
    model = registry.build(args.model, train.modalities, overrides)
    data_name = f"patterns{args.patterns}" if args.patterns else args.dataset
    workdir = Path(args.state).expanduser() / f"{args.model}-{data_name}-{config_hash(overrides, length=12)}"
    store = ArtifactStore(Path(args.artifacts).expanduser()) if args.artifacts else ArtifactStore(workdir / "artifacts")
    options = TrainerOptions(workdir=workdir, config_hash=config_hash(overrides), quiet=True,
                             artifacts=store, model_name=args.model)
    start = time.perf_counter()
    train_model(model, train, None, options)
    print(f"{args.model} on {data_name}: trained/loaded in "
          f"{time.perf_counter() - start:.0f} s; {len(val)} validation tuples; sampler {model.config.sampler} "
          f"N={model.config.sampler_steps}")
    print("\n| weights | γ per sample | coherence given 1 | leave-one-out | seconds |\n|---|---|---|---|---|")
    rows = [("last" if args.ema else "-", model)]
    if args.ema:
        rows = [("EMA", model), ("last", _last_weights(model, workdir, options.config_hash))]
    for label, m in rows:
        for gamma in [float(g) for g in args.gammas.split(",")]:
            if m.config.guidance != "energy" and gamma:
                continue
            with_gamma(m, gamma)
            one, loo, seconds = score_row(m, val, classifier, args.eval_batch)
            print(f"| {label} | {gamma:g} | {one:.3f} | {loo:.3f} | {seconds:.0f} |", flush=True)


def _last_weights(model: MultimodalModel, workdir: Path, run_hash: str) -> MultimodalModel:
    """The same model with the score net's last (not averaged) weights, read from its finished checkpoint."""
    path = workdir / "checkpoints" / "score.pt"
    if not path.exists():
        raise SystemExit(f"{path} is missing: the score stage was loaded from the store; use a fresh --state")
    state = ckpt.load(path, run_hash)
    last = copy.deepcopy(model)
    last.score_net.load_state_dict(state.module)
    return last


if __name__ == "__main__":
    main()
