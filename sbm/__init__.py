"""The score-based multimodal autoencoder (Wesego & Rooshenas 2024).

Modules: ``unet`` (the score network), ``energy`` (-C), ``contrastive`` (-T), ``guidance`` (score
wrappers), ``model`` (``SBM``). The SDE, loss, samplers, autoencoders and the latent-generative base it
shares with MLD live in ``latentdiff``. Importing this package does not import torch-heavy modules eagerly.
"""
