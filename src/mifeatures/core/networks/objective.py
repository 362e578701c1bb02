"""The DeepInfoMax objective as the article's code had it (Hjelm et al. 2018, JSD form).

Both critics compare the feature maps M with the image itself (resized to M's size);
the negative for sample i is M of sample i+1 in the batch paired with image i. The
prior term is written in softplus form: −log σ(x) = softplus(−x), −log(1 − σ(x)) = softplus(x).

By default the prior term is the article's: one loss, minimised by encoder and critics alike.
``adversarial_prior=True`` plays it as the official DIM code (rdevon/DIM, PriorMatching) does:
the prior discriminator D learns to tell uniform samples from detached codes, and the encoder
learns to fool it with the non-saturating GAN loss; local and global critics are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from mifeatures.core.networks.models import GlobalCritic, LocalCritic, PriorCritic
from mifeatures.core.networks.shapes import Critics


@dataclass(frozen=True)
class LossWeights:
    """Weights of the three terms: α global, β local, γ prior (params.yaml's train.alpha, beta and gamma,
    which hold the article's)."""

    alpha: float
    beta: float
    gamma: float


def _jsd_term(scores: torch.Tensor, batch: int) -> torch.Tensor:
    """JSD lower-bound loss from critic scores stacked as [positives; negatives]."""
    positive, negative = scores[:batch], scores[batch:]
    return F.softplus(negative).mean() + F.softplus(-positive).mean()


class DeepInfoMaxLoss(nn.Module):
    """Holds the three critics and returns the loss and its terms for one batch.

    With ``adversarial_prior`` the prior is a game, as in the official DIM code: see ``forward``.
    It changes no weight and no draw, only which loss each side's gradients come from.
    """

    def __init__(self, map_size: int, weights: LossWeights, critics: Critics, adversarial_prior: bool = False):
        super().__init__()
        self.weights = weights
        self.adversarial_prior = adversarial_prior
        self.local_critic = LocalCritic(critics)
        self.global_critic = GlobalCritic(map_size, critics)
        self.prior_critic = PriorCritic(critics)

    def forward(
        self, maps: torch.Tensor, images: torch.Tensor, generator: torch.Generator | None = None,
        prior_sample: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss terms for maps (B, 32, S, S) and images (B, 1, S, S).

        ``generator`` draws the uniform prior samples, so a seeded run is repeatable; either way
        one tensor shaped like the maps is drawn per call, after the critics' terms. A caller that
        draws it itself (seeds trained together, ``mifeatures.core.networks.together``) passes it as ``prior_sample``.

        Faithful (default): {loss, local, global, prior} with
        prior = γ·(mean softplus(−D(P)) + mean softplus(D(M)))
              = −γ·(mean log σ(D(P)) + mean log(1 − σ(D(M)))),
        loss = local + global + prior, one loss for everyone.

        Adversarial: {loss, local, global, prior, discriminator} with
        prior = γ·mean softplus(−D(M)) = −γ·mean log σ(D(M)), the encoder's non-saturating term,
        through a copy of D's weights cut from the graph (no gradient reaches D);
        discriminator = mean softplus(−D(P)) + mean softplus(D(M.detach())), D's own loss, not
        scaled by γ, as in the official code (no gradient reaches the encoder or the other critics);
        loss = local + global + prior, what the encoder and the local and global critics minimise.
        The two graphs share no parameter: ``torch.autograd.backward([loss, discriminator])`` gives
        every parameter the gradient of its own side's loss.
        """
        if maps.shape[0] < 2:
            raise ValueError("DeepInfoMax needs a batch of at least 2: negatives pair each image with the next "
                             "one's maps")
        if images.shape[-2:] != maps.shape[-2:]:
            raise ValueError(f"image size {tuple(images.shape[-2:])} differs from map size {tuple(maps.shape[-2:])}")
        batch = maps.shape[0]
        rolled = torch.cat([maps[1:], maps[:1]])
        pairs = torch.cat([torch.cat([maps, images], dim=1), torch.cat([rolled, images], dim=1)])
        local = self.weights.beta * _jsd_term(self.local_critic(pairs), batch)
        global_ = self.weights.alpha * _jsd_term(self.global_critic(pairs), batch)
        if prior_sample is None:
            prior_sample = torch.rand(maps.shape, generator=generator, device=maps.device, dtype=maps.dtype)
        if self.adversarial_prior:
            prior = self.weights.gamma * F.softplus(-self._prior_scores_for_encoder(maps)).mean()
            discriminator = (F.softplus(-self.prior_critic(prior_sample)).mean()
                             + F.softplus(self.prior_critic(maps.detach())).mean())
            return {"loss": local + global_ + prior, "local": local, "global": global_, "prior": prior,
                    "discriminator": discriminator}
        prior = self.weights.gamma * (
            F.softplus(-self.prior_critic(prior_sample)).mean() + F.softplus(self.prior_critic(maps)).mean()
        )
        return {"loss": local + global_ + prior, "local": local, "global": global_, "prior": prior}

    def _prior_scores_for_encoder(self, maps: torch.Tensor) -> torch.Tensor:
        """D's logits on ``maps`` through detached copies of its weights: gradients reach the maps only."""
        weights = self.prior_critic.state_dict(keep_vars=True)
        frozen = {name: tensor.detach() for name, tensor in weights.items()}
        return functional_call(self.prior_critic, frozen, (maps,))
