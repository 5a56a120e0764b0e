"""An example of a model of one's own scored by mmbench (see README.md)."""

from mmbench_example_model.model import TinyMVAE, TinyMVAEConfig

__all__ = ["TinyMVAE", "TinyMVAEConfig"]
