"""Encoders a–d and the three critics: shapes, layer structure and input checks."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from mifeatures.core.data.sample import make_sample
from mifeatures.core.data.images import to_grayscale
from mifeatures.core.networks.models import GlobalCritic, LocalCritic, PriorCritic, build_encoder
from mifeatures.core.networks.shapes import Critics, map_size

from helpers import CRITICS

EXPECTED_SIZE = {"a": 88, "b": 104, "c": 96, "d": 96}
CONV, TCONV = nn.Conv2d, nn.ConvTranspose2d
EXPECTED_LAYERS = {
    "a": (CONV, CONV, CONV, CONV),
    "b": (TCONV, TCONV, TCONV, TCONV),
    "c": (CONV, CONV, CONV, CONV),
    "d": (TCONV, TCONV, CONV, CONV),
}


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    """Two real grayscale photo crops as a float32 (2, 1, 96, 96) tensor."""
    gray = to_grayscale(make_sample(2, 1))
    return torch.as_tensor(gray, dtype=torch.float32).unsqueeze(1)


def conv_layers(encoder: nn.Module) -> list[nn.Module]:
    """The four (transposed) convolutions of an encoder, in forward order."""
    return [encoder.c0, encoder.c1, encoder.c2, encoder.c3]


@pytest.mark.parametrize("case", "abcd")
def test_encoder_output_shape(batch, case):
    """Each case maps (2, 1, 96, 96) to (2, 32, S, S) with S the article's size and map_size(case)."""
    torch.manual_seed(0)
    encoder = build_encoder(case)
    with torch.no_grad():
        maps = encoder(batch)
    size = EXPECTED_SIZE[case]
    assert maps.shape == (2, 32, size, size)
    assert map_size(case) == size


@pytest.mark.parametrize("case", "abcd")
def test_encoder_output_nonnegative(batch, case):
    """Outputs pass through a final ReLU: all ≥ 0, with some strictly positive, in train and eval mode."""
    torch.manual_seed(1)
    encoder = build_encoder(case)
    for mode in (True, False):
        encoder.train(mode)
        with torch.no_grad():
            maps = encoder(batch)
        assert maps.min() >= 0
        assert (maps > 0).any()
        assert (maps == 0).any()  # the ReLU actually clips something


@pytest.mark.parametrize("case", "abcd")
def test_encoder_layer_types(case):
    """Layer types, channels, 3×3 kernels, stride 1 and padding (1 only in case c) per case."""
    layers = conv_layers(build_encoder(case))
    assert tuple(type(layer) for layer in layers) == EXPECTED_LAYERS[case]
    assert [(layer.in_channels, layer.out_channels) for layer in layers] == [(1, 32)] + [(32, 32)] * 3
    padding = (1, 1) if case == "c" else (0, 0)
    for layer in layers:
        assert layer.kernel_size == (3, 3)
        assert layer.stride == (1, 1)
        assert layer.padding == padding


