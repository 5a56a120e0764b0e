"""How learnable the celeba-twin's cross-modal structure is: attributes predicted from the image and
from the mask by a small CNN trained for a few CPU minutes, scored with the paper's F1
(``mmbench.metrics.f1.f1_samples``: sklearn ``average="samples"``) on the test split, beside the F1 of
predicting each attribute's majority value from the training set (the floor a model must clear).

Usage: ``python benchmarks/bench_celeba_twin.py [--steps 600] [--seed 0]``; prints one line per input.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from mmbench.data.celebatwin import SPLIT_SIZES, generate_split
from mmbench.metrics.f1 import f1_samples


def small_cnn(channels: int, outputs: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
        nn.Conv2d(64, 64, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 16, outputs),
    )


def fit(x: np.ndarray, y: np.ndarray, steps: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = small_cnn(x.shape[1], y.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(x).float() / 255, torch.from_numpy(y).float()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (128,), generator=generator)
        loss = nn.functional.binary_cross_entropy_with_logits(net(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train, _ = generate_split(args.seed, "train", SPLIT_SIZES["train"])
    test, _ = generate_split(args.seed, "test", SPLIT_SIZES["test"])
    y_train = (train["attributes"][:, :, 0, 0] > 0).astype(np.float64)
    y_test = (test["attributes"][:, :, 0, 0] > 0).astype(np.float64)
    majority = np.broadcast_to(y_train.mean(axis=0) > 0.5, y_test.shape).astype(np.float64)
    print(f"majority value per attribute (train): test F1 {f1_samples(y_test, majority):.3f}")
    for given in ("image", "mask"):
        start = time.perf_counter()
        net = fit(train[given], y_train, args.steps, args.seed)
        with torch.no_grad():
            predicted = torch.sigmoid(net(torch.from_numpy(test[given]).float() / 255)).numpy()
        print(f"attributes given {given:<5}: test F1 {f1_samples(y_test, predicted):.3f} "
              f"({args.steps} steps, {time.perf_counter() - start:.0f} s on one CPU thread)")


if __name__ == "__main__":
    main()
