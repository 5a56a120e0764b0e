"""Training throughput of the VAE baselines through the real trainer, and where the step time goes.

For each model and number of modalities M it trains ``--steps`` steps (after one warm-up step) on the
synthetic pattern data with ``train_model`` and a per-step callback, then times the same number of bare
model steps (loss, backward, Adam) on one pre-loaded batch, and the trainer's data path alone (index,
gather, convert, move to the device). Reported per row:

* images/s — tuples · M per second of trainer wall time (median step);
* outside % — the share of a trainer step not spent in the model step (data, transfer, logging, the
  trainer's own bookkeeping): 1 − model / trainer (medians; noisy on a shared CPU, can be < 0);
* data % — the data path timed alone, as a share of the trainer step;
* per-image ratio M=10 / M=3 (the target is ≥ 1/3).

Usage: ``python benchmarks/bench_training.py [--models mvae,mmvae] [--width 0.25] [--batch-size 32]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mmbench import registry
from mmbench.data.synthetic import make_patterns
from mmbench.seeding import seed_everything
from mmbench.training.trainer import TrainerOptions, _to_device, batch_indices, train_model

BASELINES = ("mvae", "mmvae", "mopoe", "mvtcae", "mmvaeplus")


@dataclass(frozen=True)
class Row:
    model: str
    modalities: int
    trainer_step_s: float
    model_step_s: float
    data_s: float
    batch_size: int

    @property
    def images_per_s(self) -> float:
        return self.batch_size * self.modalities / self.trainer_step_s

    @property
    def outside_share(self) -> float:
        return 1.0 - self.model_step_s / self.trainer_step_s

    @property
    def data_share(self) -> float:
        return self.data_s / self.trainer_step_s


def trainer_steps(name: str, data, overrides: dict, steps: int, workdir: Path) -> list[float]:
    """Wall time of each trainer step (callback to callback, ``log_every=1``), warm-up step dropped."""
    stamps: list[float] = []
    seed_everything(0)
    model = registry.build(name, data.modalities, {**overrides, "steps": steps + 1})
    options = TrainerOptions(workdir=workdir, config_hash=name, quiet=True, log_every=1,
                             callback=lambda *_: stamps.append(time.perf_counter()), model_name=name)
    train_model(model, data, None, options)
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def model_steps(name: str, data, overrides: dict, steps: int) -> list[float]:
    """Wall time of bare model steps (loss, backward, Adam) on one pre-loaded batch, warm-up dropped."""
    seed_everything(0)
    model = registry.build(name, data.modalities, {**overrides, "steps": steps + 1})
    (stage,) = model.stages()
    model.train()
    optimizer = torch.optim.Adam(stage.parameters(), lr=stage.hparams.lr, amsgrad=stage.hparams.amsgrad)
    batch, labels = data.batch(range(stage.hparams.batch_size))
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss = stage.loss(batch, labels)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times[1:]


def data_path(data, batch_size: int, steps: int) -> list[float]:
    """Wall time of the trainer's data path alone: indices, gather + convert, move to the device."""
    times = []
    for step in range(steps):
        start = time.perf_counter()
        idx = batch_indices(len(data), batch_size, 0, "joint", step)
        _to_device(*data.batch(idx), torch.device("cpu"))
        times.append(time.perf_counter() - start)
    return times


def measure(name: str, m: int, width: float, batch_size: int, steps: int) -> Row:
    data = make_patterns(m, n=batch_size * (steps + 2), seed=0)
    overrides = {"width": width, "batch_size": batch_size}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_steps(name, data, overrides, steps, Path(tmp))
    bare = model_steps(name, data, overrides, steps)
    loading = data_path(data, batch_size, steps)
    med = statistics.median
    return Row(name, m, med(trainer), med(bare), med(loading), batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(BASELINES))
    parser.add_argument("--modalities", default="3,10")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    counts = [int(v) for v in args.modalities.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; width {args.width}, batch {args.batch_size}, "
          f"median of {args.steps} steps after one warm-up step")
    print(f"{'model':<10} {'M':>3} {'trainer s/step':>15} {'model s/step':>13} {'images/s':>9} "
          f"{'outside %':>10} {'data %':>7}")
    rows: list[Row] = []
    for name in args.models.split(","):
        for m in counts:
            row = measure(name, m, args.width, args.batch_size, args.steps)
            rows.append(row)
            print(f"{row.model:<10} {row.modalities:>3} {row.trainer_step_s:>15.3f} {row.model_step_s:>13.3f} "
                  f"{row.images_per_s:>9.1f} {100 * row.outside_share:>10.1f} {100 * row.data_share:>7.2f}",
                  flush=True)
    if len(counts) == 2:
        print(f"\nper-image throughput, M={counts[1]} / M={counts[0]} (target ≥ 1/3):")
        for name in args.models.split(","):
            lo, hi = (next(r for r in rows if r.model == name and r.modalities == c) for c in counts)
            print(f"  {name:<10} {hi.images_per_s / lo.images_per_s:.2f}")


if __name__ == "__main__":
    main()
