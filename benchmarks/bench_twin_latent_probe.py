"""Where a latent model's attribute F1 given the image is lost on the celeba-twin: in the autoencoders or in
the score model. Two bounds no sampler can beat, beside the training-majority floor:

- **image latent → attributes**: a classifier fitted on the train split's image latents (the model's own
  image autoencoder, encoded as its sampler sees them) predicts each test tuple's attributes; its F1 says how
  much of the attributes the image latent holds. Logistic regression (linear) and a one-hidden-layer MLP
  (scikit-learn; the attribute F1 of ``mmbench.metrics.f1.f1_samples``, the paper's).
- **attribute round trip**: the attribute autoencoder decoding the test tuples' own attribute latents, i.e.
  a perfect score model's ceiling.
- **Gaussian joint**: a Gaussian fitted to the train split's (image latent, attribute latent) pairs, its
  conditional given each test image latent sampled and decoded: what a score model that had learnt no more
  than the latents' first two moments would reach (the exact conditional of that Gaussian, i.e. of its
  score, which the samplers reproduce: ``tests/test_samplers*.py``).

Usage: ``python benchmarks/bench_twin_latent_probe.py --model sbm-rae [--steps 600] [--n-train 4000]
[--artifacts DIR] [--set KEY=VALUE ...]`` (one torch thread; quick's sizes by default). Trains the model's
stages as ``bench_twin_models.py`` does (``--set score_steps=1`` skips most of the score net, which the
bounds do not use) and prints one line per bound.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch
from bench_twin_models import add_model_arguments, majority_f1, model_and_data, train
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from mmbench.data.dataset import MultimodalDataset
from mmbench.metrics.f1 import f1_samples

PROBES = {
    "linear": lambda: LogisticRegression(max_iter=2000),
    "mlp": lambda: MLPClassifier((128,), max_iter=500, random_state=0),
}


def latents_of(model: Any, data: MultimodalDataset, modality: str) -> torch.Tensor:
    """``(N, D)``: the model's latent of ``modality`` for every tuple of ``data`` (eval mode, no gradients)."""
    batch, _ = data.batch(np.arange(len(data)))
    with torch.no_grad():
        return model.encode_latents(batch, [modality])[:, model.modalities.index(modality)]


def attribute_bits(data: MultimodalDataset) -> np.ndarray:
    """``(N, A)`` 0/1 attributes of ``data``."""
    return (data.images["attributes"].reshape(len(data), -1) > 127.5).astype(np.int64)


def probe_f1(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray, kind: str) -> float:
    """F1 of one classifier per attribute fitted on (latent, bit) pairs; a constant attribute is predicted as such."""
    columns = []
    for j in range(y_train.shape[1]):
        if y_train[:, j].min() == y_train[:, j].max():
            columns.append(np.full(len(z_test), y_train[0, j]))
        else:
            columns.append(PROBES[kind]().fit(z_train, y_train[:, j]).predict(z_test))
    return f1_samples(y_test.astype(np.float64), np.stack(columns, 1).astype(np.float64), "attributes")


def round_trip_f1(model: Any, test: MultimodalDataset) -> float:
    """F1 of the attribute autoencoder decoding the test tuples' own attribute latents."""
    return decoded_f1(model, latents_of(model, test, "attributes").numpy(), test)


def gaussian_conditional(given_train: np.ndarray, target_train: np.ndarray, given_test: np.ndarray,
                         seed: int = 0, ridge: float = 1e-6) -> np.ndarray:
    """Draws of ``target`` given each row of ``given_test`` from the Gaussian fitted to the train pairs: mean
    mu_t + S_tg S_gg^-1 (g - mu_g), covariance S_tt - S_tg S_gg^-1 S_gt (``ridge`` keeps both invertible)."""
    d = given_train.shape[1]
    joint = np.concatenate([given_train, target_train], 1).astype(np.float64)
    mean, cov = joint.mean(0), np.cov(joint, rowvar=False)
    s_gg, s_tg, s_tt = cov[:d, :d] + ridge * np.eye(d), cov[d:, :d], cov[d:, d:]
    gain = np.linalg.solve(s_gg, s_tg.T).T
    conditional_cov = s_tt - gain @ s_tg.T
    root = np.linalg.cholesky(conditional_cov + ridge * np.eye(len(s_tt)))
    noise = np.random.default_rng(seed).standard_normal((len(given_test), len(s_tt)))
    return mean[d:] + (given_test - mean[:d]) @ gain.T + noise @ root.T


def decoded_f1(model: Any, z_attributes: np.ndarray, test: MultimodalDataset) -> float:
    """F1 of the attribute autoencoder decoding ``z_attributes`` (one per test tuple; thresholded at 0.5)."""
    z = torch.as_tensor(z_attributes, dtype=torch.float32)
    full = torch.stack([z] * len(model.modalities), 1)
    with torch.no_grad():
        decoded = model.decode_latents(full, ["attributes"])["attributes"].reshape(len(test), -1).numpy()
    return f1_samples(attribute_bits(test).astype(np.float64), (decoded > 0.5).astype(np.float64), "attributes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser, "sbm-rae", 4000)
    args, _, model, data, test = model_and_data(parser)
    train(model, data, args.model, args.artifacts)
    model.eval()
    z_train, z_test = latents_of(model, data, "image").numpy(), latents_of(model, test, "image").numpy()
    print(f"majority per attribute: F1 {majority_f1(data, test):.3f}")
    for kind in PROBES:
        f1 = probe_f1(z_train, attribute_bits(data), z_test, attribute_bits(test), kind)
        print(f"{args.model}: image latent -> attributes ({kind} probe, {args.n_train} train tuples): F1 {f1:.3f}")
    print(f"{args.model}: attribute autoencoder round trip: F1 {round_trip_f1(model, test):.3f}")
    attributes_train = latents_of(model, data, "attributes").numpy()
    f1s = [decoded_f1(model, gaussian_conditional(z_train, attributes_train, z_test, seed), test) for seed in range(3)]
    print(f"{args.model}: Gaussian joint of the latents, attributes drawn given the image latent: F1 {np.mean(f1s):.3f} "
          f"({', '.join(f'{f:.3f}' for f in f1s)})")


if __name__ == "__main__":
    main()
