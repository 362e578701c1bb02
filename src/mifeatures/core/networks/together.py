"""Many seeds of one case trained in one process, as one batched computation (``torch.func.vmap``).

Each seed keeps what its solo run (``training.run``) has: its initial weights, its batches, its prior
draws and its Adam state; only the arithmetic is shared, so a GPU that batch 10 leaves idle runs S seeds'
steps at once. The batched convolutions round differently from the solo ones, so a seed's numbers equal
its solo run's to a tolerance, not bit for bit (tests/test_together.py states it), and do not depend on
the seeds it trained with.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from torch.func import functional_call, stack_module_state, vmap
from tqdm import tqdm

from mifeatures.core.networks.shapes import N_MAPS, Critics, map_size
from mifeatures.core.networks.runtime import Runtime
from mifeatures.core.networks.training import (DISCRIMINATOR_TERM, LOSS_COLUMNS, LOSS_TERMS, Batches,
                                               NonFiniteLossError, TrainConfig, adam, fresh_models)


def _stacked(modules: list[torch.nn.Module]) -> tuple[torch.nn.Module, dict, dict]:
    """(a weightless copy of the first module to call, stacked parameters, stacked buffers)."""
    params, buffers = stack_module_state(modules)
    return copy.deepcopy(modules[0]).to("meta"), params, buffers


def check_configs(configs: list[TrainConfig]) -> None:
    """Raise ValueError unless ``configs`` can be trained together: they differ in their seed only, each
    seed once, and are not bf16."""
    seeds = [config.seed for config in configs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds trained together must differ: each seed once, got {seeds}")
    first = configs[0]
    if any(replace(config, seed=first.seed) != first for config in configs):
        raise ValueError("seeds trained together share every other setting")
    if first.precision == "bf16":
        raise ValueError("bf16 is trained one seed at a time: its prior draws follow the maps' dtype")


def train_together(case: str, encoder_images: np.ndarray, critic_images: np.ndarray, configs: list[TrainConfig],
                   runtime: Runtime, fused_adam: bool = False, *,
                   critics: Critics) -> list[tuple[dict[str, torch.Tensor], pd.DataFrame]]:
    """Train ``case`` once per config, all at once; return each run's (encoder state dict, loss log), in the
    configs' order. The configs differ in their seed only (``check_configs``)."""
    check_configs(configs)
    seeds = [config.seed for config in configs]
    first = configs[0]
    device, size = runtime.device, map_size(case)
    encoders, objectives, batches, priors = [], [], [], []
    for config in configs:  # each seed's weights and draws, in its solo run's order
        seed_encoder, seed_objective = fresh_models(case, config, critics)
        encoders.append(seed_encoder.to(device).train())
        objectives.append(seed_objective.to(device).train())
        batches.append(Batches(encoder_images, critic_images, config.batch_size, config.seed, device))
        priors.append(torch.Generator(device=device).manual_seed(config.seed))
    encoder, encoder_params, encoder_buffers = _stacked(encoders)
    objective, objective_params, objective_buffers = _stacked(objectives)
    del objectives  # stacked copies now hold the critics' weights (most of a seed's memory); the solo encoders
    # stay, to receive each seed's trained weights at the end
    adversarial = first.adversarial_prior
    checked = LOSS_TERMS + [DISCRIMINATOR_TERM] if adversarial else LOSS_TERMS

    def terms_of_one_seed(encoder_params, encoder_buffers, objective_params, objective_buffers, inputs, images,
                          prior_sample):
        maps = functional_call(encoder, (encoder_params, encoder_buffers), (inputs,))
        return functional_call(objective, (objective_params, objective_buffers), (maps, images),
                               {"prior_sample": prior_sample})

    terms_of_every_seed = vmap(terms_of_one_seed)
    optimizers = [adam(params.values(), first.lr, device, fused_adam) for params in (encoder_params, objective_params)]
    steps = len(batches[0])
    rows: list[list[list[float]]] = [[] for _ in configs]
    with tqdm(total=first.epochs * steps, desc=f"train case {case}, seeds {seeds}", mininterval=5,
              unit="step") as bar:
        for epoch in range(first.epochs):
            epoch_terms = torch.empty(len(configs), steps, len(checked), device=device)
            for step, pairs in enumerate(zip(*batches)):
                inputs = torch.stack([seed_inputs for seed_inputs, _ in pairs])
                images = torch.stack([seed_images for _, seed_images in pairs])
                map_shape = (inputs.shape[1], N_MAPS, size, size)
                # One draw per seed and step, shaped like its maps, from its own generator: its solo draws.
                prior = torch.stack([torch.rand(map_shape, generator=generator, device=device)
                                     for generator in priors])
                for optimizer in optimizers:
                    optimizer.zero_grad()
                terms = terms_of_every_seed(encoder_params, encoder_buffers, objective_params, objective_buffers,
                                            inputs, images, prior)
                epoch_terms[:, step] = torch.stack([terms[name].detach() for name in checked], dim=1)
                # Each seed's parameters get the gradient of its own loss only: the sum has no cross terms.
                losses = [terms["loss"].sum()] + ([terms[DISCRIMINATOR_TERM].sum()] if adversarial else [])
                torch.autograd.backward(losses)
                for optimizer in optimizers:
                    optimizer.step()
                bar.update()
            for seed_rows, seed_terms, seed in zip(rows, epoch_terms.tolist(), seeds):
                for step, values in enumerate(seed_terms, start=len(seed_rows)):
                    if not all(map(math.isfinite, values)):
                        raise NonFiniteLossError(f"seed {seed}: non-finite loss terms {dict(zip(checked, values))} "
                                                 f"at epoch {epoch}, step {step}; no output written")
                    seed_rows.append([epoch, step] + values[:len(LOSS_TERMS)])
    results = []
    for index, solo in enumerate(encoders):
        solo.load_state_dict({name: tensor[index] for name, tensor in {**encoder_params, **encoder_buffers}.items()})
        results.append(({name: tensor.detach().cpu() for name, tensor in solo.state_dict().items()},
                        pd.DataFrame(rows[index], columns=LOSS_COLUMNS)))
    return results
