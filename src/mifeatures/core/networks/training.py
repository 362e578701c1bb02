"""Training: fit one encoder and its critics with the DeepInfoMax objective.

The training loop knows nothing of the case: it gets an encoder, the objective holding
the critics, batches already on the device and optimisers. Every random draw comes from
seeded generators, and their states are saved with the weights every few epochs
(``mifeatures.core.networks.resume``), so a killed run resumes to the same bytes as an uninterrupted one. The loop
never waits for the device within an epoch: the loss terms are read back, and checked, once per epoch.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from mifeatures.core.data.images import load_images
from mifeatures.core.io import atomic_write, discard_stale_temporaries
from mifeatures.core.networks.graphed import StaticStep, capturable_adam, optimise
from mifeatures.core.networks.models import build_encoder
from mifeatures.core.networks.shapes import INPUT_SIZE, Critics, map_size
from mifeatures.core.networks.objective import DeepInfoMaxLoss, LossWeights
from mifeatures.core.networks.resume import ResumeState, fingerprint
from mifeatures.core.networks.runtime import PRECISIONS, Runtime, resolve_device, set_up

LOSS_COLUMNS = ["epoch", "step", "loss", "local", "global", "prior"]
LOSS_TERMS = LOSS_COLUMNS[2:]
# Read back and checked with the logged terms in adversarial-prior mode, but not logged: the columns stay.
DISCRIMINATOR_TERM = "discriminator"

# A state holds the weights and both Adam moments: 1.4–2.0 GB at the article's sizes, so it
# is not written after every epoch. How often never changes the numbers, only the work lost.
CHECKPOINT_EVERY = 5


# A person watching a build sees each training job move at least this often (its progress file).
PROGRESS_EVERY_S = 2.0


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stops and writes no output."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run: params.yaml's train section with the case's overrides, the
    run's seed, and its protocol's prior (``Protocol.adversarial_prior``). No defaults: params.yaml owns them."""

    epochs: int
    batch_size: int
    lr: float
    seed: int
    alpha: float
    beta: float
    gamma: float
    device: str
    precision: str
    adversarial_prior: bool  # the official DIM code's prior game; False is the article's one loss

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"train.epochs must be ≥ 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError("train.batch_size must be ≥ 2 (negatives pair images within a batch), "
                             f"got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be fp32, tf32 or bf16, got {self.precision!r}")


def seed_everything(seed: int) -> None:
    """Seed torch and numpy, so a config always gives the same run (``runtime.set_up`` makes the kernels
    deterministic)."""
    torch.manual_seed(seed)
    np.random.seed(seed)


def fresh_models(case: str, config: TrainConfig, critics: Critics) -> tuple[torch.nn.Module, DeepInfoMaxLoss]:
    """A run's initial encoder and critics of ``critics``' widths, drawn from torch's generator seeded with the run's
    seed."""
    seed_everything(config.seed)
    encoder = build_encoder(case)
    objective = DeepInfoMaxLoss(map_size(case), LossWeights(config.alpha, config.beta, config.gamma),
                                critics, adversarial_prior=config.adversarial_prior)
    return encoder, objective


def adam(parameters, lr: float, device: torch.device, fused_on_cpu: bool = False,
         cuda_graph: bool = False) -> torch.optim.Adam:
    """A run's optimiser. Fused Adam is one kernel per step on a GPU; on a CPU torch's default keeps the
    numbers of earlier runs, and the fused kernel (train.fused_adam) is faster but changes their last bits.
    A CUDA graph replays Adam's update only with its step counts on the GPU (``capturable_adam``)."""
    if cuda_graph and device.type == "cuda":
        return capturable_adam(parameters, lr)
    return torch.optim.Adam(parameters, lr=lr, fused=True if device.type == "cuda" or fused_on_cpu else None)


def write_run(case: str, config: TrainConfig, state_dict: dict, losses: pd.DataFrame, encoder_out: str,
              loss_out: str) -> None:
    """A run's outputs: the encoder checkpoint (its case, config and weights) and the loss log."""
    with atomic_write(encoder_out) as handle:
        torch.save({"case": case, "config": asdict(config), "state_dict": state_dict}, handle)
    with atomic_write(loss_out, "w") as handle:
        losses.to_csv(handle, index=False)


