"""Attribute F1 given the image of a registered model on the celeba-twin, untrained and after training,
beside the F1 of predicting each attribute's training-majority value (the floor a model must clear).

The model gets the twin's per-kind networks (conv image and mask, MLP attributes; Bernoulli mask and
attributes: ``mmbench.nets.modality``); F1 is the paper's (``mmbench.metrics.f1.f1_samples``) on generated
attributes given the image alone. Sizes what the ``celeba-twin`` suite's ``quick`` budget must train.

Usage: ``python benchmarks/bench_twin_models.py --model mvtcae --steps 600 [--width 0.125] [--n-train 2000]
[--set score_steps=1800 --set "sampler='pc'"] [--eval-seeds 3]`` (one torch thread); ``--set`` overrides a Config
field after the scale's, like a budget's ``model_overrides``. Prints one line per measurement with the training
seconds; ``--eval-seeds K`` averages the F1 over K sampling seeds and prints the unconditional attribute rate.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmbench import registry
from mmbench.config import parse_sets
from mmbench.contract import Capability
from mmbench.data.celebatwin import generate_split
from mmbench.data.dataset import MultimodalDataset
from mmbench.metrics.f1 import f1_samples
from mmbench.nets.modality import specs_of
from mmbench.scaling import Scale, scale_overrides
from mmbench.seeding import seed_everything
from mmbench.training.artifacts import ArtifactStore
from mmbench.training.trainer import TrainerOptions, train_model

KINDS = {"mask": "mask", "attributes": "attributes"}


def twin(split: str, n: int, seed: int = 0) -> MultimodalDataset:
    arrays, labels = generate_split(seed, split, n)
    return MultimodalDataset(arrays, labels, f"celeba-twin.{split}", f"twin-{seed}-{split}-{n}", KINDS)


def attribute_f1_given_image(model: Any, test: MultimodalDataset, seed: int = 0) -> float:
    """F1 of the attributes generated from the image alone (one draw per tuple, seeded)."""
    batch, _ = test.batch(np.arange(len(test)))
    seed_everything(seed)
    generated = model.sample_conditional(batch, frozenset({"image"}), frozenset({"attributes"}))["attributes"]
    return f1_samples(test.images["attributes"] / 255.0, generated.numpy(), "attributes")


def unconditional_on_rate(model: Any, n: int = 1000, seed: int = 0) -> float:
    """The share of attribute entries on (> 0.5) in ``n`` unconditional draws (seeded)."""
    seed_everything(seed)
    return float(model.sample_unconditional(n)["attributes"].gt(0.5).float().mean())


def on_rate(data: MultimodalDataset) -> float:
    """The share of attribute entries on in ``data``."""
    return float((data.images["attributes"] > 127.5).mean())


def majority_f1(train: MultimodalDataset, test: MultimodalDataset) -> float:
    """F1 of predicting every test tuple's attributes as each attribute's majority value on ``train``."""
    majority = (train.images["attributes"].astype(np.float64).mean(axis=0) > 127.5).astype(np.float64)
    return f1_samples(test.images["attributes"] / 255.0, np.broadcast_to(majority, test.images["attributes"].shape), "attributes")


def build(name: str, train: MultimodalDataset, overrides: dict[str, Any]) -> Any:
    seed_everything(0)
    return registry.build(name, train.modalities, overrides, specs_of(train))


def train(model: Any, data: MultimodalDataset, name: str, artifacts: Path | None = None) -> float:
    """Train every stage; returns the seconds it took. With ``artifacts``, stages with a reuse key (an SBM
    row's autoencoders and score net) are stored there and loaded by later runs that train the same stage."""
    start = time.perf_counter()
    store = ArtifactStore(artifacts) if artifacts is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        options = TrainerOptions(workdir=Path(tmp), config_hash=name, seed=0, quiet=True, model_name=name, artifacts=store)
        for report in train_model(model, data, None, options):
            print(f"  stage {report.name}: {report.steps} steps, {report.seconds:.0f} s{' (reused)' if report.reused else ''}")
    return time.perf_counter() - start


def model_overrides(name: str, scale: Scale, data: MultimodalDataset, sets: dict[str, Any], reuse: bool) -> dict[str, Any]:
    """The Config overrides of ``name``: the scale's, the data's identity where stages are reused (an SBM
    row's autoencoder and score keys need it), then ``sets`` (``--set``) over both."""
    cls = registry.resolve_class(name)
    overrides = scale_overrides(cls.Config, scale, name)
    if reuse and "data_id" in {f.name for f in dataclasses.fields(cls.Config)}:
        overrides["data_id"] = data.data_hash
    return {**overrides, **sets}


def add_model_arguments(parser: argparse.ArgumentParser, model: str, n_train: int) -> None:
    """The options naming a model, its sizes on the twin and its overrides (shared with bench_twin_latent_probe.py)."""
    parser.add_argument("--model", default=model)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-train", type=int, default=n_train)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--sampler-steps", type=int, default=25, help="latent-diffusion rows (quick: 25)")
    parser.add_argument("--score-width", type=int, default=16, help="latent-diffusion rows (quick: 16)")
    parser.add_argument("--artifacts", type=Path, default=None,
                        help="store reusable stages here (an SBM row's autoencoders) so later runs load them")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a Config override after the scale's (repeatable; VALUE a Python literal), e.g. score_steps=1800")


