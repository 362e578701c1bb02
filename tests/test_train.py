"""Tests of the train stage on real images (a couple of steps each)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from mifeatures.models import build_encoder, map_size
from mifeatures.score import load_encoder
from mifeatures.train import (
    LOSS_COLUMNS,
    NonFiniteLossError,
    ResumeState,
    TrainConfig,
    main,
    make_loader,
    resolve_device,
    run,
)


def test_loss_log_has_one_finite_row_per_step(trained_case):
    """Two steps of batch 4 over 8 images give two rows with finite terms that sum to the loss."""
    losses = pd.read_csv(trained_case["loss"])
    assert list(losses.columns) == LOSS_COLUMNS
    assert losses["step"].tolist() == [0, 1] and losses["epoch"].tolist() == [0, 0]
    assert np.isfinite(losses[LOSS_COLUMNS[2:]].to_numpy()).all()
    np.testing.assert_allclose(losses["local"] + losses["global"] + losses["prior"], losses["loss"], rtol=1e-6)


def test_training_moves_the_weights(trained_case):
    """The checkpoint differs from the seeded initial weights: the optimiser really stepped."""
    torch.manual_seed(TrainConfig().seed)
    initial = build_encoder("a").state_dict()
    _, trained = load_encoder(trained_case["encoder"])
    assert not torch.equal(initial["c0.weight"], trained.state_dict()["c0.weight"])


def test_same_seed_gives_byte_identical_outputs(tmp_path, trained_case):
    """Rerunning with the same config reproduces the loss log byte for byte and the same weights."""
    run("a", trained_case["encoder_images"], trained_case["sized_images"], TrainConfig(epochs=1, batch_size=4),
        tmp_path / "encoder.pt", tmp_path / "loss.csv")
    assert (tmp_path / "loss.csv").read_bytes() == trained_case["loss"].read_bytes()
    _, first = load_encoder(trained_case["encoder"])
    _, second = load_encoder(tmp_path / "encoder.pt")
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name


def test_another_seed_gives_another_run(tmp_path, trained_case):
    """A different seed changes the loss log."""
    run("a", trained_case["encoder_images"], trained_case["sized_images"],
        TrainConfig(epochs=1, batch_size=4, seed=1), tmp_path / "encoder.pt", tmp_path / "loss.csv")
    assert (tmp_path / "loss.csv").read_bytes() != trained_case["loss"].read_bytes()


@pytest.mark.parametrize(
    ("change", "message"),
    [({"lr": 0.0}, "train.lr must be > 0"), ({"epochs": 0}, "train.epochs must be ≥ 1"),
     ({"batch_size": 1}, "train.batch_size must be ≥ 2")],
)
def test_config_rejects_bad_values(change, message):
    """Bad hyperparameters fail with the params.yaml key in the message."""
    with pytest.raises(ValueError, match=message):
        TrainConfig(**change)


def test_loader_reshuffles_reproducibly_and_drops_the_short_batch(gray_images):
    """Batches cover floor(N/B)·B images, reshuffle each epoch, and repeat for the same seed."""
    def epochs(seed):
        loader = make_loader(gray_images, gray_images, batch_size=3, seed=seed)
        return [[batch[0].sum().item() for batch in loader] for _ in range(2)]

    first = epochs(0)
    assert len(first[0]) == len(gray_images) // 3
    assert first[0] != first[1]
    assert first == epochs(0)


def test_loader_rejects_mismatched_inputs(gray_images):
    """Encoder and critic image counts must agree, and a batch must fit in the data."""
    with pytest.raises(ValueError, match="8 encoder images but 7 critic images"):
        make_loader(gray_images, gray_images[:7], batch_size=2, seed=0)
    with pytest.raises(ValueError, match="batch_size 10 exceeds the 8 images"):
        make_loader(gray_images, gray_images, batch_size=10, seed=0)


def test_device_choice():
    """'auto' picks what exists; 'cuda' without a GPU and unknown names are errors."""
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="expected auto, cpu or cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")


def test_cli_rejects_images_of_the_wrong_size(tmp_path, trained_case):
    """Critic images must have the case's map size; nothing is written otherwise."""
    out = tmp_path / "encoder.pt"
    with pytest.raises(ValueError, match=f"expected {map_size('b')}×{map_size('b')} images"):
        main(["--case", "b", "--encoder-images", str(trained_case["encoder_images"]),
              "--critic-images", str(trained_case["sized_images"]), "--encoder-out", str(out),
              "--loss-out", str(tmp_path / "loss.csv")])
    assert list(tmp_path.iterdir()) == []


