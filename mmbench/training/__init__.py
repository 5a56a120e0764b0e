"""Training: device choice, the stage-aware trainer, checkpoints and the shared artifact store."""
