"""MMVAE+'s own ResNet encoder/decoder for 3×28×28 images (Palumbo et al. 2023, ``epalu/mmvaeplus``
``src/models/vae_polymnist.py``: ``ResnetBlock``, ``Enc``, ``Dec``), with a ``width`` multiplier.

Pre-activation residual blocks (LeakyReLU 0.2, two 3×3 convs, output = shortcut + 0.1·residual, 1×1
shortcut when channels change, hidden channels = min(in, out)). Encoder: two separate branches, one for
the modality-specific w and one for the shared z, each 3×3 conv 3→nf, block nf→nf, then twice
[avgpool 3/2/1, block ×2 channels] to nf·4×7×7, linear heads for the Laplace location and scale
(scale = softmax(raw)·dim + 1e-6, as the reference). Decoder: linear → nf·4×7×7, blocks nf·4→nf·2, ×2
upsample, nf·2→nf, ×2 upsample, nf→nf, LeakyReLU, 3×3 conv nf→3 (the Laplace location).
``nf = 64·width`` (64 in the reference). Convolutions run channels-last, as in ``mmbench.nets.residual``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mmbench.nets.residual import channels_last, to_channels_last

ETA = 1e-6  # the reference's Constants.eta, added to every posterior scale
SIDE = 7  # 28 / 2 / 2


def _nf(width: float) -> int:
    return max(4, int(round(64 * width)))


def _act(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2)


class ResnetBlock(nn.Module):
    """Pre-activation residual block: shortcut(x) + 0.1 · conv(act(conv(act(x))))."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        hidden = min(c_in, c_out)
        self.conv_0 = nn.Conv2d(c_in, hidden, 3, padding=1)
        self.conv_1 = nn.Conv2d(hidden, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + 0.1 * self.conv_1(_act(self.conv_0(_act(x))))


class _Branch(nn.Module):
    """One encoder branch: 3×28×28 → (location, scale) of a Laplace posterior of size ``dim``."""

    def __init__(self, dim: int, nf: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, nf, 3, padding=1),
            ResnetBlock(nf, nf),
            nn.AvgPool2d(3, stride=2, padding=1),  # 14
            ResnetBlock(nf, 2 * nf),
            nn.AvgPool2d(3, stride=2, padding=1),  # 7
            ResnetBlock(2 * nf, 4 * nf),
        )
        self.loc = nn.Linear(4 * nf * SIDE * SIDE, dim)
        self.raw_scale = nn.Linear(4 * nf * SIDE * SIDE, dim)
        channels_last(self)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(to_channels_last(x)).flatten(1)
        raw = self.raw_scale(h)
        return self.loc(h), F.softmax(raw, dim=-1) * raw.shape[-1] + ETA


class Encoder(nn.Module):
    """x → (w_loc, w_scale, z_loc, z_scale): modality-specific w and shared z, two separate branches."""

    def __init__(self, private_dim: int, shared_dim: int, width: float = 1.0) -> None:
        super().__init__()
        nf = _nf(width)
        self.w = _Branch(private_dim, nf)
        self.z = _Branch(shared_dim, nf)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (*self.w(x), *self.z(x))


class Decoder(nn.Module):
    """(w, z) concatenated → the Laplace location of a 3×28×28 image."""

    def __init__(self, latent_dim: int, width: float = 1.0) -> None:
        super().__init__()
        nf = _nf(width)
        self.c0 = 4 * nf
        self.fc = nn.Linear(latent_dim, self.c0 * SIDE * SIDE)
        self.body = nn.Sequential(
            ResnetBlock(4 * nf, 2 * nf),
            nn.Upsample(scale_factor=2),  # 14
            ResnetBlock(2 * nf, nf),
            nn.Upsample(scale_factor=2),  # 28
            ResnetBlock(nf, nf),
        )
        self.conv_img = nn.Conv2d(nf, 3, 3, padding=1)
        channels_last(self)

    def forward(self, u: Tensor) -> Tensor:
        h = self.body(to_channels_last(self.fc(u).view(-1, self.c0, SIDE, SIDE)))
        return self.conv_img(_act(h)).contiguous()