class Batches:
    """Reshuffled batches of (96×96 encoder input, image at map size), cut from tensors moved once to
    ``device``; a last short batch is dropped.

    The order comes from a CPU generator with exactly the draws DataLoader(shuffle=True,
    drop_last=True) made, so runs keep the order, and the generator state, they had with it.
    """

    def __init__(self, encoder_images: np.ndarray, critic_images: np.ndarray, batch_size: int, seed: int,
                 device: torch.device = torch.device("cpu")):
        if len(encoder_images) != len(critic_images):
            raise ValueError(f"{len(encoder_images)} encoder images but {len(critic_images)} critic images")
        if len(encoder_images) < batch_size:
            raise ValueError(f"train.batch_size {batch_size} exceeds the {len(encoder_images)} images available")
        # float32, as the article's networks took the float64 images.
        self.inputs = torch.as_tensor(encoder_images, dtype=torch.float32).unsqueeze(1).to(device)
        self.images = torch.as_tensor(critic_images, dtype=torch.float32).unsqueeze(1).to(device)
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.inputs) // self.batch_size

    def __iter__(self):
        order = self._shuffle().to(self.inputs.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start:start + self.batch_size]
            yield self.inputs.index_select(0, index), self.images.index_select(0, index)

    def _shuffle(self) -> torch.Tensor:
        """One epoch's permutation, with every draw DataLoader made from its generator, in its order:
        its iterator's worker base seed, then RandomSampler's permutation and, once that ran out, a
        second one for the (empty) remainder."""
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        order = torch.randperm(len(self.inputs), generator=self.generator)
        torch.randperm(len(self.inputs), generator=self.generator)
        return order


class ProgressFile:
    """The training bar's line (steps done, rate, time left, last epoch's loss), rewritten atomically into
    ``path`` at most every PROGRESS_EVERY_S and at each epoch's end: one small file per running job, which
    a terminal can watch while the bar itself goes to the job's log."""

    def __init__(self, path: str | os.PathLike | None, bar: tqdm):
        self.path, self.bar, self.written = (Path(path) if path else None), bar, -math.inf
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def update(self, force: bool = False) -> None:
        if self.path is not None and (force or time.monotonic() - self.written >= PROGRESS_EVERY_S):
            with atomic_write(self.path, "w") as handle:
                handle.write(tqdm.format_meter(**self.bar.format_dict) + "\n")
            self.written = time.monotonic()


def train(
    encoder: torch.nn.Module,
    objective: DeepInfoMaxLoss,
    batches: Batches,
    optimizers: list[torch.optim.Optimizer],
    epochs: int,
    device: torch.device,
    prior_generator: torch.Generator,
    description: str = "train",
    resume: ResumeState | None = None,
    checkpoint_every: int = CHECKPOINT_EVERY,
    autocast: contextlib.AbstractContextManager | None = None,
    progress: str | os.PathLike | None = None,
    cuda_graph: bool = False,
) -> pd.DataFrame:
    """Run ``epochs`` passes; return one row per step (counted over all epochs) with the loss and its terms.

    Every optimiser steps on the same loss, as in the article's code (encoder and critics
    both minimise it; the prior term is not played adversarially).

    With ``objective.adversarial_prior`` the prior is played as in the official DIM code, in two
    parts from one forward pass per step: the encoder and the local and global critics step on
    local + global + γ·mean softplus(−D(M)) (the encoder's non-saturating prior term), while the
    prior discriminator D steps on its own loss, mean softplus(−D(P)) + mean softplus(D(M.detach())),
    on the same prior draw. Neither loss sends gradients to the other side's parameters, so the
    optimisers (Adam, per parameter) can stay as they are. The log keeps its columns: "prior" is
    then the encoder's non-saturating term and "loss" what the encoder minimised (local + global +
    prior); the discriminator's loss is checked for NaN with the others but not logged.

    With ``resume``, training
    continues from its last saved epoch and saves a new state every ``checkpoint_every``
    epochs, except after the last. A NaN or infinite term is found when the epoch's terms are
    read back, after the optimisers stepped on the rest of that epoch; it stops the run, naming
    the epoch and the first bad step, before any state or output is written. With ``progress``, a
    ``ProgressFile`` there shows how far the run is. With ``cuda_graph``, each step runs on fixed buffers
    (``mifeatures.core.networks.graphed.StaticStep``), which CUDA captures once and replays.
    """
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be ≥ 1, got {checkpoint_every}")
    encoder.to(device).train()
    objective.to(device).train()
    autocast = autocast or contextlib.nullcontext()  # the job's Runtime.autocast()
    state = {"encoder": encoder, "objective": objective, "optimizers": optimizers,
             "loader": batches.generator, "prior": prior_generator}
    adversarial = objective.adversarial_prior
    checked = LOSS_TERMS + [DISCRIMINATOR_TERM] if adversarial else LOSS_TERMS
    first_epoch, rows = resume.load(state) if resume else (0, [])
    # Built after the resume state is loaded: a graph captures the tensors it will replay.
    static_step = StaticStep(encoder, objective, optimizers, checked, device, autocast) if cuda_graph else None
    with tqdm(total=epochs * len(batches), initial=len(rows), desc=description, mininterval=5,
              unit="step") as bar:
        shown = ProgressFile(progress, bar)
        shown.update(force=True)
        for epoch in range(first_epoch, epochs):
            epoch_terms = torch.empty(len(batches), len(checked), device=device)
            for step, (inputs, images) in enumerate(batches):
                if static_step is not None:
                    epoch_terms[step] = static_step(inputs, images, prior_generator)
                else:
                    for optimizer in optimizers:
                        optimizer.zero_grad()
                    epoch_terms[step] = optimise(encoder, objective, optimizers, checked, autocast, inputs, images,
                                                 prior_generator)
                bar.update()
                shown.update()
            for step, values in enumerate(epoch_terms.tolist(), start=len(rows)):
                if not all(map(math.isfinite, values)):
                    raise NonFiniteLossError(
                        f"{description}: non-finite loss terms {dict(zip(checked, values))} at epoch "
                        f"{epoch}, step {step}; no output written (check the input images and train.lr)"
                    )
                rows.append([epoch, step] + values[:len(LOSS_TERMS)])
            bar.set_postfix(epoch=epoch, loss=f"{rows[-1][2]:.4f}")
            shown.update(force=True)
            if resume and (epoch + 1) % checkpoint_every == 0 and epoch + 1 < epochs:
                resume.save(state, epoch + 1, rows)
    return pd.DataFrame(rows, columns=LOSS_COLUMNS)


