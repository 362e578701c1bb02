"""The DeepInfoMax loss on small crops of real encoder maps: term values, negatives, gradients, seeding."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch.nn import functional as F

from mifeatures.data import make_sample
from mifeatures.grayscale import to_grayscale
from mifeatures.models import build_encoder
from mifeatures.objective import DeepInfoMaxLoss, LossWeights

S = 12  # map side used throughout: a centre crop of the 96×96 maps keeps the critics small
CROP = slice(42, 42 + S)
LOG2 = math.log(2.0)


@pytest.fixture(scope="module")
def images96() -> torch.Tensor:
    """Three real grayscale photo crops, (3, 1, 96, 96) float32."""
    return torch.from_numpy(to_grayscale(make_sample(3, 2))).unsqueeze(1)


@pytest.fixture(scope="module")
def data(images96) -> tuple[torch.Tensor, torch.Tensor]:
    """(maps, images): centre 12×12 crops of a seeded case-c encoder's maps and of the same images."""
    torch.manual_seed(0)
    encoder = build_encoder("c")
    with torch.no_grad():
        maps = encoder(images96)[..., CROP, CROP].contiguous()
    images = images96[..., CROP, CROP].contiguous()
    assert maps.shape == (3, 32, S, S) and images.shape == (3, 1, S, S)
    assert not torch.equal(maps[0], maps[1]) and not torch.equal(maps[1], maps[2])
    return maps, images


def make_loss(weights: LossWeights = LossWeights(), seed: int = 0) -> DeepInfoMaxLoss:
    """A freshly seeded loss module for 12×12 maps."""
    torch.manual_seed(seed)
    return DeepInfoMaxLoss(map_size=S, weights=weights)


def zero_last_layers(loss: DeepInfoMaxLoss) -> None:
    """Zero the weights and bias of each critic's last layer, so every score is exactly 0."""
    with torch.no_grad():
        for layer in (loss.local_critic.c2, loss.global_critic.l2, loss.prior_critic.c2):
            layer.weight.zero_()
            layer.bias.zero_()


