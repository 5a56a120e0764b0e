"""What an SBM-C row's energy model knows, and (on the celeba-twin) what its guidance does to attribute F1.

The -C rows guide the score by ``−γ ∇_{z_b} E(z_a, z_b, t)`` (Wesego & Rooshenas 2024, Eq. 8; ``sbm.guidance``)
with the pairwise energy trained by noise-contrastive estimation (Eq. 7; ``sbm.energy``). Guidance can only
help where (1) the energy tells a tuple's own pair from a shuffled one and (2) its gradient at a wrong partner
points toward the right one. For three ordered pairs (a, b) (first and last modality both ways, first and
second) and several diffusion times t, on the test tuples' latents (perturbed by the SDE's kernel,
standardised as the score model sees them):

- **AUC**: the share of (own pair, shuffled pair) comparisons in which the own pair has the lower energy;
- **cosine**: the mean cosine between ``−∇_{z_b} E`` at the shuffled partner and (own partner − shuffled partner);

then, on the twin, the attribute F1 given the image (``bench_twin_models.attribute_f1_given_image``, sampling
seeds 0..K−1) at each ``--gammas`` value, on the same trained stages.

Usage (one torch thread): on the twin, trained here with ``bench_twin_models.py``'s sizes and options,
``python benchmarks/bench_energy.py [--model sbm-rae-c] [--artifacts DIR] [--set KEY=VALUE ...]
[--gammas 0,7.8125,100] [--eval-seeds 3]``; on a finished run's job (its checkpoints and the artifact
store), ``python benchmarks/bench_energy.py --suite polymnist10 --budget quick --model sbm-vae-c [--n-test 500]``.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import numpy as np
import torch
from bench_twin_models import (
    add_model_arguments,
    attribute_f1_given_image,
    majority_f1,
    model_and_data,
    train,
)

from mmbench.config import parse_sets
from mmbench.data.dataset import MultimodalDataset
from mmbench.seeding import seed_everything

TIMES = (0.02, 0.1, 0.3, 0.6)


def standardised_latents(model: Any, data: MultimodalDataset) -> torch.Tensor:
    """``(N, M, D)``: every modality's latent of every tuple, in the space the score and energy models use."""
    batch, _ = data.batch(np.arange(len(data)))
    with torch.no_grad():
        z = model.encode_latents(batch, list(model.modalities))
    return z if model.standardiser is None else model.standardiser.standardise(z)


def pair_diagnostics(model: Any, z: torch.Tensor, a: int, b: int, t_value: float, seed: int = 0) -> tuple[float, float]:
    """(AUC, cosine) of the energy on pair (a, b) at time ``t_value`` (see the module docstring)."""
    n = z.shape[0]
    generator = torch.Generator().manual_seed(seed)
    shuffled = z[torch.randperm(n, generator=generator), b]
    t = torch.full((n,), t_value)
    ia, ib = torch.full((n,), a), torch.full((n,), b)
    torch.manual_seed(seed)
    z_a, own, other = (model.sde.perturb(v, t) for v in (z[:, a], z[:, b], shuffled))
    with torch.no_grad():
        e_own, e_other = model.energy(z_a, own, t, ia, ib), model.energy(z_a, other, t, ia, ib)
    auc = float((e_own[:, None] < e_other[None, :]).float().mean())
    probe = other.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.energy(z_a, probe, t, ia, ib).sum(), probe)
    cosine = float(torch.nn.functional.cosine_similarity(-grad, own - other, dim=1).mean())
    return auc, cosine


def run_model(suite: str, budget: str, name: str, n_test: int, sets: dict[str, Any]) -> tuple[Any, MultimodalDataset]:
    """The model of ``mmbench run --suite S --budget B``'s job for row ``name`` (seed 0) and the first ``n_test``
    test tuples. Without ``sets`` its stages load from the job's finished checkpoints and the artifact store;
    with them (``--set energy_steps=N``) the job's config takes them and the stages the store lacks (the
    energy model) train here on the job's train split."""
    from bench_sampler_quality import build_job_model, model_of_job, suite_jobs

    from mmbench import paths
    from mmbench.data.store import load_dataset
    from mmbench.training.artifacts import ArtifactStore

    job = suite_jobs(argparse.Namespace(suite=suite, budget=budget, models=name))[0]
    store = ArtifactStore(paths.artifacts_dir())
    test = load_dataset(job.data.name, "test", verify=False).subset(n_test)
    if not sets:
        model, lines = model_of_job(job, store)
        print("; ".join(lines))
        return model, test
    seed_everything(job.seed)
    model = build_job_model(job, sets)
    seconds = train(model, load_dataset(job.data.name, "train", verify=False), name, paths.artifacts_dir())
    print(f"{name} with {sets}: trained in {seconds:.0f} s")
    return model, test


def print_diagnostics(model: Any, test: MultimodalDataset) -> None:
    z = standardised_latents(model, test)
    names, last = model.modalities, len(model.modalities) - 1
    for a, b in ((0, last), (last, 0), (0, 1)):
        for t_value in TIMES:
            auc, cosine = pair_diagnostics(model, z, a, b, t_value)
            print(f"energy {names[a]} -> {names[b]} at t={t_value}: AUC {auc:.3f}, cos(-grad, own - shuffled) {cosine:+.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser, "sbm-rae-c", 4000)
    parser.add_argument("--gammas", default="0,7.8125,100", help="comma-separated energy_gamma values to sample with")
    parser.add_argument("--eval-seeds", type=int, default=3)
    parser.add_argument("--suite", default=None, help="with --budget: the finished run's job of row --model")
    parser.add_argument("--budget", default=None)
    args = parser.parse_args()
    if bool(args.suite) != bool(args.budget):
        parser.error("--suite and --budget go together (e.g. --suite polymnist10 --budget quick)")
    if args.suite:
        torch.set_num_threads(1)
        model, test = run_model(args.suite, args.budget, args.model, args.n_test, parse_sets(args.set))
    else:
        args, _, model, data, test = model_and_data(parser)
    if getattr(model, "energy", None) is None:
        parser.error(f"{args.model} has no energy model: pass an -C row (sbm-vae-c, sbm-rae-c)")
    if not args.suite:
        train(model, data, args.model, args.artifacts)
    model.eval()
    print_diagnostics(model, test)
    if args.suite:
        return
    print(f"majority per attribute: F1 {majority_f1(data, test):.3f}")
    for gamma in (float(g) for g in args.gammas.split(",")):
        model.config = dataclasses.replace(model.config, energy_gamma=gamma)
        f1s = [attribute_f1_given_image(model, test, seed) for seed in range(args.eval_seeds)]
        print(f"{args.model} energy_gamma={gamma}: attribute F1 given the image {np.mean(f1s):.3f} "
              f"({', '.join(f'{f:.3f}' for f in f1s)})")


if __name__ == "__main__":
    main()
