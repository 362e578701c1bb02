"""Seeds of one case trained together (mifeatures.core.networks.together) against their solo runs
(mifeatures.core.networks.training).

The batched convolutions round differently from the solo ones. Measured on this project's CPU (torch
2.13.0), over 2 steps of 4 images: the first step's loss terms are the solo run's bit for bit, the second's
agree to 3e-7 relative (over 4 steps, 7e-6), and no weight differs by more than the 2·lr per step that two
Adam updates can differ by at most (Adam's step is ±lr wherever a gradient's sign is in doubt). The tests
hold the terms to 1e-5, which another seed's prior draws miss by 1e-4, the weights to that bound and their
median to 1e-6.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from builds import COPIED, MIFEATURES, REPO, copy_of, planned, reruns, set_params, snakemake
from builds import run as run_in
from helpers import CRITICS, train_config

from mifeatures.workflow import provenance
from mifeatures.workflow.memory import stage_mb
from mifeatures.workflow.params import load_params, merge
from mifeatures.core.data.images import resize_images
from mifeatures.core.networks.shapes import map_size
from mifeatures.core.networks.runtime import set_up
from mifeatures.core.networks.together import train_together
from mifeatures.stages.train import main
from mifeatures.core.networks.training import LOSS_TERMS, run

CPU = set_up("cpu", 1, "fp32")
SEEDS = (78, 79)


def solo(tmp_path, case_inputs, config):
    """A seed's solo run, through training.run: (encoder state dict, loss log)."""
    out = tmp_path / f"solo{config.seed}-{config.adversarial_prior}"
    out.mkdir()
    losses = run(case_inputs["case"], case_inputs["encoder_images"], case_inputs["sized_images"], config,
                 out / "encoder.pt", out / "loss.csv", CPU, critics=CRITICS)
    return torch.load(out / "encoder.pt", weights_only=True)["state_dict"], losses


@pytest.fixture(scope="module")
def case_inputs(tmp_path_factory, gray_images):
    folder = tmp_path_factory.mktemp("together")
    paths = {"case": "a", "encoder_images": folder / "size96.npy", "sized_images": folder / "size88.npy"}
    np.save(paths["encoder_images"], gray_images)
    np.save(paths["sized_images"], resize_images(gray_images, map_size("a")))
    return paths


def assert_close_to_solo(together, alone, config):
    (weights, losses), (solo_weights, solo_losses) = together, alone
    np.testing.assert_allclose(losses[LOSS_TERMS], solo_losses[LOSS_TERMS], rtol=1e-5)
    pd.testing.assert_frame_equal(losses[["epoch", "step"]], solo_losses[["epoch", "step"]])
    bound = 2 * config.lr * len(losses)
    differences = torch.cat([(weights[name].double() - solo_weights[name].double()).abs().ravel()
                             for name in solo_weights if weights[name].is_floating_point()])
    assert weights.keys() == solo_weights.keys()
    assert differences.max() <= bound and differences.median() < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("adversarial_prior", [False, True])
def test_each_seed_trained_together_is_its_solo_run(tmp_path, gray_images, case_inputs, adversarial_prior):
    """Each seed's loss log and weights are its solo run's, to the tolerances above, in both protocols'
    training (the article's single loss, the adversarial prior)."""
    configs = [train_config(epochs=1, batch_size=4, seed=seed, adversarial_prior=adversarial_prior) for seed in SEEDS]
    sized = np.load(case_inputs["sized_images"])
    together = train_together("a", gray_images, sized, configs, CPU, critics=CRITICS)
    for result, config in zip(together, configs):
        assert_close_to_solo(result, solo(tmp_path, case_inputs, config), config)
    assert not together[0][1][LOSS_TERMS].equals(together[1][1][LOSS_TERMS])  # two seeds, two runs


@pytest.mark.slow
def test_the_order_of_the_seeds_changes_nothing(gray_images, case_inputs):
    """A seed's result does not depend on where it stands in the list: bit for bit."""
    configs = [train_config(epochs=1, batch_size=4, seed=seed) for seed in SEEDS]
    sized = np.load(case_inputs["sized_images"])
    forward = train_together("a", gray_images, sized, configs, CPU, critics=CRITICS)
    backward = train_together("a", gray_images, sized, configs[::-1], CPU, critics=CRITICS)[::-1]
    for (weights, losses), (other_weights, other_losses) in zip(forward, backward):
        pd.testing.assert_frame_equal(losses, other_losses, check_exact=True)
        assert all(torch.equal(weights[name], other_weights[name]) for name in weights)


@pytest.mark.parametrize(("changes", "message"), [
    ([{"seed": 78}, {"seed": 78}], "seeds trained together must differ"),
    ([{"seed": 78}, {"seed": 79, "lr": 2e-4}], "share every other setting"),
    ([{"seed": 78, "precision": "bf16"}, {"seed": 79, "precision": "bf16"}], "bf16 is trained one seed at a time"),
])
def test_train_together_refuses_what_it_cannot_batch(gray_images, case_inputs, changes, message):
    configs = [train_config(epochs=1, batch_size=4, **change) for change in changes]
    with pytest.raises(ValueError, match=message):
        train_together("a", gray_images, np.load(case_inputs["sized_images"]), configs, CPU, critics=CRITICS)


SETTINGS = ["--case", "a", "--epochs", "1", "--batch-size", "4", "--lr", "0.0001", "--alpha", "0.1",
            "--beta", "0.1", "--gamma", "0.8", "--critic-channels", "64", "--global-units", "256",
            "--device", "cpu", "--precision", "fp32", "--no-fused-adam",
            "--checkpoint-every", "5", "--together", "--no-cuda-graph"]


