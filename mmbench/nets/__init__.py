"""Networks shared by several models (the paper's residual encoder/decoder)."""
