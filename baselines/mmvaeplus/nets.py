"""MMVAE+'s own ResNet encoder/decoder for 3×28×28 images (Palumbo et al. 2023, ``epalu/mmvaeplus``
``src/models/vae_polymnist.py``: ``ResnetBlock``, ``Enc``, ``Dec``), with a ``width`` multiplier.

Pre-activation residual blocks (LeakyReLU 0.2, two 3×3 convs, output = shortcut + 0.1·residual, 1×1
shortcut when channels change, hidden channels = min(in, out)). Encoder: two separate branches, one for
the modality-specific w and one for the shared z, each 3×3 conv 3→nf, block nf→nf, then twice
[avgpool 3/2/1, block ×2 channels] to nf·4×7×7, linear heads for the Laplace location and scale
(scale = softmax(raw)·dim + 1e-6, as the reference). Decoder: linear → nf·4×7×7, blocks nf·4→nf·2, ×2
upsample, nf·2→nf, ×2 upsample, nf→nf, LeakyReLU, 3×3 conv nf→3 (the Laplace location).
``nf = 64·width`` (64 in the reference). Convolutions run channels-last, as in ``mmbench.nets.residual``.

Other modality kinds (``mmbench.nets.modality``): a 1-channel mask or a 32×32 image use the same conv
nets with that channel count and side (the trunk ends at side/4); attributes use an MLP of the same
hidden width as ``mmbench.nets.modality.AttributeEncoder`` for each branch and for the decoder (logits).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mmbench.data.source import ModalitySpec
from mmbench.nets.modality import ATTRIBUTE_HIDDEN, POLYMNIST_SHAPE, check_spec
from mmbench.nets.residual import channels_last, to_channels_last

ETA = 1e-6  # the reference's Constants.eta, added to every posterior scale
SIDE = 7  # 28 / 2 / 2
CONV_SIDES = (28, 32)  # the sides the conv nets take (the trunk ends at side / 4)


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
    """One encoder branch: C×S×S (3×28×28 by default) → (location, scale) of a Laplace posterior of size ``dim``."""

    def __init__(self, dim: int, nf: int, in_channels: int = 3, side: int = 28) -> None:
        super().__init__()
        end = _conv_side(side)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, nf, 3, padding=1),
            ResnetBlock(nf, nf),
            nn.AvgPool2d(3, stride=2, padding=1),  # 14
            ResnetBlock(nf, 2 * nf),
            nn.AvgPool2d(3, stride=2, padding=1),  # 7
            ResnetBlock(2 * nf, 4 * nf),
        )
        self.loc = nn.Linear(4 * nf * end * end, dim)
        self.raw_scale = nn.Linear(4 * nf * end * end, dim)
        channels_last(self)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(to_channels_last(x)).flatten(1)
        raw = self.raw_scale(h)
        return self.loc(h), F.softmax(raw, dim=-1) * raw.shape[-1] + ETA


class Encoder(nn.Module):
    """x → (w_loc, w_scale, z_loc, z_scale): modality-specific w and shared z, two separate branches."""

    def __init__(self, private_dim: int, shared_dim: int, width: float = 1.0,
                 modality: ModalitySpec | None = None) -> None:
        super().__init__()
        nf = _nf(width)
        self.w, self.z = (_branch(dim, nf, width, modality) for dim in (private_dim, shared_dim))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (*self.w(x), *self.z(x))


class Decoder(nn.Module):
    """(w, z) concatenated → the Laplace location of a C×S×S image (3×28×28 by default), or a mask's logits."""

    def __init__(self, latent_dim: int, width: float = 1.0, out_channels: int = 3, side: int = 28) -> None:
        super().__init__()
        nf = _nf(width)
        self.c0 = 4 * nf
        self.side = _conv_side(side)
        self.fc = nn.Linear(latent_dim, self.c0 * self.side * self.side)
        self.body = nn.Sequential(
            ResnetBlock(4 * nf, 2 * nf),
            nn.Upsample(scale_factor=2),  # 14
            ResnetBlock(2 * nf, nf),
            nn.Upsample(scale_factor=2),  # 28
            ResnetBlock(nf, nf),
        )
        self.conv_img = nn.Conv2d(nf, out_channels, 3, padding=1)
        channels_last(self)

    def forward(self, u: Tensor) -> Tensor:
        h = self.body(to_channels_last(self.fc(u).view(-1, self.c0, self.side, self.side)))
        return self.conv_img(_act(h)).contiguous()


def _conv_side(side: int) -> int:
    if side not in CONV_SIDES:
        raise ValueError(f"MMVAE+'s conv nets take images of side {CONV_SIDES}, got {side}")
    return side // 4


class AttributeBranch(nn.Module):
    """L attributes ``(B, L, 1, 1)`` → (location, scale) of a Laplace posterior: an MLP, the scale as the conv branch's."""

    def __init__(self, num_attributes: int, dim: int, width: float) -> None:
        super().__init__()
        hidden = max(16, int(round(ATTRIBUTE_HIDDEN * width)))
        self.features = nn.Sequential(nn.Linear(num_attributes, hidden), nn.LeakyReLU(0.2),
                                      nn.Linear(hidden, hidden), nn.LeakyReLU(0.2))
        self.loc = nn.Linear(hidden, dim)
        self.raw_scale = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(x.flatten(1))
        raw = self.raw_scale(h)
        return self.loc(h), F.softmax(raw, dim=-1) * raw.shape[-1] + ETA


class AttributeDecoder(nn.Module):
    """(w, z) → logits ``(B, L, 1, 1)`` of L Bernoulli attributes."""

    def __init__(self, latent_dim: int, num_attributes: int, width: float) -> None:
        super().__init__()
        hidden = max(16, int(round(ATTRIBUTE_HIDDEN * width)))
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                                 nn.LeakyReLU(0.2), nn.Linear(hidden, num_attributes))

    def forward(self, u: Tensor) -> Tensor:
        return self.net(u)[:, :, None, None]


def _branch(dim: int, nf: int, width: float, modality: ModalitySpec | None) -> nn.Module:
    if modality is None or modality.shape == POLYMNIST_SHAPE and modality.kind == "image":
        return _Branch(dim, nf)
    check_spec(modality)
    if modality.kind == "attributes":
        return AttributeBranch(modality.shape[0], dim, width)
    return _Branch(dim, nf, modality.shape[0], modality.shape[1])


def build_decoder(latent_dim: int, width: float, modality: ModalitySpec | None = None) -> nn.Module:
    """The decoder of one modality's kind (PolyMNIST's :class:`Decoder` when ``modality`` is None)."""
    if modality is None or modality.shape == POLYMNIST_SHAPE and modality.kind == "image":
        return Decoder(latent_dim, width)
    check_spec(modality)
    if modality.kind == "attributes":
        return AttributeDecoder(latent_dim, modality.shape[0], width)
    return Decoder(latent_dim, width, modality.shape[0], modality.shape[1])