@pytest.mark.slow
def test_cli_trains_several_seeds_and_records_each(tmp_path, case_inputs):
    """`mifeatures train --seed 78 79` writes each seed's checkpoint, loss log and record, which names the
    seeds it was trained with and the module that did it."""
    main([*SETTINGS, "--seed", *map(str, SEEDS), "--encoder-images", str(case_inputs["encoder_images"]),
          "--critic-images", str(case_inputs["sized_images"]), "--encoder-out", str(tmp_path / "seed{seed}.pt"),
          "--loss-out", str(tmp_path / "seed{seed}.csv")])
    for seed in SEEDS:
        checkpoint = torch.load(tmp_path / f"seed{seed}.pt", weights_only=True)
        assert checkpoint["case"] == "a" and checkpoint["config"]["seed"] == seed
        record = json.loads(provenance.sidecar(tmp_path / f"seed{seed}.csv").read_text())
        assert record["context"] == {"case": "a", "protocol": "faithful", "seed": seed, "trained_with": list(SEEDS)}
        assert any(module.endswith("together.py") for module in record["code"]["modules"])


@pytest.mark.parametrize(("arguments", "message"), [
    (["--seed", "78", "78"], "each seed once"),
    (["--seed", "78", "79", "--encoder-out", "x.pt"], "must hold {seed}"),
    (["--seed", "78", "79", "--resume-state", "r.pt"], "keep no --resume-state"),
    (["--seed", "78", "79", "--precision", "bf16"], "bf16 is trained one seed at a time"),
])
def test_cli_refuses_several_seeds_it_cannot_write(tmp_path, case_inputs, arguments, message, capsys):
    defaults = {"--encoder-out": str(tmp_path / "{seed}.pt"), "--loss-out": str(tmp_path / "{seed}.csv")}
    outs = [item for key, value in defaults.items() if key not in arguments for item in (key, value)]
    with pytest.raises(SystemExit):
        main([*SETTINGS, *arguments, *outs, "--encoder-images", str(case_inputs["encoder_images"]),
              "--critic-images", str(case_inputs["sized_images"])])
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def together_build(tmp_path_factory):
    """The tiny project with case a only, seeds 1 and 2 trained together (train.together), built up to the loss
    figure: the smallest build with a training job of several seeds."""
    root = tmp_path_factory.mktemp("together-build")
    for name in COPIED:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / name)
    params = merge(load_params([REPO / "params.yaml", REPO / "config/tiny.yaml"]),
                   {"cases": ["a"], "train": {"seeds": [1, 2], "together": True}})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    said = snakemake(root, LOSS_FIGURE)
    return root, said.stdout + said.stderr


LOSS_FIGURE = "results/figures/loss.png"


@pytest.mark.slow
def test_train_together_is_one_job_writing_each_seeds_outputs_and_records(together_build):
    """train.together: one training job for case a's two seeds, its log in one place; each seed's checkpoint,
    loss log and records as a solo job writes them, saying which seeds it was trained with, under which
    setting, by which module; the audit calls the figure current, and the workflow has nothing left to do."""
    root, said = together_build
    assert re.search(r"^train\s+1$", said, re.M), said
    assert (root / "results/logs/train/faithful/seeds-together/a.log").is_file()
    log = min((root / ".snakemake/log").glob("*.log")).read_text()
    # Snakemake lowers a job's mem_mb to what the run provides (the memory available at its start) when less.
    provided = int(re.search(r"^Provided resources: .*\bmem_mb\D*(\d+)", log, re.M)[1])
    declared = re.findall(r"rule train:(?:\n .*)*?\bmem_mb=(\d+)", log)
    assert declared == [str(min(stage_mb("train", "a", 20, seeds=2, critics=CRITICS), provided))], (declared, provided)
    for seed in (1, 2):
        run_folder = root / f"results/train/faithful/seed{seed}/a"
        assert torch.load(run_folder / "encoder.pt", weights_only=True)["config"]["seed"] == seed
        for output in ("encoder.pt", "loss.csv"):
            record = json.loads(provenance.sidecar(run_folder / output).read_text())
            assert record["context"] == {"case": "a", "protocol": "faithful", "seed": seed, "trained_with": [1, 2]}
            assert record["params"]["train.together"] is True
            assert any(module.endswith("together.py") for module in record["code"]["modules"])
        assert not (run_folder / "resume.pt").exists()
    losses = [pd.read_csv(root / f"results/train/faithful/seed{seed}/a/loss.csv") for seed in (1, 2)]
    assert len(losses[0]) == 2 and not losses[0].loss.equals(losses[1].loss)
    verified = run_in(root, MIFEATURES, "provenance", LOSS_FIGURE, "--verify", check=False)
    assert verified.returncode == 0 and "current" in verified.stdout, verified.stdout + verified.stderr
    assert planned(root, target=LOSS_FIGURE) == {}


@pytest.mark.slow
def test_switching_train_together_reruns_the_trainings_and_the_audit_says_why(together_build, tmp_path):
    """Seeds trained together are not their solo runs bit for bit: with train.together off, Snakemake and
    `mifeatures build` plan the solo job of the seed the loss figure shows (the first), and the audit names the
    setting."""
    root = copy_of(together_build[0], tmp_path)
    set_params(root, {"train": {"together": False}})
    assert planned(root, target=LOSS_FIGURE) == {"train": 1, "figure_loss": 1}
    assert reruns(root, LOSS_FIGURE) == {"train": 1, "figure_loss": 1}
    verified = run_in(root, MIFEATURES, "provenance", LOSS_FIGURE, "--verify", check=False)
    assert verified.returncode == 1
    assert "param train.together (case a): True when made, False now" in verified.stdout, verified.stdout
