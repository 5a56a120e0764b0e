"""How close ``mmbench run --dry-run``'s time estimate comes to the run it prices (``mmbench.runner.cost``).

In a fresh temporary home, a suite with the synthetic patterns and two budgets that differ only in their
optimiser steps (``--short`` and ``--long`` steps per stage, smoke sizes otherwise) is run at the short
budget, which records the step, sample and overhead times; the long budget is then priced by the dry run
and run; the script prints, per job, the estimate, its sources, the measured ``job/seconds`` and the ratio.

Usage: ``python benchmarks/bench_estimate.py [--models mvtcae,sbm-vae] [--short 3] [--long 60] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mvtcae,sbm-vae")
    parser.add_argument("--short", type=int, default=3)
    parser.add_argument("--long", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    os.environ["MMBENCH_HOME"] = tempfile.mkdtemp(prefix="mmbench-bench-estimate-")

    from mmbench import tracking
    from mmbench.runner.dryrun import dry_run
    from mmbench.runner.prepare import RunOptions
    from mmbench.runner.run import run_suite
    from mmbench.suites import get_suite, register_suite

    base = get_suite("synthetic")
    smoke = base.budget("smoke")
    budgets = tuple(dataclasses.replace(smoke, name=name, scale=dataclasses.replace(smoke.scale, steps=steps))
                    for name, steps in (("short", args.short), ("long", args.long)))
    suite = register_suite(dataclasses.replace(base, name="estimate-check", budgets=budgets, default_budget="short"))
    uri = f"sqlite:///{os.environ['MMBENCH_HOME']}/store.db"
    models = tuple(args.models.split(","))
    options = RunOptions(models=models, device="cpu", threads=args.threads, tracking_uri=uri, quiet=True)
    run_suite(suite, dataclasses.replace(options, budget="short"), lambda _: None)
    priced = dry_run(suite, dataclasses.replace(options, budget="long"), lambda _: None)
    summary = run_suite(suite, dataclasses.replace(options, budget="long"), lambda _: None)
    store = tracking.Store(uri)
    print(f"steps per stage {args.short} → {args.long}, {args.threads} thread(s)")
    print("| job | estimate (s) | priced from | measured job/seconds | estimate / measured |")
    print("|---|---|---|---|---|")
    actual = {o.job_id: store.run(o.run_id).metrics["job/seconds"] for o in summary.outcomes}
    for cost in priced:
        sources = f"training {cost.estimate.sources(True)}, eval {cost.estimate.sources(False)}"
        seconds = cost.seconds
        truth = actual[cost.job.job_id]
        ratio = "—" if seconds is None else f"{seconds / truth:.2f}"
        print(f"| {cost.job.title} | {seconds and round(seconds, 1)} | {sources} | {truth:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
