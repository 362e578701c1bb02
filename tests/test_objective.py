"""The DeepInfoMax loss on small crops of real encoder maps: term values, negatives, gradients, seeding."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch.nn import functional as F

from mifeatures.core.data.sample import make_sample
from mifeatures.core.data.images import to_grayscale
from mifeatures.core.networks.models import build_encoder
from mifeatures.core.networks.objective import DeepInfoMaxLoss, LossWeights

from helpers import CRITICS, WEIGHTS

S = 12  # map side used throughout: a centre crop of the 96×96 maps keeps the critics small
CROP = slice(42, 42 + S)
LOG2 = math.log(2.0)


@pytest.fixture(scope="module")
def images96() -> torch.Tensor:
    """Three real grayscale photo crops, (3, 1, 96, 96) float32."""
    return torch.as_tensor(to_grayscale(make_sample(3, 2)), dtype=torch.float32).unsqueeze(1)


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


def make_loss(weights: LossWeights = WEIGHTS, seed: int = 0) -> DeepInfoMaxLoss:
    """A freshly seeded loss module for 12×12 maps."""
    torch.manual_seed(seed)
    return DeepInfoMaxLoss(map_size=S, weights=weights, critics=CRITICS)


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
    "weights", [WEIGHTS, LossWeights(0.3, 0.5, 0.7), LossWeights(1.0, 2.0, 0.25)], ids=str
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


def test_params_yaml_holds_the_articles_weights():
    """The one home of α, β, γ is params.yaml, which holds the article's 0.1, 0.1, 0.8."""
    assert WEIGHTS == LossWeights(0.1, 0.1, 0.8)


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
    loss = DeepInfoMaxLoss(map_size=S, weights=WEIGHTS, critics=CRITICS)
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


# The adversarial prior (opt-in), as the official DIM code plays it: D on detached maps, the encoder
# non-saturating.


def make_adversarial(weights: LossWeights = WEIGHTS, seed: int = 0) -> DeepInfoMaxLoss:
    """A freshly seeded adversarial-prior loss module for 12×12 maps: the same weights as make_loss(seed)."""
    torch.manual_seed(seed)
    return DeepInfoMaxLoss(map_size=S, weights=weights, critics=CRITICS, adversarial_prior=True)


def test_faithful_is_the_default_and_both_modes_share_their_weights():
    """adversarial_prior defaults to False; the flag adds no parameter, so both modes load the same states."""
    assert DeepInfoMaxLoss(map_size=S, weights=WEIGHTS, critics=CRITICS).adversarial_prior is False
    faithful, adversarial = make_loss(seed=6), make_adversarial(seed=6)
    assert faithful.state_dict().keys() == adversarial.state_dict().keys()
    for name, tensor in faithful.state_dict().items():
        assert torch.equal(tensor, adversarial.state_dict()[name]), name


@pytest.mark.parametrize("weights", [WEIGHTS, LossWeights(0.3, 0.5, 0.7)], ids=str)
def test_adversarial_terms_match_independent_formulas(data, weights):
    """prior = γ·E softplus(−D(M)) (= −γ·E log σ(D(M))); discriminator = E softplus(−D(P))
    + E softplus(D(M)), unscaled; local and global are the faithful ones; the prior draw is the faithful
    one (whose prior term is then γ·discriminator)."""
    maps, images = data
    adversarial, faithful = make_adversarial(weights, seed=7), make_loss(weights, seed=7)
    with torch.no_grad():
        out = adversarial(maps, images, generator=torch.Generator().manual_seed(5))
        reference = faithful(maps, images, generator=torch.Generator().manual_seed(5))
        prior_sample = torch.rand(maps.shape, generator=torch.Generator().manual_seed(5))
        d_prior, d_maps = adversarial.prior_critic(prior_sample), adversarial.prior_critic(maps)
    assert set(out) == {"loss", "local", "global", "prior", "discriminator"}
    expected_prior = -weights.gamma * torch.log(torch.sigmoid(d_maps)).mean()
    expected_discriminator = -(torch.log(torch.sigmoid(d_prior)).mean()
                               + torch.log(1 - torch.sigmoid(d_maps)).mean())
    assert torch.allclose(out["prior"], expected_prior, rtol=1e-5, atol=0)
    assert torch.allclose(out["discriminator"], expected_discriminator, rtol=1e-5, atol=0)
    assert torch.equal(out["local"], reference["local"]) and torch.equal(out["global"], reference["global"])
    assert torch.allclose(reference["prior"], weights.gamma * out["discriminator"], rtol=1e-6, atol=0)
    assert torch.allclose(out["loss"], out["local"] + out["global"] + out["prior"], rtol=1e-6, atol=0)


def test_adversarial_zero_scores(data):
    """All scores 0: the encoder's prior term is γ·log 2, the discriminator's loss 2·log 2 for any γ."""
    maps, images = data
    weights = LossWeights(0.3, 0.5, 0.7)
    loss = make_adversarial(weights)
    zero_last_layers(loss)
    with torch.no_grad():
        out = loss(maps, images)
    assert float(out["prior"]) == pytest.approx(weights.gamma * LOG2, rel=1e-6)
    assert float(out["discriminator"]) == pytest.approx(2 * LOG2, rel=1e-6)
    total = (2 * weights.alpha + 2 * weights.beta + weights.gamma) * LOG2
    assert float(out["loss"]) == pytest.approx(total, rel=1e-6)


