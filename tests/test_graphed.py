"""The training step on fixed buffers (train.cuda_graph, mifeatures.core.networks.graphed): what a CPU can check of
the CUDA-graph path. A CPU captures nothing, so the step runs eagerly on its buffers: bit for bit the default
loop's numbers. On a GPU the replayed graph's losses are held to the eager ones within GRAPH_RTOL."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import CRITICS, train_config

from mifeatures.core.data.images import resize_images
from mifeatures.core.networks.graphed import StaticStep
from mifeatures.core.networks.runtime import set_up
from mifeatures.core.networks.shapes import N_MAPS, map_size
from mifeatures.core.networks.training import (LOSS_TERMS, Batches, adam, fresh_models, run, train)
from mifeatures.stages.train import main
from mifeatures.workflow import provenance

# A replayed graph runs the eager step's kernels, but fused Adam's capturable variant and the graph's memory
# pool may order reductions differently: the losses are held to this relative tolerance on a GPU.
GRAPH_RTOL = 1e-5


def trained(case: str, images: np.ndarray, cuda_graph: bool, device: str = "cpu", adversarial_prior: bool = False,
            epochs: int = 1) -> tuple[pd.DataFrame, dict]:
    """One run of ``case`` on ``images`` through training.train, eager or on fixed buffers."""
    runtime = set_up(device, 1, "fp32")
    config = train_config(epochs=epochs, batch_size=4, device=device, adversarial_prior=adversarial_prior)
    encoder, objective = fresh_models(case, config, critics=CRITICS)
    optimizers = [adam(module.parameters(), config.lr, runtime.device, cuda_graph=cuda_graph)
                  for module in (encoder, objective)]
    batches = Batches(images, resize_images(images, map_size(case)), 4, config.seed, runtime.device)
    prior = torch.Generator(device=runtime.device).manual_seed(config.seed)
    losses = train(encoder, objective, batches, optimizers, epochs, runtime.device, prior, cuda_graph=cuda_graph)
    return losses, {name: tensor.cpu() for name, tensor in encoder.state_dict().items()}


@pytest.mark.parametrize("adversarial_prior", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_the_static_step_is_the_eager_loop_bit_for_bit_on_a_cpu(gray_images, adversarial_prior):
    """Same batches, same prior draws, same arithmetic: the loss log and the weights are the eager loop's bytes,
    in both protocols' training."""
    eager, eager_weights = trained("a", gray_images, False, adversarial_prior=adversarial_prior)
    static, static_weights = trained("a", gray_images, True, adversarial_prior=adversarial_prior)
    pd.testing.assert_frame_equal(static, eager, check_exact=True)
    assert all(torch.equal(static_weights[name], eager_weights[name]) for name in eager_weights)


def test_each_step_overwrites_the_same_buffers_with_its_batch_and_the_runs_own_prior_draw(gray_images):
    """A graph replays fixed addresses: the batch and the prior draw go into the same three buffers every step,
    the draw from the run's own generator in the eager loop's order (one maps-shaped tensor a step)."""
    config = train_config(batch_size=4)
    encoder, objective = fresh_models("a", config, critics=CRITICS)
    optimizers = [adam(module.parameters(), config.lr, torch.device("cpu")) for module in (encoder, objective)]
    step = StaticStep(encoder, objective, optimizers, LOSS_TERMS, torch.device("cpu"))
    batches = Batches(gray_images, resize_images(gray_images, map_size("a")), 4, config.seed)
    generator, replica = (torch.Generator().manual_seed(config.seed) for _ in range(2))
    addresses = []
    for inputs, images in batches:
        terms = step(inputs, images, generator)
        addresses.append({name: buffer.data_ptr() for name, buffer in step.buffers.items()})
        assert torch.equal(step.buffers["inputs"], inputs) and torch.equal(step.buffers["images"], images)
        assert torch.equal(step.buffers["prior"], torch.rand((4, N_MAPS, map_size("a"), map_size("a")),
                                                              generator=replica))
        assert terms.shape == (len(LOSS_TERMS),) and torch.isfinite(terms).all()
    assert len(addresses) == 2 and addresses[0] == addresses[1]


def test_cli_records_the_setting_and_refuses_what_a_graph_cannot_replay(tmp_path, trained_case, capsys):
    """`--cuda-graph` is in the job's record; with bf16 (whose prior draws follow the maps' dtype) or several
    seeds it is refused before anything is written."""
    arguments = ["--case", "a", "--epochs", "1", "--batch-size", "4", "--lr", "0.0001", "--alpha", "0.1", "--beta",
                 "0.1", "--gamma", "0.8", "--critic-channels", "64", "--global-units", "256",
                 "--device", "cpu", "--no-fused-adam", "--checkpoint-every", "5",
                 "--cuda-graph", "--encoder-images", str(trained_case["encoder_images"]),
                 "--critic-images", str(trained_case["sized_images"])]
    outputs = ["--encoder-out", str(tmp_path / "{seed}.pt"), "--loss-out", str(tmp_path / "{seed}.csv")]
    for refused in (["--seed", "78", "--precision", "bf16", "--no-together"],
                    ["--seed", "78", "79", "--precision", "fp32", "--together"]):
        with pytest.raises(SystemExit):
            main([*arguments, *refused, *outputs])
        assert "--cuda-graph: one seed per job, in fp32 or tf32" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    main([*arguments, "--seed", "78", "--precision", "fp32", "--no-together", "--encoder-out",
          str(tmp_path / "encoder.pt"), "--loss-out", str(tmp_path / "loss.csv")])
    assert json.loads(provenance.sidecar(tmp_path / "loss.csv").read_text())["params"]["train.cuda_graph"] is True
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "loss.csv"), pd.read_csv(trained_case["loss"]),
                                  check_exact=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the replayed graph needs CUDA")
def test_the_replayed_graph_gives_the_eager_losses_on_a_gpu(tmp_path, gray_images):
    """On a GPU: warm-up, capture and replays over several epochs give the eager run's losses within GRAPH_RTOL,
    through training.run as the stage calls it."""
    folder = tmp_path
    np.save(folder / "size96.npy", gray_images)
    np.save(folder / "size88.npy", resize_images(gray_images, map_size("a")))
    config = train_config(epochs=3, batch_size=4, device="cuda")
    runtime = set_up("cuda", 1, "fp32")
    logs = [run("a", folder / "size96.npy", folder / "size88.npy", config, folder / f"{graph}.pt",
                folder / f"{graph}.csv", runtime, cuda_graph=graph, critics=CRITICS) for graph in (False, True)]
    np.testing.assert_allclose(logs[1][LOSS_TERMS], logs[0][LOSS_TERMS], rtol=GRAPH_RTOL)
