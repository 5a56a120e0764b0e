"""How many steps one unimodal autoencoder needs before its reconstructions carry the digit.

The six SBM models and MLD start from one autoencoder per modality (VAE or RAE, paper A.2); their
coherence cannot exceed what the evaluation classifier reads in those autoencoders' reconstructions.
This benchmark trains the autoencoder of one modality through the real trainer (the same
``latentdiff.autoencoders`` stage the models use) and, every ``--eval-every`` steps, reports the share of
``--eval-n`` test images whose reconstruction (decoder of the inference latent: posterior mean or RAE
code) the classifier labels correctly, with the training minutes so far. It sizes the ``ae_steps`` of a
budget (``docs/harness.md``, "Sizing quick").

Usage (from the repository root, data and classifier prepared)::

    python benchmarks/bench_autoencoder.py --family vae --modality m0 --width 0.25 \\
        --batch-size 64 --max-steps 4000 --eval-every 250 --threads 1 --json out.json
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
from torch import nn

from classifiers.store import load_classifier
from latentdiff.autoencoders import AESpec, UnimodalAE, autoencoder_stage
from mmbench.data.store import load_dataset
from mmbench.seeding import seed_everything
from mmbench.training.device import resolve_device
from mmbench.training.trainer import TrainerOptions, TrainingStopped, train_model


@dataclass
class Curve:
    """Reconstruction accuracy along the steps, with the training seconds spent up to each point."""

    family: str
    modality: str
    batch_size: int
    lr: float
    points: list[tuple[int, float, float]] = field(default_factory=list)  # (step, train seconds, accuracy)


class _OneAutoencoder(nn.Module):
    """The trainer's view of one autoencoder: a model with the single stage ``ae/<modality>``."""

    def __init__(self, ae: UnimodalAE, modality: str, seed: int) -> None:
        super().__init__()
        self.ae, self.modality, self.seed = ae, modality, seed

    def stages(self) -> list:
        return [autoencoder_stage(self.ae, self.modality, "", self.seed)]


@torch.no_grad()
def reconstruction_accuracy(ae: UnimodalAE, images: torch.Tensor, labels: torch.Tensor,
                            classifier: nn.Module, batch_size: int = 500) -> float:
    """Share of images whose reconstruction decode(latent(x)) the classifier labels as the true digit."""
    was_training = ae.training
    ae.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        recon = ae.decode(ae.latent(images[start:start + batch_size]))
        correct += int((classifier(recon).argmax(1) == labels[start:start + batch_size]).sum())
    ae.train(was_training)
    return correct / len(images)


def measure(args: argparse.Namespace, say) -> Curve:
    train = load_dataset(args.dataset, "train", verify=False)
    test = load_dataset(args.dataset, "test", verify=False).subset(args.eval_n)
    device = resolve_device(args.device)
    classifier, record = load_classifier(args.classifier or f"{args.dataset}-eval")
    classifier.to(device).eval()
    images, labels = test.batch(torch.arange(len(test)).numpy(), (args.modality,))
    images, labels = images[args.modality].to(device), labels.to(device)
    spec = AESpec(family=args.family, latent_dim=64, width=args.width, vae_beta=args.vae_beta, rae_l2=1e-5,
                  rae_noise_var=0.01, steps=args.max_steps, lr=args.lr, batch_size=args.batch_size)
    say(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}; {args.dataset}/{args.modality}, classifier {record.name} {record.sha256[:8]}; "
        f"{json.dumps(asdict(spec), sort_keys=True)}")
    seed_everything(0)
    model = _OneAutoencoder(UnimodalAE(spec), args.modality, seed=0)
    curve = Curve(args.family, args.modality, args.batch_size, args.lr)
    clock = {"train": 0.0, "mark": time.perf_counter()}

    def watch(stage: str, step: int, values: dict[str, float]) -> None:
        now = time.perf_counter()
        clock["train"] += now - clock["mark"]
        if step % args.eval_every == 0:
            accuracy = reconstruction_accuracy(model.ae, images, labels, classifier)
            curve.points.append((step, clock["train"], accuracy))
            say(f"  {args.family}/{args.modality} batch {args.batch_size} lr {args.lr}: step {step:>6}  train "
                f"{clock['train'] / 60:6.1f} min  reconstruction accuracy {accuracy:.3f}  "
                f"(loss {values.get('train/loss', float('nan')):.1f})")
            if args.json:
                Path(args.json).write_text(json.dumps(asdict(curve), indent=1))
        clock["mark"] = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        options = TrainerOptions(workdir=Path(tmp), config_hash="bench-autoencoder", quiet=True, device=device,
                                 amp=args.amp, log_every=args.eval_every, callback=watch, model_name="autoencoder")
        try:
            train_model(model, train, None, options)  # type: ignore[arg-type]
        except TrainingStopped:
            pass
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="polymnist10")
    parser.add_argument("--classifier", default=None, help="evaluation classifier name [DATASET-eval]")
    parser.add_argument("--family", choices=("vae", "rae"), default="vae")
    parser.add_argument("--modality", default="m0")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3, help="paper A.2: 1e-3")
    parser.add_argument("--vae-beta", type=float, default=0.1, help="paper A.2: 0.1")
    parser.add_argument("--max-steps", type=int, default=4000)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--eval-n", type=int, default=1000, help="test images scored per evaluation")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--json", default=None, help="write the curve here (updated at every evaluation)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--amp", action="store_true", help="mixed precision on CUDA (ignored on the CPU)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    curve = measure(args, lambda text: print(text, flush=True))
    best = max(curve.points, key=lambda p: p[2], default=(0, 0.0, 0.0))
    print(f"\nbest reconstruction accuracy {best[2]:.3f} at step {best[0]} ({best[1] / 60:.1f} train min)")


if __name__ == "__main__":
    main()
