"""Speed of the metric pipeline on this machine.

1. FID feature extraction (images/s) for both extractors: ``mmbench-clf`` (the evaluation classifier's
   penultimate layer) and ``inception-v3-compat`` (randomly initialised weights: speed does not depend on
   the values).
2. The whole pipeline for one model (``DummyModel``: generation costs ~nothing, so this is the metrics'
   own cost) at quick-budget sizes, broken down by metric, then again with a warm sample cache.

Defaults are the polymnist10 ``quick`` budget's eval sizes (n_conditional 1000, n_unconditional 2000, KID
subsets of 500). Usage: ``python benchmarks/bench_metrics.py [--modalities 10 --progress --json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _classifier_files(folder: Path) -> tuple[str, str]:
    from classifiers.nets import build_classifier
    from classifiers.store import save_classifier

    torch.manual_seed(0)
    evaluation = save_classifier(build_classifier("pmclf"), "bench-eval", {"note": "random weights"}, folder)
    substitute = save_classifier(build_classifier("substitute-cnn"), "bench-sub", {"note": "random weights"}, folder)
    return str(evaluation.path), str(substitute.path)


def bench_extractors(classifier: str, folder: Path, n_clf: int, n_inception: int, batch_size: int) -> dict[str, float]:
    import warnings

    from mmbench.metrics.extractors import (
        CLASSIFIER,
        INCEPTION,
        build_extractor,
        extract_features,
        identify,
        random_inception_weights,
    )

    rng = np.random.default_rng(0)
    out = {}
    for name, n, weights in (
        (CLASSIFIER, n_clf, None),
        (INCEPTION, n_inception, str(random_inception_weights(folder / "inception-random.pth"))),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            extractor = build_extractor(identify(name, classifier, weights))
        images = rng.integers(0, 256, size=(n, 3, 28, 28), dtype=np.uint8)
        extract_features(extractor, images[: min(n, 8)], batch_size, "cpu")  # warm-up
        start = time.perf_counter()
        extract_features(extractor, images, batch_size, "cpu")
        out[name] = n / (time.perf_counter() - start)
        print(f"feature extraction {name}: {out[name]:.1f} images/s", flush=True)
    return out


def bench_pipeline(args: argparse.Namespace, classifier: str, substitute: str, workdir: Path) -> dict[str, dict[str, float]]:
    from mmbench.data.synthetic import make_patterns
    from mmbench.dummy import DummyConfig, DummyModel
    from mmbench.metrics import EvalSettings, evaluate, metric_names

    test = make_patterns(args.modalities, n=max(args.n_conditional, args.n_unconditional), seed=1)
    model = DummyModel(test.modalities, DummyConfig())
    settings = EvalSettings(
        n_conditional=args.n_conditional, n_unconditional=args.n_unconditional, batch_size=args.batch_size,
        classifier=classifier, substitute=substitute, kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size,
    )
    runs = {}
    for label in ("cold", "warm"):
        start = time.perf_counter()
        result = evaluate(model, test, metric_names(), settings, workdir, progress=args.progress)
        total = time.perf_counter() - start
        times = {k.removeprefix("seconds/"): float(v) for k, v in result.provenance.items() if k.startswith("seconds/")}
        runs[label] = {"total": total, **times, "num_values": float(len(result.values))}
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modalities", type=int, default=10)
    parser.add_argument("--n-conditional", type=int, default=1000)
    parser.add_argument("--n-unconditional", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--kid-subsets", type=int, default=10)
    parser.add_argument("--kid-subset-size", type=int, default=500)
    parser.add_argument("--clf-images", type=int, default=4096)
    parser.add_argument("--inception-images", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--progress", action="store_true", help="print the pipeline's progress to stderr")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["MMBENCH_HOME"] = str(folder / "home")
        classifier, substitute = _classifier_files(folder)
        speeds = bench_extractors(classifier, folder, args.clf_images, args.inception_images, args.batch_size)
        runs = bench_pipeline(args, classifier, substitute, folder / "work")
    print(f"threads: {torch.get_num_threads()}  cpus: {os.cpu_count()}")
    for name, speed in speeds.items():
        print(f"feature extraction {name:<20} {speed:10.1f} images/s")
    print(f"pipeline: DummyModel, M={args.modalities}, n_conditional={args.n_conditional}, "
          f"n_unconditional={args.n_unconditional}, kid_subsets={args.kid_subsets} (seconds)")
    keys = sorted({k for r in runs.values() for k in r} - {"num_values"})
    for key in keys:
        print(f"  {key:<28} " + "  ".join(f"{label} {runs[label].get(key, float('nan')):8.2f}" for label in runs))
    print(f"  values produced: {int(runs['cold']['num_values'])}")
    if args.json:
        args.json.write_text(json.dumps({"extractors_images_per_s": speeds, "pipeline_s": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