def train_command(paths, out, epochs):
    """The train CLI as the workflow runs it, for case a in batches of 4."""
    return [sys.executable, "-m", "mifeatures.train", "--case", "a", "--epochs", str(epochs), "--batch-size", "4",
            "--encoder-images", str(paths["encoder_images"]), "--critic-images", str(paths["sized_images"]),
            "--encoder-out", str(out / "encoder.pt"), "--loss-out", str(out / "loss.csv"),
            "--resume-state", str(out / "resume.pt")]


def test_killed_run_resumes_to_the_same_bytes(tmp_path, trained_case):
    """SIGKILL after an epoch, then a rerun, gives the weights and loss log of an uninterrupted run."""
    epochs = 3
    killed = subprocess.Popen(train_command(trained_case, tmp_path, epochs), stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "resume.pt").exists() and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert killed.poll() is None, "training ended before it could be killed"
        killed.send_signal(signal.SIGKILL)
    finally:
        killed.wait(timeout=60)
    assert not (tmp_path / "encoder.pt").exists() and not (tmp_path / "loss.csv").exists()

    subprocess.run(train_command(trained_case, tmp_path, epochs), check=True, capture_output=True, timeout=600)
    assert not (tmp_path / "resume.pt").exists()
    reference = tmp_path / "uninterrupted"
    run("a", trained_case["encoder_images"], trained_case["sized_images"],
        TrainConfig(epochs=epochs, batch_size=4), reference / "encoder.pt", reference / "loss.csv")
    assert (tmp_path / "loss.csv").read_bytes() == (reference / "loss.csv").read_bytes()
    _, resumed = load_encoder(tmp_path / "encoder.pt")
    _, uninterrupted = load_encoder(reference / "encoder.pt")
    for name, tensor in uninterrupted.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def test_state_of_another_run_is_not_resumed(tmp_path, trained_case):
    """A resume file from a different config is ignored: the run equals a fresh one."""
    resume = tmp_path / "resume.pt"
    ResumeState(resume, "another run").save(
        {"encoder": build_encoder("a"), "objective": torch.nn.Linear(1, 1), "optimizers": [],
         "loader": torch.Generator(), "prior": torch.Generator()}, epochs_done=1, rows=[[0, 0, 9.0, 3.0, 3.0, 3.0]])
    run("a", trained_case["encoder_images"], trained_case["sized_images"], TrainConfig(epochs=1, batch_size=4),
        tmp_path / "encoder.pt", tmp_path / "loss.csv", resume_path=resume)
    assert (tmp_path / "loss.csv").read_bytes() == trained_case["loss"].read_bytes()
    assert not resume.exists()


def test_non_finite_loss_stops_with_epoch_and_step_and_writes_nothing(tmp_path, trained_case):
    """A NaN pixel makes the loss NaN: the run stops naming case, epoch and step; no output appears."""
    images = np.load(trained_case["encoder_images"])
    images[:, 40, 40] = np.nan
    np.save(tmp_path / "nan96.npy", images)
    with pytest.raises(NonFiniteLossError, match=r"train case a: non-finite loss .* at epoch 0, step 0"):
        run("a", tmp_path / "nan96.npy", trained_case["sized_images"], TrainConfig(epochs=1, batch_size=4),
            tmp_path / "encoder.pt", tmp_path / "loss.csv", resume_path=tmp_path / "resume.pt")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["nan96.npy"]