def run(case: str, encoder_images_path: str, critic_images_path: str, config: TrainConfig,
        encoder_out: str, loss_out: str, runtime: Runtime | None = None, resume_path: str | None = None,
        checkpoint_every: int = CHECKPOINT_EVERY, discard_resume: bool = True, code: str = "",
        progress: str | None = None, fused_adam: bool = False, cuda_graph: bool = False, *,
        critics: Critics) -> pd.DataFrame:
    """Train case ``case``, with critics of ``critics``' widths, from the grayscale arrays and write the encoder
    checkpoint and loss log. The checkpoint holds the encoder, its case and ``config``; the critics are not
    kept.

    ``runtime`` is the job's torch set-up (``runtime.set_up``); without one, torch is set up for
    ``config``'s device and precision on one thread. With
    ``resume_path``, state is saved every ``checkpoint_every`` epochs, and a run killed after
    one continues from there when started again; the state is removed once the outputs are
    written, or left to a caller with more to write (``discard_resume=False``), so that
    nothing that can still fail runs after it is gone. ``code`` is the digest of the code that runs, part
    of the resume state's fingerprint. ``fused_adam``: Adam's fused kernel on a CPU too (``adam``).
    ``cuda_graph``: each step on fixed buffers, a CUDA graph replayed on a GPU (``train``).
    """
    runtime = runtime or set_up(config.device, 1, config.precision)
    if (runtime.device, runtime.precision) != (resolve_device(config.device), config.precision):
        raise ValueError(f"the runtime ({runtime.device}, {runtime.precision}) is not the config's "
                         f"({config.device}, {config.precision})")
    size = map_size(case)
    encoder_images = load_images(encoder_images_path, INPUT_SIZE)
    critic_images = load_images(critic_images_path, size)
    device = runtime.device
    encoder, objective = fresh_models(case, config, critics)
    optimizers = [adam(module.parameters(), config.lr, device, fused_adam, cuda_graph)
                  for module in (encoder, objective)]
    batches = Batches(encoder_images, critic_images, config.batch_size, config.seed, device)
    prior_generator = torch.Generator(device=device).manual_seed(config.seed)
    resume = (ResumeState(resume_path, fingerprint(case, config, device, code, encoder_images, critic_images,
                                                   fused_adam=fused_adam, cuda_graph=cuda_graph, critics=critics))
              if resume_path else None)
    if resume_path:  # a save killed mid-way left its temporary file (as large as a state)
        discard_stale_temporaries(resume_path)
    losses = train(encoder, objective, batches, optimizers, config.epochs, device, prior_generator,
                   description=f"train case {case}", resume=resume, checkpoint_every=checkpoint_every,
                   autocast=runtime.autocast(), progress=progress, cuda_graph=cuda_graph)
    write_run(case, config, encoder.cpu().state_dict(), losses, encoder_out, loss_out)
    if resume and discard_resume:
        resume.discard()
    return losses
