"""MMVAE+ (Palumbo et al. 2023): shared and modality-specific Laplace latents, mixture of experts."""
