"""The published multimodal generative models mmbench compares against (PROTOCOL.md §2).

One package per model (``mvae``, ``mmvae``, ``mopoe``, ``mvtcae``, ``mmvaeplus``, ``mld``), each a
:class:`mmbench.contract.MultimodalModel` found through :mod:`mmbench.registry`; shared pieces of the
Gaussian multimodal VAEs live in :mod:`baselines.common`.
"""
