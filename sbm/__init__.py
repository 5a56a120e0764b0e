"""The score-based multimodal autoencoder (Wesego & Rooshenas 2024) and its SDE machinery.

Modules: ``sde`` (VP-SDE), ``losses`` (denoising score matching), ``sampling`` (PC, Euler and
probability-flow ODE samplers, by name), ``unet`` (the score network), ``autoencoders`` (stage 1),
``energy`` (-C), ``contrastive`` (-T), ``guidance`` (score wrappers), ``base`` (what SBM and MLD
share), ``model`` (``SBM``). Importing this package does not import torch-heavy modules eagerly.
"""
