"""A training step on fixed buffers, which CUDA captures once as a graph and replays (train.cuda_graph).

At batch 10 a GPU step is mostly kernel launches: replaying the whole step (forward, backward, fused Adam) as
one CUDA graph removes them. A graph replays fixed addresses, so the batch, its prior draw and the loss terms
live in buffers that every step overwrites. The prior is drawn into its buffer outside the graph, from the
run's own generator, exactly as the eager loop draws it: the draws, and so the runs, are the eager ones'.

On CUDA the first step runs eagerly on a side stream (Adam creates its state there, which the graph then
captures), the second is captured and replayed, and every later one replayed; a resumed run loads its state
first, so the graph captures the resumed tensors. On a CPU there is nothing to capture: the same step runs on
the same buffers eagerly, with the eager loop's arithmetic, which the tests hold bit for bit.
"""

from __future__ import annotations

import contextlib

import torch

from mifeatures.core.networks.objective import DeepInfoMaxLoss
from mifeatures.core.networks.shapes import N_MAPS


def optimise(encoder: torch.nn.Module, objective: DeepInfoMaxLoss, optimizers: list[torch.optim.Optimizer],
             terms: list[str], autocast: contextlib.AbstractContextManager, inputs: torch.Tensor, images: torch.Tensor,
             prior_generator: torch.Generator | None = None, prior_sample: torch.Tensor | None = None) -> torch.Tensor:
    """One step after the gradients were cleared: forward, backward and every optimiser's step; the ``terms``,
    detached (a copy of the graph's outputs would chain every step's graph to the caller's log). The eager loop
    (``training.train``) and ``StaticStep`` both run it."""
    with autocast:
        out = objective(encoder(inputs), images, prior_generator, prior_sample=prior_sample)
    if objective.adversarial_prior:  # two disjoint graphs: each side gets the gradient of its own loss only
        torch.autograd.backward([out["loss"], out["discriminator"]])
    else:
        out["loss"].backward()
    for optimizer in optimizers:
        optimizer.step()
    return torch.stack([out[name].detach() for name in terms])


class StaticStep:
    """``step(inputs, images, prior_generator)`` → the step's loss terms (``terms``, in that order), the optimisers
    stepped; the terms tensor is the step's own buffer, to be copied before the next step."""

    def __init__(self, encoder: torch.nn.Module, objective: DeepInfoMaxLoss, optimizers: list[torch.optim.Optimizer],
                 terms: list[str], device: torch.device, autocast: contextlib.AbstractContextManager | None = None):
        self.encoder, self.objective, self.optimizers, self.terms = encoder, objective, optimizers, terms
        self.device, self.autocast = device, autocast or contextlib.nullcontext()
        self.buffers: dict[str, torch.Tensor] = {}
        self.graph: torch.cuda.CUDAGraph | None = None
        self.output: torch.Tensor | None = None
        self.warmed_up = device.type != "cuda"

    def _fill(self, inputs: torch.Tensor, images: torch.Tensor, prior_generator: torch.Generator) -> None:
        if not self.buffers:  # the maps are the critics' images' size, N_MAPS deep
            self.buffers = {"inputs": torch.empty_like(inputs), "images": torch.empty_like(images),
                            "prior": torch.empty((len(inputs), N_MAPS, *images.shape[-2:]), device=self.device)}
        self.buffers["inputs"].copy_(inputs)
        self.buffers["images"].copy_(images)
        torch.rand(self.buffers["prior"].shape, generator=prior_generator, device=self.device,
                   out=self.buffers["prior"])

    def _step(self) -> torch.Tensor:
        return optimise(self.encoder, self.objective, self.optimizers, self.terms, self.autocast,
                        self.buffers["inputs"], self.buffers["images"], prior_sample=self.buffers["prior"])

    def __call__(self, inputs: torch.Tensor, images: torch.Tensor, prior_generator: torch.Generator) -> torch.Tensor:
        self._fill(inputs, images, prior_generator)
        if self.graph is not None:
            self.graph.replay()
            return self.output
        if self.warmed_up and self.device.type == "cuda":
            for optimizer in self.optimizers:
                optimizer.zero_grad(set_to_none=True)  # the graph's backward allocates the gradients it replays
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.output = self._step()
            self.graph.replay()  # capturing ran nothing: this is the step
            return self.output
        for optimizer in self.optimizers:
            optimizer.zero_grad()
        if self.device.type != "cuda":
            return self._step()
        side = torch.cuda.Stream()  # the warm-up, a real step, off the default stream as capture requires
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            output = self._step()
        torch.cuda.current_stream().wait_stream(side)
        self.warmed_up = True
        return output


def capturable_adam(parameters, lr: float) -> torch.optim.Adam:
    """Fused Adam whose step counts live on the GPU, so that a graph can replay its update."""
    return torch.optim.Adam(parameters, lr=lr, fused=True, capturable=True)