def adversarial_forward(images96, seed=7):
    """(encoder, loss module, terms) for two real images through a seeded case-c encoder, maps cut to 12²."""
    torch.manual_seed(seed)
    encoder = build_encoder("c")
    loss = DeepInfoMaxLoss(map_size=S, weights=WEIGHTS, critics=CRITICS, adversarial_prior=True)
    maps = encoder(images96[:2])[..., CROP, CROP]
    return encoder, loss, loss(maps, images96[:2, :, CROP, CROP], generator=torch.Generator().manual_seed(0))


def grads(module: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    """{name: .grad} of a module's parameters."""
    return {name: parameter.grad for name, parameter in module.named_parameters()}


def assert_all_nonzero(module: torch.nn.Module, skip=()) -> None:
    """Every parameter of ``module`` (but ``skip``) has a non-zero gradient."""
    for name, grad in grads(module).items():
        if name not in skip:
            assert grad is not None and grad.abs().sum() > 0, name


ENCODER_BN_BIASES = {"c1.bias", "c2.bias", "c3.bias"}  # before a BatchNorm: zero gradient by construction


def test_encoder_loss_sends_no_gradient_to_the_prior_discriminator(images96):
    """Backward of the encoder's side (local + global + its prior term) leaves D's .grad None and reaches the
    encoder and both JSD critics; the prior term alone reaches the encoder, and still not D."""
    encoder, loss, out = adversarial_forward(images96)
    out["loss"].backward()
    assert all(grad is None for grad in grads(loss.prior_critic).values())
    assert_all_nonzero(encoder, skip=ENCODER_BN_BIASES)
    assert_all_nonzero(loss.local_critic)
    assert_all_nonzero(loss.global_critic)

    encoder, loss, out = adversarial_forward(images96)
    out["prior"].backward()
    assert all(grad is None for grad in grads(loss.prior_critic).values())
    assert_all_nonzero(encoder, skip=ENCODER_BN_BIASES)


def test_discriminator_loss_sends_no_gradient_to_the_encoder(images96):
    """Backward of the discriminator's loss reaches every parameter of D and nothing else."""
    encoder, loss, out = adversarial_forward(images96)
    out["discriminator"].backward()
    assert_all_nonzero(loss.prior_critic)
    for module in (encoder, loss.local_critic, loss.global_critic):
        assert all(grad is None for grad in grads(module).values())


def test_one_backward_of_both_losses_gives_each_side_its_own_gradient(images96):
    """torch.autograd.backward([loss, discriminator]), as the training step does, gives every parameter the
    gradient its own side's loss alone gives it, bit for bit."""
    separate = {}
    for name in ("loss", "discriminator"):
        encoder, loss, out = adversarial_forward(images96)
        out[name].backward()
        separate[name] = {**grads(encoder), **{f"objective.{k}": v for k, v in grads(loss).items()}}
    encoder, loss, out = adversarial_forward(images96)
    torch.autograd.backward([out["loss"], out["discriminator"]])
    together = {**grads(encoder), **{f"objective.{k}": v for k, v in grads(loss).items()}}
    for name, grad in together.items():
        own = separate["discriminator" if name.startswith("objective.prior_critic.") else "loss"][name]
        assert grad is not None and torch.equal(grad, own), name


def test_the_game_has_the_right_signs(data, images96):
    """Adam on D alone, fixed maps: D's loss falls step after step and the encoder's prior term rises. Adam on
    the encoder alone, D fixed: the encoder's prior term falls and D's loss rises; D's weights stay put."""
    maps, images = data
    loss = make_adversarial(seed=0)
    optimizer = torch.optim.Adam(loss.prior_critic.parameters(), lr=1e-3)
    discriminator, prior = [], []
    for step in range(6):
        optimizer.zero_grad()
        out = loss(maps, images, generator=torch.Generator().manual_seed(step))
        discriminator.append(out["discriminator"].item())
        prior.append(out["prior"].item())
        out["discriminator"].backward()
        optimizer.step()
    assert all(later < earlier for earlier, later in zip(discriminator, discriminator[1:])), discriminator
    assert all(later > earlier for earlier, later in zip(prior, prior[1:])), prior

    loss = make_adversarial(seed=0)
    before = {name: tensor.clone() for name, tensor in loss.prior_critic.state_dict().items()}
    torch.manual_seed(1)
    encoder = build_encoder("c")
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-3)
    discriminator, prior = [], []
    for step in range(6):
        optimizer.zero_grad()
        out = loss(encoder(images96)[..., CROP, CROP], images, generator=torch.Generator().manual_seed(step))
        discriminator.append(out["discriminator"].item())
        prior.append(out["prior"].item())
        out["prior"].backward()
        optimizer.step()
    assert all(later < earlier for earlier, later in zip(prior, prior[1:])), prior
    assert discriminator[-1] > discriminator[0], discriminator
    for name, tensor in loss.prior_critic.state_dict().items():
        assert torch.equal(tensor, before[name]), name