def model_and_data(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, dict[str, Any], Any, MultimodalDataset, MultimodalDataset]:
    """Parsed arguments, their ``--set`` overrides, the untrained model and the twin's train and test splits
    (one torch thread)."""
    args = parser.parse_args()
    try:
        sets = parse_sets(args.set)
    except ValueError as error:
        parser.error(str(error))
    torch.set_num_threads(1)
    data, test = twin("train", args.n_train), twin("test", args.n_test)
    scale = Scale(width=args.width, steps=args.steps, batch_size=args.batch_size,
                  sampler_steps=args.sampler_steps, score_width=args.score_width)
    model = build(args.model, data, model_overrides(args.model, scale, data, sets, reuse=args.artifacts is not None))
    return args, sets, model, data, test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser, "mvtcae", 2000)
    parser.add_argument("--no-untrained", action="store_true", help="skip the untrained model's F1 (sampler sweeps)")
    parser.add_argument("--eval-seeds", type=int, default=1,
                        help="sampling seeds 0..K-1 of the trained model's F1 (mean and each); with K > 1 also the share "
                             "of attributes on in 1,000 unconditional draws against the data's")
    args, sets, model, data, test = model_and_data(parser)
    print(f"majority per attribute: F1 {majority_f1(data, test):.3f}")
    if not args.no_untrained:
        print(f"{args.model} untrained: F1 {attribute_f1_given_image(model, test):.3f}")
    seconds = train(model, data, args.model, args.artifacts)
    start = time.perf_counter()
    f1s = [attribute_f1_given_image(model, test, seed) for seed in range(args.eval_seeds)]
    sampled = (time.perf_counter() - start) / len(f1s)
    extra = "".join(f", {k}={v}" for k, v in sets.items())
    each = f" ({', '.join(f'{f:.3f}' for f in f1s)})" if len(f1s) > 1 else ""
    print(f"{args.model} after {args.steps} steps (width {args.width}, batch {args.batch_size}, {args.n_train} tuples"
          f"{extra}; {seconds:.0f} s training, {sampled:.0f} s sampling {args.n_test}): F1 {np.mean(f1s):.3f}{each}")
    if args.eval_seeds > 1 and model.has(Capability.UNCONDITIONAL):
        print(f"attributes on in unconditional draws {unconditional_on_rate(model):.2f} (data {on_rate(data):.2f})")


if __name__ == "__main__":
    main()
