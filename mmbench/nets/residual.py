"""The paper's residual encoder/decoder for square images (Soft-IntroVAE style): 28, 32, 64, 128 pixels.

Source: Wesego & Rooshenas 2024 (sbmae ``h_vae_model_copy.py``: ResEncoder/ResDecoder), after
Daniel & Tamar 2021 (Soft-IntroVAE). PolyMNIST's 28×28 images are zero-padded 28→32 inside the encoder
and decoder outputs are cropped 32→28, so every model and metric sees 28×28 (PROTOCOL.md §1).
``width`` scales every channel count (1.0 = the paper's 64/128/256).

Larger images (CelebAMask-HQ's 128×128, paper A.9) get one more 64-channel residual level per doubling
above 32 (an average pool in the encoder, a nearest upsample in the decoder), so the trunk always ends
at 2×2 (encoder) and starts at 4×4 (decoder) as at 32×32. A.9 names the residual VAE family but no
per-level layout for 128×128; this extension is our decision (docs/models.md). At 28×28 the modules and
their state_dict names are exactly the PolyMNIST nets'.

Both nets keep their convolutions in channels-last memory format (:func:`channels_last`): the same
arithmetic, ≈ 1.5–1.9× faster training steps on a CPU (oneDNN; docs/pitfalls.md) and the layout tensor
cores prefer on a GPU. Inputs are converted on the way in and outputs are returned contiguous, so callers
see ordinary NCHW tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PAD = 2  # 28 + 2·2 = 32
BASE = 32  # the side the 64/128/256 trunk was designed for
SIZES = (28, 32, 64, 128)


def channels_last(module: nn.Module) -> nn.Module:
    """Put the module's 4-d weights in channels-last format (in place); returns the module."""
    return module.to(memory_format=torch.channels_last)


def to_channels_last(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _channels(base: int, width: float) -> int:
    return max(4, int(round(base * width)))


def _levels(size: int) -> tuple[int, int]:
    """``(pad, extra)``: the zero padding to 32 (28 → 2, else 0) and the residual levels above 32."""
    if size not in SIZES:
        raise ValueError(f"the residual image nets take square images of side {SIZES}, got {size}; "
                         "resize the images when preparing the dataset")
    return (PAD if size == 28 else 0), max(0, size.bit_length() - BASE.bit_length())


class ResidualBlock(nn.Module):
    """3×3 conv, BN, LeakyReLU, 3×3 conv, BN, (+ 1×1 skip if channels change), LeakyReLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.skip = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.skip(x))


class ResEncoder(nn.Module):
    """C×S×S → (mu, logvar) of size ``latent_dim`` each (logvar is unused by deterministic AEs)."""

    def __init__(self, latent_dim: int = 64, width: float = 1.0, in_channels: int = 3, size: int = 28) -> None:
        super().__init__()
        c64, c128, c256 = (_channels(c, width) for c in (64, 128, 256))
        self.pad, extra = _levels(size)
        larger = [layer for _ in range(extra) for layer in (ResidualBlock(c64, c64), nn.AvgPool2d(2))]
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c64, 5, padding=2, bias=False),
            nn.BatchNorm2d(c64),
            nn.LeakyReLU(0.2),
            nn.AvgPool2d(2),  # S/2
            *larger,  # down to 16
            ResidualBlock(c64, c64),
            nn.AvgPool2d(2),  # 8
            ResidualBlock(c64, c128),
            nn.AvgPool2d(2),  # 4
            ResidualBlock(c128, c256),
            nn.AvgPool2d(2),  # 2
        )
        self.head = nn.Linear(c256 * 2 * 2, 2 * latent_dim)
        self.latent_dim = latent_dim
        channels_last(self)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        p = self.pad
        h = self.features(to_channels_last(F.pad(x, (p, p, p, p)) if p else x))
        mu, logvar = self.head(h.flatten(1)).chunk(2, dim=1)
        return mu, logvar


class ResDecoder(nn.Module):
    """``latent_dim`` → C×S×S outputs (linear: image means or logits; the likelihood decides the rest)."""

    def __init__(self, latent_dim: int = 64, width: float = 1.0, out_channels: int = 3, size: int = 28) -> None:
        super().__init__()
        c64, c128, c256 = (_channels(c, width) for c in (64, 128, 256))
        self.c256 = c256
        self.pad, extra = _levels(size)
        larger = [layer for _ in range(extra) for layer in (nn.Upsample(scale_factor=2, mode="nearest"), ResidualBlock(c64, c64))]
        self.fc = nn.Sequential(nn.Linear(latent_dim, c256 * 4 * 4), nn.ReLU())
        self.body = nn.Sequential(
            ResidualBlock(c256, c128),
            nn.Upsample(scale_factor=2, mode="nearest"),  # 8
            ResidualBlock(c128, c64),
            nn.Upsample(scale_factor=2, mode="nearest"),  # 16
            ResidualBlock(c64, c64),
            nn.Upsample(scale_factor=2, mode="nearest"),  # 32
            ResidualBlock(c64, c64),
            *larger,  # up to S
            nn.Conv2d(c64, out_channels, 5, padding=2),
        )
        channels_last(self)

    def forward(self, z: Tensor) -> Tensor:
        h = to_channels_last(self.fc(z).view(-1, self.c256, 4, 4))
        out = self.body(h)
        p = self.pad
        return (out[:, :, p:-p, p:-p] if p else out).contiguous()
