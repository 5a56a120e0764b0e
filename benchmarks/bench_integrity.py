"""What verifying reused files costs (``mmbench.integrity``, ``mmbench.data.store.load_rows``).

1. sha256 throughput of this CPU (hashlib, one thread).
2. Synthetic smoke jobs (the CI budget), each model in its own fresh ``MMBENCH_HOME``-like store: the
   time spent hashing, writing and reading sha256 records and verifying reused files, measured by wrapping
   the functions that do it, beside the jobs' own wall time. Rows listed after the first reuse its stages
   where they share them (``sbm-vae`` then ``sbm-vae-c``: the read path).
3. With ``--dataset NAME`` (a prepared dataset, e.g. polymnist10): a smoke job's data load (sizes of the
   suite's smoke budget) without hashing (as before), hashing the blocks of the rows it reads (now), and
   hashing whole files (the fallback for manifests without block hashes). The dataset is only read: a
   manifest without block hashes is copied, with them, beside symbolic links in a temporary folder.

Usage: ``python benchmarks/bench_integrity.py [--models sbm-vae,sbm-vae-c mvae --dataset polymnist10]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def sha256_throughput(mib: int = 256, repeats: int = 3) -> float:
    """The best of ``repeats`` hashes of ``mib`` MiB, in MiB/s."""
    data = os.urandom(mib << 20)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        hashlib.sha256(data).digest()
        best = min(best, time.perf_counter() - start)
    return mib / best


class Clock:
    """Accumulates the wall time of the wrapped module functions (none of them calls another)."""

    def __init__(self) -> None:
        self.seconds, self.calls = 0.0, 0

    def wrap(self, module: object, name: str) -> None:
        inner: Callable = getattr(module, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        setattr(module, name, timed)


def bench_jobs(groups: list[str], threads: int) -> None:
    from mmbench import integrity
    from mmbench.data import store
    from mmbench.metrics import samples
    from mmbench.runner.run import RunOptions, run_suite

    clock = Clock()
    for module, name in ((integrity, "sha256_bytes"), (integrity, "_record"), (integrity, "recorded"),
                         (samples, "sha256_file"), (samples, "_verified"), (store, "check_blocks")):
        clock.wrap(module, name)
    home = Path(os.environ["MMBENCH_HOME"])
    for group in groups:
        clock.seconds, clock.calls = 0.0, 0
        options = RunOptions(models=tuple(group.split(",")), quiet=True, device="cpu", threads=threads,
                             tracking_uri=f"sqlite:///{home / 'store.db'}")
        summary = run_suite("synthetic", options, lambda line: None)
        jobs = sum(o.seconds for o in summary.outcomes)
        share = 100 * clock.seconds / jobs if jobs else float("nan")
        print(f"  {group}: jobs {jobs:.2f} s, integrity {clock.seconds:.3f} s ({clock.calls} calls) = {share:.2f} %")


def _with_block_hashes(root: Path, scratch: Path) -> Path:
    """``root`` itself when its manifest has block hashes; else a linked copy whose manifest has them."""
    from mmbench.data import store
    from mmbench.hashing import sha256_file_blocks

    manifest = store.read_manifest(root)
    if all("blocks" in e for e in manifest["files"].values()):
        return root
    copy = scratch / root.name
    for rel, entry in manifest["files"].items():
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(root / rel, copy / rel)
        digest, blocks = sha256_file_blocks(root / rel, store.BLOCK_BYTES)
        if digest != entry["sha256"]:
            raise SystemExit(f"{root / rel} does not match its manifest: run `mmbench data verify` first")
        entry["blocks"] = {"bytes": store.BLOCK_BYTES, "sha256": blocks}
    (copy / store.MANIFEST).write_text(json.dumps(manifest))
    return copy


def bench_data(name: str, scratch: Path) -> None:
    from mmbench.data import store
    from mmbench.suites import get_suite

    root = _with_block_hashes(store.resolve_dataset(name), scratch)
    manifest = store.read_manifest(root)
    modalities = tuple(manifest["modalities"])
    budget = get_suite("polymnist10").budget("smoke")
    sizes = {"train": budget.n_train, "val": budget.n_val, "test": budget.n_test}

    def unchecked() -> None:
        for split, n in sizes.items():
            data = store.load_dataset(root, split, verify=False, modalities=modalities)
            data.subset(n) if n else data

    def blocks() -> None:
        for split, n in sizes.items():
            store.load_rows(root, split, modalities, n)

    def whole() -> None:
        for split, n in sizes.items():
            data = store.load_dataset(root, split, verify=False, modalities=modalities)
            assert not store.check_files(root, manifest, store.split_files(manifest, split, modalities), full=True)
            data.subset(n) if n else data

    print(f"  {name} smoke data load ({len(modalities)} modalities, sizes {sizes}; best of 3, warm page cache):")
    for fn in (unchecked, blocks, whole):
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        print(f"    {fn.__name__:9s} {best:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=["sbm-vae", "sbm-vae-c", "mvae,mopoe,mld"],
                        help="synthetic-suite rows; a comma joins rows into one run")
    parser.add_argument("--dataset", default=None, help="a prepared dataset to time a smoke job's data load on")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print(f"sha256: {sha256_throughput():.0f} MiB/s (one thread)")
    scratch = Path(tempfile.mkdtemp(prefix="bench-integrity-"))
    previous = os.environ.get("MMBENCH_HOME")
    try:
        if args.dataset:
            bench_data(args.dataset, scratch)
        os.environ["MMBENCH_HOME"] = str(scratch / "home")
        if args.models:
            print("synthetic smoke jobs (classifiers trained first, not counted):")
            bench_jobs(args.models, args.threads)
    finally:
        if previous is not None:
            os.environ["MMBENCH_HOME"] = previous
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
