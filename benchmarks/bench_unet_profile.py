"""Where the SBM score UNet's forward time goes, by component, on this CPU.

Times the UNet of ``sbm/unet.py`` (untrained weights cost what trained ones do) on ``(B, M, 8, 8)`` latents
with forward hooks on mutually exclusive parts: per ConvNeXt block the depthwise conv, the time projection,
the two GroupNorms, the two dense 3×3 convs, the GELU and the residual 1×1 conv; each attention module
(linear at the levels, full softmax attention in the middle) as a whole; the down/up resampling convs; the
input 7×7 and output 1×1 convs and the time-embedding MLP. The rest (concatenations, additions, layout
changes) is "other". Prints a markdown table; ``--variants`` compares leaner UNets (``sbm.unet.UNet`` options).
Times are the calling thread's CPU time (``time.thread_time``), so a machine shared with other jobs changes
them little; run with one torch thread (the default here) for that to hold.

    python benchmarks/bench_unet_profile.py [--dim 64] [--modalities 10] [--batch 200] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from torch import nn

from sbm.unet import ConvNextBlock, UNet, _Attention

VARIANTS = {
    "default": {},
    "no level attention": {"level_attention": False},
    "block_mult 1": {"block_mult": 1},
    "dim_mults (1,2,2)": {"dim_mults": (1, 2, 2)},
    "no level attention, block_mult 1": {"level_attention": False, "block_mult": 1},
    "no level attention, block_mult 1, dim_mults (1,2,2)": {"level_attention": False, "block_mult": 1,
                                                            "dim_mults": (1, 2, 2)},
}


def components(net: UNet) -> dict[nn.Module, str]:
    """Each timed module and its category (no module inside another)."""
    parts: dict[nn.Module, str] = {net.init_conv: "input conv 7x7", net.final_conv: "output conv 1x1",
                                   net.time_mlp: "time embedding MLP"}
    for module in net.modules():
        if isinstance(module, ConvNextBlock):
            k = module.depthwise.kernel_size[0]
            parts.update({module.depthwise: f"depthwise conv {k}x{k}", module.time: "block time projection",
                          module.net[0]: "GroupNorm", module.net[3]: "GroupNorm", module.net[1]: "dense conv 3x3",
                          module.net[4]: "dense conv 3x3", module.net[2]: "GELU"})
            if not isinstance(module.skip, nn.Identity):
                parts[module.skip] = "residual conv 1x1"
        elif isinstance(module, _Attention):
            parts[module] = "linear attention (levels)" if module.linear else "full attention (middle)"
    for level in [*net.downs, *net.ups]:
        if not isinstance(level[3], nn.Identity):
            parts[level[3]] = "down/up-sampling conv"
    return parts


def profile(net: UNet, x: torch.Tensor, t: torch.Tensor, repeats: int) -> tuple[dict[str, float], float]:
    """(seconds per forward by category, total seconds per forward), the best of ``repeats`` runs each."""
    spent: dict[str, float] = defaultdict(float)
    starts: dict[nn.Module, float] = {}
    handles = []
    for module, label in components(net).items():
        handles.append(module.register_forward_pre_hook(lambda m, _: starts.__setitem__(m, time.thread_time())))
        handles.append(module.register_forward_hook(
            lambda m, _i, _o, label=label: spent.__setitem__(label, spent[label] + time.thread_time() - starts[m])))
    best_total, best = float("inf"), {}
    with torch.no_grad():
        net(x, t)  # warm-up
        for _ in range(repeats):
            spent.clear()
            start = time.thread_time()
            net(x, t)
            total = time.thread_time() - start
            if total < best_total:
                best_total, best = total, dict(spent)
    for handle in handles:
        handle.remove()
    return best, best_total


def train_step_seconds(net: UNet, batch: int, channels: int, repeats: int) -> float:
    """Best-of-``repeats`` seconds of one forward + backward of the ε-prediction loss (a training step's net cost)."""
    x, t = torch.randn(batch, channels, 8, 8), torch.rand(batch)
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        start = time.thread_time()
        net(x, t).square().mean().backward()
        best = min(best, time.thread_time() - start)
        net.zero_grad(set_to_none=True)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--modalities", type=int, default=10)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-batch", type=int, default=64, help="batch of the timed training step (0 = skip)")
    parser.add_argument("--variants", default="default", help=f"comma-separated, of: {', '.join(VARIANTS)}; or 'all'")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, t = torch.randn(args.batch, args.modalities, 8, 8), torch.rand(args.batch)
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    print(f"# UNet dim {args.dim}, {args.modalities} channels 8x8, batch {args.batch}, {args.threads} thread(s), "
          f"best of {args.repeats}")
    for name in names:
        net = UNet(args.modalities, args.dim, **VARIANTS[name]).eval()
        params = sum(p.numel() for p in net.parameters())
        spent, total = profile(net, x, t, args.repeats)
        train = (f", training step (batch {args.train_batch}) "
                 f"{train_step_seconds(net.train(), args.train_batch, args.modalities, 2) * 1000:.0f} ms"
                 if args.train_batch else "")
        print(f"\n## {name}: {total * 1000:.0f} ms per forward ({total / args.batch * 1000:.2f} ms per sample), "
              f"{params / 1e6:.2f} M parameters{train}\n")
        print("| component | ms | share |\n|---|---|---|")
        for label, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
            print(f"| {label} | {seconds * 1000:.1f} | {seconds / total:.0%} |")
        other = total - sum(spent.values())
        print(f"| other (cat, add, layout) | {other * 1000:.1f} | {other / total:.0%} |", flush=True)


if __name__ == "__main__":
    main()
