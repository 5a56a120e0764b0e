"""MVAE (Wu & Goodman 2018): product of Gaussian experts with a prior expert, ELBO sub-sampling."""
