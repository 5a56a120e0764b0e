"""MMVAE and MMVAE+ with sub-sampled cross reconstructions (``cross_targets``): step time and noise.

For each model it builds one model per K in ``--ks`` (0 = the exact objective) with the same initial
weights, and on one pre-loaded batch of the synthetic pattern data runs, for each of ``--draws`` seeds,
the loss and backward pass of every K under that seed, timed, all in this process (interleaved, so a
change of machine load hits every K alike). Under one seed the exact loss and each K's estimate share
every latent sample (the targets are drawn last), so the differences isolate the draw of the targets:

* s/step — the median time of loss + backward (an Adam step adds milliseconds), and the speed-up over K = 0;
* exact sd — the standard deviation of the exact loss over seeds (the Monte Carlo noise of the latent
  samples, there without sub-sampling), relative to the mean exact loss;
* extra sd — the standard deviation of (estimate − exact), the noise the draw of the targets adds,
  relative to the mean exact loss;
* bias/se — the mean of (estimate − exact) over its standard error (a few at most if unbiased);
* grad sd, extra grad sd — the same two for the gradient of every parameter, as root-mean-square
  distances relative to the norm of the mean exact gradient;
* batch grad sd — the exact gradient's root-mean-square distance from its mean over ``--draws`` *different*
  batches (seed i, batch i), relative to the norm of that mean: the noise SGD has anyway, the scale the
  extra noise should be compared with.

At initialisation (the default) the targets' reconstruction errors differ more than after training, so
the extra noise is an upper estimate of what training sees later.

Usage: ``python benchmarks/bench_cross_targets.py --modalities 10 --width 0.25 --batch-size 64 --threads 1``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch

from mmbench import registry
from mmbench.data.synthetic import make_patterns

MODELS = ("mmvae", "mmvaeplus")


def build(name: str, modalities, width: float, batch_size: int, k: int):
    torch.manual_seed(0)
    return registry.build(name, modalities, {"width": width, "batch_size": batch_size, "cross_targets": k}).train()


def gradient(model) -> torch.Tensor:
    """Every parameter's gradient, flattened (zeros where a parameter took no part, e.g. an unused r_d(w))."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in model.parameters()])


def paired_draws(models: dict[int, torch.nn.Module], batch, labels, draws: int) -> dict[str, dict[int, float]]:
    """Every model's loss and gradient under seeds 0..draws−1 (one seed shares the latent samples), timed."""
    times: dict[int, list[float]] = {k: [] for k in models}
    losses: dict[int, list[float]] = {k: [] for k in models}
    grad_sum, grad_sq, extra_sq = 0.0, 0.0, {k: 0.0 for k in models}
    for seed in range(draws):
        exact_grad = None
        for k, model in models.items():
            model.zero_grad(set_to_none=True)
            torch.manual_seed(seed)
            start = time.perf_counter()
            loss = model.loss(batch, labels)["loss"]
            loss.backward()
            times[k].append(time.perf_counter() - start)
            losses[k].append(loss.item())
            g = gradient(model)
            if exact_grad is None:
                exact_grad = g
                grad_sum, grad_sq = grad_sum + g, grad_sq + g.square().sum().item()
            extra_sq[k] += (g - exact_grad).square().sum().item()
    mean_grad = grad_sum / draws
    norm = mean_grad.norm().item()
    exact = torch.tensor(losses[0], dtype=torch.float64)
    scale = abs(exact.mean().item())
    out: dict[str, dict[int, float]] = {"time": {}, "extra": {}, "bias": {}, "extra_grad": {}}
    for k in models:
        diff = torch.tensor(losses[k], dtype=torch.float64) - exact
        sd = diff.std().item()
        out["time"][k] = statistics.median(times[k])
        out["extra"][k] = sd / scale
        out["bias"][k] = diff.mean().item() / (sd / math.sqrt(draws)) if sd > 0 else 0.0
        out["extra_grad"][k] = math.sqrt(extra_sq[k] / draws) / norm
    out["exact"] = {0: exact.std().item() / scale}
    out["grad"] = {0: relative_spread(grad_sum, grad_sq, draws)}
    return out


def relative_spread(total: torch.Tensor, total_sq: float, n: int) -> float:
    """Root-mean-square distance of n vectors from their mean (n − 1 normalised) over the mean's norm,
    from their sum and the sum of their squared norms."""
    norm = (total / n).norm().item()
    return math.sqrt(max(total_sq / n - norm**2, 0.0) * n / (n - 1)) / norm


def batch_spread(model, data, batch_size: int, draws: int) -> float:
    """The exact gradient's relative spread over ``draws`` different batches (seed i, batch i)."""
    total, total_sq = 0.0, 0.0
    for i in range(draws):
        batch, labels = data.batch(range(i * batch_size, (i + 1) * batch_size))
        model.zero_grad(set_to_none=True)
        torch.manual_seed(i)
        model.loss(batch, labels)["loss"].backward()
        g = gradient(model)
        total, total_sq = total + g, total_sq + g.square().sum().item()
    return relative_spread(total, total_sq, draws)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--modalities", type=int, default=10)
    parser.add_argument("--ks", default="0,1,2,3", help="cross_targets values; 0 (exact) first")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--draws", type=int, default=5, help="seeds: timed steps and the noise of the estimate")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    ks = [int(v) for v in args.ks.split(",")]
    if ks[0] != 0:
        parser.error("--ks must start with 0, the exact objective the others are compared with")
    torch.set_num_threads(args.threads)
    data = make_patterns(args.modalities, n=args.batch_size * args.draws, seed=0)
    batch, labels = data.batch(range(args.batch_size))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; M {args.modalities}, width {args.width}, batch {args.batch_size}; "
          f"{args.draws} paired seeds at initialisation")
    print(f"{'model':<10} {'K':>2} {'decodes':>8} {'s/step':>7} {'speed-up':>8} {'exact sd':>9} {'extra sd':>9} "
          f"{'bias/se':>8} {'grad sd':>8} {'extra grad sd':>14} {'batch grad sd':>14}")
    m = args.modalities
    for name in args.models.split(","):
        models = {k: build(name, data.modalities, args.width, args.batch_size, k) for k in ks}
        r = paired_draws(models, batch, labels, args.draws)
        across_batches = batch_spread(models[0], data, args.batch_size, args.draws)
        for k in ks:
            decodes = m * m if k == 0 else m * (k + 1)
            print(f"{name:<10} {k:>2} {decodes:>8} {r['time'][k]:>7.2f} {r['time'][0] / r['time'][k]:>7.2f}× "
                  f"{100 * r['exact'][0]:>8.2f}% {100 * r['extra'][k]:>8.2f}% {r['bias'][k]:>8.2f} "
                  f"{100 * r['grad'][0]:>7.1f}% {100 * r['extra_grad'][k]:>13.1f}% {100 * across_batches:>13.1f}%",
                  flush=True)


if __name__ == "__main__":
    main()
