"""MLD (Bounoua et al. 2024): multi-modal latent diffusion over the SBM-RAE autoencoders."""
