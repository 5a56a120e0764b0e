"""Sampling throughput of the SBM score model on this machine (latent space, untrained weights).

For the Extended PolyMNIST shape (10 modalities, 64-d latents as 8×8 channels, the paper's UNet at
dim 128): samples/s and score evaluations per sample of the predictor–corrector sampler (N = 100, one
Langevin step: 200 evaluations) and of the probability-flow ODE (Heun), and the wall-time ratio of
ten leave-one-out queries batched into one sampler pass versus ten separate passes.

    python benchmarks/bench_sampling.py [--modalities 10] [--batch 16] [--steps 100] [--ratio-steps 10] \\
        [--dim 64] [--threads 1]

Untrained weights cost exactly what trained ones do; decoding is not timed.
"""

from __future__ import annotations

import argparse
import time

import torch

from mmbench import registry


def _build(name: str, modalities: int, overrides: dict, dim: int = 0) -> torch.nn.Module:
    model = registry.build(name, [f"m{i}" for i in range(modalities)], {"width": 0.25, "dim": dim, **overrides})
    return model.eval()


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_sampler(model, batch: int) -> tuple[float, int]:
    """(samples per second, score evaluations per sample) of one unconditional pass."""
    m, d = model.num_modalities, model.latent_dim
    known = torch.zeros(batch, m, d)
    observed = torch.zeros(batch, m, dtype=torch.bool)
    seconds = _time(lambda: model.generate_latents(known, observed))
    return batch / seconds, model.last_nfe


def bench_leave_one_out(model, batch: int) -> tuple[float, float]:
    """Seconds for M leave-one-out queries in one pass and in M separate passes."""
    m, d = model.num_modalities, model.latent_dim
    known = torch.randn(batch, m, d)
    masks = ~torch.eye(m, dtype=torch.bool)  # query q observes every modality but q
    joint_observed = masks.repeat_interleave(batch, 0)
    one = _time(lambda: model.generate_latents(known.repeat(m, 1, 1), joint_observed))
    separate = _time(lambda: [model.generate_latents(known, masks[q].expand(batch, m).clone()) for q in range(m)])
    return one, separate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modalities", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=100, help="sampler steps N (PC: 2N evaluations)")
    parser.add_argument("--ratio-steps", type=int, default=10, help="sampler steps for the leave-one-out ratio")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--model", default="sbm-vae", help="a registered SBM name (e.g. sbm-vae-c adds guidance)")
    parser.add_argument("--dim", type=int, default=0, help="UNet base width (0 = the paper's rule: 128 for M > 5)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"# {args.model}, {args.modalities} modalities, UNet dim {args.dim or 'paper rule'}, batch {args.batch}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'sampler':<28}{'NFE/sample':>12}{'samples/s':>12}{'s/sample':>10}")
    for label, overrides in (
        (f"pc N={args.steps} (1 corrector)", {"sampler": "pc", "sampler_steps": args.steps}),
        (f"ode heun N={args.steps // 2}", {"sampler": "ode", "sampler_steps": args.steps // 2}),
        (f"ode heun N={args.steps}", {"sampler": "ode", "sampler_steps": args.steps}),
    ):
        model = _build(args.model, args.modalities, overrides, args.dim)
        with torch.no_grad():
            model.generate_latents(torch.zeros(2, args.modalities, model.latent_dim),
                                   torch.zeros(2, args.modalities, dtype=torch.bool))  # warm-up
        rate, nfe = bench_sampler(model, args.batch)
        print(f"{label:<28}{nfe:>12}{rate:>12.3f}{1 / rate:>10.2f}")
    model = _build(args.model, args.modalities, {"sampler": "pc", "sampler_steps": args.ratio_steps}, args.dim)
    one, separate = bench_leave_one_out(model, args.batch)
    print(f"leave-one-out, {args.modalities} queries x batch {args.batch}, pc N={args.ratio_steps}: "
          f"one pass {one:.1f} s, {args.modalities} passes {separate:.1f} s, ratio {separate / one:.2f}x")


if __name__ == "__main__":
    main()
