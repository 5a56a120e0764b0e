"""mmbench: a benchmark suite for multimodal generative models.

The harness (contracts, data, training loop, metrics, suites, runner, tracking, report, CLI) lives here;
models live in the sibling packages ``sbm`` and ``baselines`` and are found through
:mod:`mmbench.registry` by lazy import names, so ``import mmbench`` never imports torch.
"""

__version__ = "0.1.0"