@pytest.mark.parametrize("case", "abcd")
def test_batchnorm_after_layers_two_to_four_only(batch, case):
    """Exactly three BatchNorm2d layers, fed by layers 2–4; layer 1 feeds layer 2 through ReLU only."""
    torch.manual_seed(2)
    encoder = build_encoder(case)
    norms = [m for m in encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 3
    assert all(norm.num_features == 32 for norm in norms)
    seen: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(module, inputs, output):
            seen[name + ".in"] = inputs[0]
            seen[name + ".out"] = output

        return hook

    for name, module in encoder.named_children():
        module.register_forward_hook(keep(name))
    with torch.no_grad():
        encoder(batch)
    assert torch.equal(seen["c1.in"], torch.relu(seen["c0.out"]))  # no BatchNorm after layer 1
    for conv, norm in (("c1", "b1"), ("c2", "b2"), ("c3", "b3")):
        assert torch.equal(seen[f"{norm}.in"], seen[f"{conv}.out"])
    assert torch.equal(seen["c2.in"], torch.relu(seen["b1.out"]))
    assert torch.equal(seen["c3.in"], torch.relu(seen["b2.out"]))
    # and each normalised output is zero-mean per channel in train mode
    for norm in ("b1", "b2", "b3"):
        means = seen[f"{norm}.out"].mean(dim=(0, 2, 3))
        assert torch.allclose(means, torch.zeros(32), atol=1e-4)


@pytest.mark.parametrize(
    "shape",
    [(2, 3, 96, 96), (2, 1, 88, 88), (1, 96, 96), (2, 1, 96, 95)],
)
def test_encoder_rejects_wrong_input_shape(shape):
    """Inputs that are not (B, 1, 96, 96) raise ValueError naming the expected shape and the actual one."""
    encoder = build_encoder("a")
    expected = re.escape(f"EncoderA expects input (B, 1, 96, 96), got {shape}")
    with pytest.raises(ValueError, match=expected):
        encoder(torch.zeros(shape))


def test_unknown_case_raises():
    """Case 'e' raises ValueError listing a, b, c, d, both when building and when asking its size."""
    with pytest.raises(ValueError, match=r"unknown case 'e'; expected one of a, b, c, d"):
        build_encoder("e")
    with pytest.raises(ValueError, match=r"unknown case 'e'; expected one of a, b, c, d"):
        map_size("e")


def test_build_encoder_is_fresh():
    """Two builds are independent modules with different random initial weights."""
    first, second = build_encoder("c"), build_encoder("c")
    assert first is not second
    assert not torch.equal(first.c0.weight, second.c0.weight)


@pytest.fixture(scope="module")
def global_critic_96() -> GlobalCritic:
    """The full-size global critic (≈139 M weights), built once."""
    torch.manual_seed(0)
    return GlobalCritic(96, CRITICS)


def test_global_critic_first_linear_size(global_critic_96):
    """GlobalCritic(96)'s first Linear maps 64·92·92 inputs to 256: 138 674 176 weights."""
    first = global_critic_96.l0
    assert isinstance(first, nn.Linear)
    assert first.in_features == 64 * 92 * 92
    assert first.out_features == 256
    expected_weights = 64 * (96 - 4) * (96 - 4) * 256
    assert expected_weights == 138_674_176
    assert first.weight.numel() == expected_weights


def test_global_critic_output_shape(global_critic_96):
    """GlobalCritic(96) gives one score per sample, (B, 1), for (B, 33, 96, 96) input."""
    torch.manual_seed(3)
    with torch.no_grad():
        scores = global_critic_96(torch.rand(3, 33, 96, 96))
    assert scores.shape == (3, 1)
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("size", [12, 20])
def test_global_critic_small_sizes(size):
    """The first Linear follows the map size: 64·(S−4)² inputs, and output (B, 1)."""
    critic = GlobalCritic(size, CRITICS)
    assert critic.l0.in_features == 64 * (size - 4) ** 2
    with torch.no_grad():
        assert critic(torch.rand(2, 33, size, size)).shape == (2, 1)


def test_global_critic_rejects_other_map_size():
    """A global critic built for S = 12 cannot score 16×16 maps (its Linear size is fixed)."""
    critic = GlobalCritic(12, CRITICS)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        critic(torch.rand(2, 33, 16, 16))


@pytest.mark.parametrize("size", [88, 96, 104])
@pytest.mark.parametrize(("critic", "channels"), [(LocalCritic, 33), (PriorCritic, 32)])
def test_pixelwise_critic_shape(critic, channels, size):
    """Local (maps + image) and prior (maps) critics score every pixel: (B, C, S, S) → (B, 1, S, S)."""
    torch.manual_seed(4)
    with torch.no_grad():
        scores = critic(CRITICS)(torch.rand(2, channels, size, size))
    assert scores.shape == (2, 1, size, size)


def test_the_critics_widths_are_params():
    """train.critic_channels and train.global_units shape every critic (params.yaml holds the article's 64 and 256,
    which the weight count above pins); the first Linear follows both."""
    critics = Critics(8, 16)
    local, prior, global_ = LocalCritic(critics), PriorCritic(critics), GlobalCritic(20, critics)
    assert local.c1.weight.shape[:2] == prior.c1.weight.shape[:2] == global_.c1.weight.shape[:2] == (8, 8)
    assert global_.l0.weight.shape == (16, 8 * 16 * 16) and global_.l1.weight.shape == (16, 16)
    assert global_.l0.weight.numel() == critics.global_weights(20)
    with pytest.raises(ValueError, match="the critics' widths must be ≥ 1, got 0 channels and 16 units"):
        Critics(0, 16)


def test_critic_channel_counts():
    """Local and global critics take 33 channels (maps + image); the prior critic takes the 32 maps."""
    assert LocalCritic(CRITICS).c0.in_channels == 33
    assert GlobalCritic(12, CRITICS).c0.in_channels == 33
    assert PriorCritic(CRITICS).c0.in_channels == 32
    with pytest.raises(RuntimeError):
        PriorCritic(CRITICS)(torch.rand(2, 33, 12, 12))
    with pytest.raises(RuntimeError):
        LocalCritic(CRITICS)(torch.rand(2, 32, 12, 12))


def test_local_critic_is_pixelwise():
    """A 1×1-convolution critic: the score of a pixel depends only on that pixel's 33-vector."""
    torch.manual_seed(6)
    critic = LocalCritic(CRITICS)
    x = torch.rand(1, 33, 10, 10)
    with torch.no_grad():
        full = critic(x)
        single = critic(x[:, :, 4:5, 7:8])
    assert torch.allclose(full[:, :, 4:5, 7:8], single, atol=1e-6)
    assert not np.isclose(float(full[0, 0, 0, 0]), float(full[0, 0, 4, 7]))
