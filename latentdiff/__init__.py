"""Latent diffusion over per-modality autoencoders: the parts every latent-diffusion model here shares.

SBM (Wesego & Rooshenas 2024, ``sbm/``) and MLD (Bounoua et al. 2024, ``baselines/mld/``) both build on
this package; neither imports the other. Modules: ``sde`` (VP-SDE, Song et al. 2021), ``losses``
(denoising score matching), ``grids`` (the samplers' time grids), ``sampling`` (PC, Euler, probability-flow
ODE and few-step samplers, by name), ``analytic`` (closed-form Gaussian-mixture scores for testing
samplers), ``standardise`` (latent moments and their standardisation), ``autoencoders`` (stage 1: the unimodal VAEs/RAEs, their shared ``AutoencoderConfig`` and
reuse keys), ``base`` (``LatentGenerativeModel``: autoencoders, latent cache and the contract's API over
one ``_generate``). Importing this package does not import torch-heavy modules eagerly.
"""
