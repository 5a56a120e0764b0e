"""MVTCAE (Hwang et al. 2021): multi-view total-correlation auto-encoder."""
