"""MMVAE (Shi et al. 2019): uniform mixture of unimodal experts, stratified ELBO."""
