"""The ``synthetic`` suite: every model on ``make_patterns`` (3 modalities), no MNIST needed.

For tests and for users checking an install: its splits are generated in memory, its classifiers are
trained on the fly (in seconds) and named by the data's hash. The ``dummy`` row (random images, no
learning) shows where chance lies.
"""

from __future__ import annotations

from mmbench.scaling import Scale
from mmbench.suites import register_suite
from mmbench.suites.polymnist import (
    MAIN_FIGURES,
    OPTIONAL,
    PAPER_FINDINGS,
    PAPER_MODELS,
    POLYMNIST_METRICS,
    VERSION,
)
from mmbench.suites.spec import Budget, DatasetSpec, Suite, Variant, overrides

SYNTHETIC = register_suite(Suite(
    name="synthetic",
    version=VERSION,
    description="every model and metric on synthetic class-coded patterns (3 modalities); checks an install without MNIST",
    dataset=DatasetSpec("synthetic", "patterns3", 3),
    variants=tuple(Variant(label=m, model=m) for m in (*PAPER_MODELS, "dummy")),
    metrics=POLYMNIST_METRICS,
    optional_metrics=OPTIONAL,
    budgets=(
        Budget(
            name="smoke",
            purpose="the whole pipeline in seconds per model, for tests and CI",
            seeds=(0,),
            n_train=256, n_val=32, n_test=48,
            scale=Scale(width=0.125, steps=3, batch_size=32, sampler_steps=4, score_width=16),
            eval_overrides=overrides(
                n_conditional=24, n_unconditional=48, batch_size=48, kid_subsets=5, kid_subset_size=12, grid_size=4,
            ),
            classifier_steps=24,
            ranks=False,
            sizing="pipeline",
            note="untrained models on tiny sizes: checks the pipeline, ranks nothing",
        ),
        Budget(
            name="quick",
            purpose="every model learns the easy patterns (a check that training works on this install)",
            seeds=(0,),
            n_train=2000, n_val=200, n_test=500,
            scale=Scale(width=0.25, steps=400, batch_size=64, sampler_steps=50, score_width=32),
            eval_overrides=overrides(n_conditional=500, n_unconditional=500, kid_subset_size=200),
            classifier_steps=200,
            sizing="unmeasured",
            note="unmeasured, to be sized: steps chosen so small nets can learn 10 square positions",
        ),
    ),
    figures=MAIN_FIGURES,
    tables=("conditional", "unconditional", "robustness"),
    findings=PAPER_FINDINGS,  # the same rows as polymnist10: checks the findings machinery end to end
    default_budget="smoke",
))