def jsd(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """−E_P[−softplus(−s)] + E_N[softplus(s)]: the JSD loss written out independently."""
    return -(-F.softplus(-positive)).mean() + F.softplus(negative).mean()


@pytest.mark.parametrize(
    "weights", [LossWeights(), LossWeights(0.3, 0.5, 0.7), LossWeights(1.0, 2.0, 0.25)], ids=str
)
def test_zero_scores_give_two_log_two(data, weights):
    """With all scores 0, each term is 2·log 2 times its weight and the total (α+β+γ)·2·log 2."""
    maps, images = data
    loss = make_loss(weights)
    zero_last_layers(loss)
    with torch.no_grad():
        out = loss(maps, images)
    assert set(out) == {"loss", "local", "global", "prior"}
    assert float(out["global"]) == pytest.approx(weights.alpha * 2 * LOG2, rel=1e-6)
    assert float(out["local"]) == pytest.approx(weights.beta * 2 * LOG2, rel=1e-6)
    assert float(out["prior"]) == pytest.approx(weights.gamma * 2 * LOG2, rel=1e-6)
    total = (weights.alpha + weights.beta + weights.gamma) * 2 * LOG2
    assert float(out["loss"]) == pytest.approx(total, rel=1e-6)


def test_default_weights_are_the_articles():
    """The default weights are α = 0.1, β = 0.1, γ = 0.8."""
    assert (LossWeights().alpha, LossWeights().beta, LossWeights().gamma) == (0.1, 0.1, 0.8)


def test_prior_only_weights(data):
    """LossWeights(0, 0, 1) leaves only the prior term, which matches an independent recomputation."""
    maps, images = data
    loss = make_loss(LossWeights(0.0, 0.0, 1.0))
    with torch.no_grad():
        out = loss(maps, images, generator=torch.Generator().manual_seed(5))
        prior_sample = torch.rand(maps.shape, generator=torch.Generator().manual_seed(5))
        expected = F.softplus(-loss.prior_critic(prior_sample)).mean() + F.softplus(loss.prior_critic(maps)).mean()
    assert float(out["local"]) == 0.0
    assert float(out["global"]) == 0.0
    assert float(out["prior"]) > 0.0
    assert torch.allclose(out["prior"], expected, rtol=1e-6, atol=0)
    assert float(out["loss"]) == float(out["prior"])


def test_identical_maps_make_negatives_equal_positives(data):
    """If every sample has the same maps, negatives equal positives and each term is w·(E sp(s) + E sp(−s))."""
    maps, images = data
    same = maps[:1].expand(3, -1, -1, -1).contiguous()
    weights = LossWeights(0.3, 0.6, 0.9)
    loss = make_loss(weights, seed=1)
    with torch.no_grad():
        out = loss(same, images)
        pairs = torch.cat([same, images], dim=1)
        s_local = loss.local_critic(pairs)
        s_global = loss.global_critic(pairs)
    expected_local = weights.beta * (F.softplus(s_local).mean() + F.softplus(-s_local).mean())
    expected_global = weights.alpha * (F.softplus(s_global).mean() + F.softplus(-s_global).mean())
    assert torch.allclose(out["local"], expected_local, rtol=1e-6, atol=0)
    assert torch.allclose(out["global"], expected_global, rtol=1e-6, atol=0)
    # with distinct maps the same formula on the positives no longer holds
    with torch.no_grad():
        distinct = loss(maps, images)
        s_pos = loss.local_critic(torch.cat([maps, images], dim=1))
    wrong = weights.beta * (F.softplus(s_pos).mean() + F.softplus(-s_pos).mean())
    assert not torch.allclose(distinct["local"], wrong, rtol=1e-4, atol=0)


@pytest.mark.parametrize("batch", [2, 3])
def test_negatives_pair_image_i_with_maps_of_i_plus_one(data, batch):
    """Local and global terms equal the JSD with negatives (M[i+1 mod B], image i), computed independently."""
    maps, images = data[0][:batch], data[1][:batch]
    weights = LossWeights(0.4, 0.7, 0.2)
    loss = make_loss(weights, seed=2)
    with torch.no_grad():
        out = loss(maps, images)
        positive = torch.cat([maps, images], dim=1)
        negative = torch.cat([torch.roll(maps, shifts=-1, dims=0), images], dim=1)
        expected_local = weights.beta * jsd(loss.local_critic(positive), loss.local_critic(negative))
        expected_global = weights.alpha * jsd(loss.global_critic(positive), loss.global_critic(negative))
    assert torch.allclose(out["local"], expected_local, rtol=1e-6, atol=0)
    assert torch.allclose(out["global"], expected_global, rtol=1e-6, atol=0)
    assert torch.allclose(out["loss"], out["local"] + out["global"] + out["prior"], rtol=1e-6, atol=0)


def test_negatives_roll_direction(data):
    """With B = 3 the negatives use M[i+1], not M[i−1]: the other direction gives another local term."""
    maps, images = data
    weights = LossWeights(0.0, 1.0, 0.0)
    loss = make_loss(weights, seed=3)
    with torch.no_grad():
        out = loss(maps, images)
        positive = loss.local_critic(torch.cat([maps, images], dim=1))
        forward = loss.local_critic(torch.cat([torch.roll(maps, -1, 0), images], dim=1))
        backward = loss.local_critic(torch.cat([torch.roll(maps, 1, 0), images], dim=1))
    assert torch.allclose(out["local"], jsd(positive, forward), rtol=1e-6, atol=0)
    assert not torch.allclose(out["local"], jsd(positive, backward), rtol=1e-5, atol=0)


def test_swapping_samples_changes_local_term(data):
    """Swapping which image goes with which maps changes the local term; identical maps differ again."""
    maps, images = data[0][:2], data[1][:2]
    loss = make_loss(LossWeights(0.0, 1.0, 0.0), seed=4)
    with torch.no_grad():
        original = loss(maps, images)["local"]
        swapped = loss(maps.flip(0), images)["local"]
        identical = loss(maps[:1].expand(2, -1, -1, -1), images)["local"]
    assert not torch.allclose(original, swapped, rtol=1e-5, atol=0)
    assert not torch.allclose(original, identical, rtol=1e-5, atol=0)


def test_batch_of_one_raises(data):
    """A batch of 1 has no negative sample: ValueError."""
    maps, images = data
    with pytest.raises(ValueError, match="needs a batch of at least 2"):
        make_loss()(maps[:1], images[:1])


def test_image_size_mismatch_raises(data, images96):
    """Images of another spatial size than the maps raise ValueError naming both sizes."""
    maps, _ = data
    images = images96[..., :13, :13]
    with pytest.raises(ValueError, match=re.escape("image size (13, 13) differs from map size (12, 12)")):
        make_loss()(maps, images)


def test_backward_reaches_encoder_and_all_critics(images96):
    """loss.backward() gives non-zero gradients to the encoder and every parameter of the three critics."""
    torch.manual_seed(7)
    encoder = build_encoder("c")
    loss = DeepInfoMaxLoss(map_size=S)
    maps = encoder(images96[:2])[..., CROP, CROP]
    out = loss(maps, images96[:2, :, CROP, CROP], generator=torch.Generator().manual_seed(0))
    out["loss"].backward()
    for critic in (loss.local_critic, loss.global_critic, loss.prior_critic):
        for name, parameter in critic.named_parameters():
            assert parameter.grad is not None, name
            assert parameter.grad.abs().sum() > 0, name
    # conv biases before a BatchNorm have a zero gradient by construction, so check the rest
    for name, parameter in encoder.named_parameters():
        if name in {"c1.bias", "c2.bias", "c3.bias"}:
            continue
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_generator_makes_loss_repeatable(data):
    """Generators seeded alike give identical terms; another seed changes only the prior term."""
    maps, images = data
    loss = make_loss(seed=5)
    with torch.no_grad():
        first = loss(maps, images, generator=torch.Generator().manual_seed(11))
        second = loss(maps, images, generator=torch.Generator().manual_seed(11))
        other = loss(maps, images, generator=torch.Generator().manual_seed(12))
    for key in ("loss", "local", "global", "prior"):
        assert torch.equal(first[key], second[key]), key
    assert torch.equal(first["local"], other["local"])
    assert torch.equal(first["global"], other["global"])
    assert not torch.equal(first["prior"], other["prior"])
