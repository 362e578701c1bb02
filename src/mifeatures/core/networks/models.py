"""The article's four encoders (cases a–d) and the three DeepInfoMax critics.

Every encoder maps a (B, 1, 96, 96) grayscale batch to 32 non-negative feature maps
M of shape (B, 32, S, S); only S differs between cases. There is no global feature
vector: the article's "global" critic looks at M itself.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mifeatures.core.networks.shapes import INPUT_SIZE, MAP_SIZES, N_MAPS, Critics, global_conv_size


class _FourLayerEncoder(nn.Module):
    """Four 3×3, stride-1 layers of 32 channels; ReLU after each, BatchNorm after layers 2–4."""

    output_size: int

    def __init__(self, layers: tuple[type[nn.Module], ...], padding: int = 0):
        super().__init__()
        self.c0 = layers[0](1, N_MAPS, kernel_size=3, stride=1, padding=padding)
        self.c1 = layers[1](N_MAPS, N_MAPS, kernel_size=3, stride=1, padding=padding)
        self.c2 = layers[2](N_MAPS, N_MAPS, kernel_size=3, stride=1, padding=padding)
        self.c3 = layers[3](N_MAPS, N_MAPS, kernel_size=3, stride=1, padding=padding)
        self.b1 = nn.BatchNorm2d(N_MAPS)
        self.b2 = nn.BatchNorm2d(N_MAPS)
        self.b3 = nn.BatchNorm2d(N_MAPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1:] != (1, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(
                f"{type(self).__name__} expects input (B, 1, {INPUT_SIZE}, {INPUT_SIZE}), "
                f"got {tuple(x.shape)}"
            )
        m = F.relu(self.c0(x))
        m = F.relu(self.b1(self.c1(m)))
        m = F.relu(self.b2(self.c2(m)))
        m = F.relu(self.b3(self.c3(m)))
        expected = (x.shape[0], N_MAPS, self.output_size, self.output_size)
        if m.shape != expected:
            raise RuntimeError(f"{type(self).__name__} produced {tuple(m.shape)}, expected {expected}")
        return m


class EncoderA(_FourLayerEncoder):
    """Case a: four unpadded convolutions, 96 → 94 → 92 → 90 → 88."""

    output_size = MAP_SIZES["a"]

    def __init__(self):
        super().__init__((nn.Conv2d,) * 4)


class EncoderB(_FourLayerEncoder):
    """Case b: four unpadded transposed convolutions, 96 → 98 → 100 → 102 → 104."""

    output_size = MAP_SIZES["b"]

    def __init__(self):
        super().__init__((nn.ConvTranspose2d,) * 4)


class EncoderC(_FourLayerEncoder):
    """Case c: four convolutions with padding 1, 96 → 96 throughout."""

    output_size = MAP_SIZES["c"]

    def __init__(self):
        super().__init__((nn.Conv2d,) * 4, padding=1)


class EncoderD(_FourLayerEncoder):
    """Case d: two transposed then two plain convolutions, 96 → 98 → 100 → 98 → 96."""

    output_size = MAP_SIZES["d"]

    def __init__(self):
        super().__init__((nn.ConvTranspose2d, nn.ConvTranspose2d, nn.Conv2d, nn.Conv2d))


ENCODERS: dict[str, type[_FourLayerEncoder]] = {
    "a": EncoderA,
    "b": EncoderB,
    "c": EncoderC,
    "d": EncoderD,
}


def _encoder_class(case: str) -> type[_FourLayerEncoder]:
    if case not in ENCODERS:
        raise ValueError(f"unknown case {case!r}; expected one of {', '.join(ENCODERS)}")
    return ENCODERS[case]


def build_encoder(case: str) -> _FourLayerEncoder:
    """Return a freshly initialised encoder for ``case`` (one of ``ENCODERS``)."""
    return _encoder_class(case)()


class LocalCritic(nn.Module):
    """Scores every pixel of concat(M, image): 1×1 convolutions 33 → C → C → 1 (C = critics.channels, 64 in the
    article's code)."""

    def __init__(self, critics: Critics):
        super().__init__()
        self.c0 = nn.Conv2d(N_MAPS + 1, critics.channels, kernel_size=1)
        self.c1 = nn.Conv2d(critics.channels, critics.channels, kernel_size=1)
        self.c2 = nn.Conv2d(critics.channels, 1, kernel_size=1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.c0(y))  # (B, C, S, S)
        h = F.relu(self.c1(h))  # (B, C, S, S)
        return self.c2(h)  # (B, 1, S, S)


class GlobalCritic(nn.Module):
    """One score per concat(M, image): two unpadded 3×3 convolutions of C channels, then an MLP U → U → 1
    (C, U = critics.channels, critics.units: 64 and 256 in the article's code).

    The first Linear sees all C·(S−4)² conv outputs, so its size follows the map size
    (≈139 M weights for S = 96 at the article's widths); that is how the article's code had it.
    """

    def __init__(self, map_size: int, critics: Critics):
        super().__init__()
        conv_size = global_conv_size(map_size)
        self.c0 = nn.Conv2d(N_MAPS + 1, critics.channels, kernel_size=3)
        self.c1 = nn.Conv2d(critics.channels, critics.channels, kernel_size=3)
        self.l0 = nn.Linear(critics.channels * conv_size * conv_size, critics.units)
        self.l1 = nn.Linear(critics.units, critics.units)
        self.l2 = nn.Linear(critics.units, 1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.c0(y))  # (B, C, S-2, S-2)
        h = self.c1(h)  # (B, C, S-4, S-4)
        h = F.relu(self.l0(h.flatten(1)))  # (B, U)
        h = F.relu(self.l1(h))  # (B, U)
        return self.l2(h)  # (B, 1)


class PriorCritic(nn.Module):
    """Per-pixel logit that a 32-vector came from the uniform prior: 1×1 convs 32 → C → C → 1."""

    def __init__(self, critics: Critics):
        super().__init__()
        self.c0 = nn.Conv2d(N_MAPS, critics.channels, kernel_size=1)
        self.c1 = nn.Conv2d(critics.channels, critics.channels, kernel_size=1)
        self.c2 = nn.Conv2d(critics.channels, 1, kernel_size=1)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.c0(m))  # (B, C, S, S)
        h = F.relu(self.c1(h))  # (B, C, S, S)
        return self.c2(h)  # (B, 1, S, S) logits; sigmoid lives in the loss
