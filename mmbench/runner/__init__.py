"""The harness's runner: plan a suite's jobs, execute them (in process, loky or dask), log them to MLflow.

- :mod:`mmbench.runner.prepare`: a run planned once (suite, budget → checked → data, classifiers, jobs),
  shared by ``mmbench run`` and ``--dry-run``;
- :mod:`mmbench.runner.plan`: jobs and their ids (hash of the resolved config); cost of a plan;
- :mod:`mmbench.runner.models`: a model's class by name and what a budget's scale makes of its config;
- :mod:`mmbench.runner.validate`: resolve and check every name of a suite without training;
- :mod:`mmbench.runner.data`: datasets and classifiers (identify, build when missing, load splits);
- :mod:`mmbench.runner.job`: one job in a worker (train, evaluate, log);
- :mod:`mmbench.runner.parallel`: the execution backends;
- :mod:`mmbench.runner.run` / :mod:`mmbench.runner.dryrun`: ``mmbench run`` and ``--dry-run``.

Importing this package imports neither torch nor mlflow; its functions do, when called.
"""

from mmbench.runner.prepare import RunOptions
from mmbench.runner.run import RunSummary, run_suite

__all__ = ["RunOptions", "RunSummary", "run_suite"]
