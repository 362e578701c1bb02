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

from mifeatures import sources
from mifeatures.grayscale import load_images
from mifeatures.models import INPUT_SIZE, build_encoder, map_size
from mifeatures.objective import DeepInfoMaxLoss
from mifeatures.score import load_encoder
from mifeatures.train import (
    LOSS_COLUMNS,
    NonFiniteLossError,
    ResumeState,
    TrainConfig,
    fingerprint,
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


def test_cli_rejects_checkpoint_every_below_one(tmp_path, trained_case, capsys):
    """--checkpoint-every 0 is a usage error naming the option, before any work."""
    with pytest.raises(SystemExit):
        main(["--case", "a", "--encoder-images", str(trained_case["encoder_images"]),
              "--critic-images", str(trained_case["sized_images"]),
              "--encoder-out", str(tmp_path / "encoder.pt"), "--loss-out", str(tmp_path / "loss.csv"),
              "--checkpoint-every", "0"])
    assert "--checkpoint-every must be ≥ 1, got 0" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def train_command(paths, out, epochs, checkpoint_every):
    """The train CLI as the workflow runs it, for case a in batches of 4."""
    return [sys.executable, "-m", "mifeatures.train", "--case", "a", "--epochs", str(epochs), "--batch-size", "4",
            "--encoder-images", str(paths["encoder_images"]), "--critic-images", str(paths["sized_images"]),
            "--encoder-out", str(out / "encoder.pt"), "--loss-out", str(out / "loss.csv"),
            "--resume-state", str(out / "resume.pt"), "--checkpoint-every", str(checkpoint_every)]


def kill_at_first_state(command, state):
    """Start ``command``, SIGKILL it as soon as ``state`` appears, and return the state it had saved."""
    killed = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not state.exists() and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        killed.send_signal(signal.SIGKILL)
    finally:
        killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL, "training ended before it could be killed"
    return torch.load(state, weights_only=True)


def assert_same_outputs(folder, reference):
    """The loss logs are byte-identical and the encoder weights equal."""
    assert (folder / "loss.csv").read_bytes() == (reference / "loss.csv").read_bytes()
    _, first = load_encoder(folder / "encoder.pt")
    _, second = load_encoder(reference / "encoder.pt")
    for name, tensor in second.state_dict().items():
        assert torch.equal(tensor, first.state_dict()[name]), name


EPOCHS = 3


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, trained_case):
    """Outputs of an uninterrupted EPOCHS-epoch run of case a, to compare resumed runs with."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    run("a", trained_case["encoder_images"], trained_case["sized_images"],
        TrainConfig(epochs=EPOCHS, batch_size=4), folder / "encoder.pt", folder / "loss.csv")
    return folder


def test_killed_run_resumes_to_the_same_bytes(tmp_path, trained_case, uninterrupted):
    """SIGKILL after an epoch, then a rerun, gives the weights and loss log of an uninterrupted run."""
    saved = kill_at_first_state(train_command(trained_case, tmp_path, EPOCHS, 1), tmp_path / "resume.pt")
    assert saved["epochs_done"] == 1
    assert not (tmp_path / "encoder.pt").exists() and not (tmp_path / "loss.csv").exists()

    rerun = subprocess.run(train_command(trained_case, tmp_path, EPOCHS, 1), check=True, capture_output=True,
                           text=True, timeout=600)
    assert "after epoch 1" in rerun.stderr  # it resumed, not merely started afresh to the same bytes
    assert not (tmp_path / "resume.pt").exists()
    assert_same_outputs(tmp_path, uninterrupted)


def test_state_is_saved_every_checkpoint_every_epochs_and_resumes_under_another(tmp_path, trained_case,
                                                                                uninterrupted):
    """With --checkpoint-every 2 the first state appears after epoch 2, not 1; a rerun that saves every
    epoch resumes from it."""
    saved = kill_at_first_state(train_command(trained_case, tmp_path, EPOCHS, 2), tmp_path / "resume.pt")
    assert saved["epochs_done"] == 2 and [row[0] for row in saved["rows"]] == [0, 0, 1, 1]

    rerun = subprocess.run(train_command(trained_case, tmp_path, EPOCHS, 1), check=True, capture_output=True,
                           text=True, timeout=600)
    assert "after epoch 2" in rerun.stderr
    assert_same_outputs(tmp_path, uninterrupted)


def fingerprint_of(paths, device="cpu"):
    """The fingerprint run() gives case a in batches of 4 on ``device`` with one thread."""
    torch.set_num_threads(1)  # as run() does with its default threads=1
    encoder_images = load_images(paths["encoder_images"], INPUT_SIZE)
    critic_images = load_images(paths["sized_images"], map_size("a"))
    config = TrainConfig(epochs=1, batch_size=4)
    return fingerprint("a", config, torch.device(device), encoder_images, critic_images)


def write_state(path, run_fingerprint, **changes):
    """A state of case a after epoch 1 with a marker loss row and weights seeded unlike any run; ``changes``
    replace payload entries (None removes one)."""
    torch.manual_seed(12345)
    encoder, objective = build_encoder("a"), DeepInfoMaxLoss(map_size("a"))
    optimizers = [torch.optim.Adam(encoder.parameters()), torch.optim.Adam(objective.parameters())]
    state = {"encoder": encoder, "objective": objective, "optimizers": optimizers,
             "loader": torch.Generator(), "prior": torch.Generator()}
    ResumeState(path, run_fingerprint).save(state, epochs_done=1, rows=[[0, 0, 9.0, 3.0, 3.0, 3.0]])
    if changes:
        payload = torch.load(path, weights_only=True)
        payload.update(changes)
        torch.save({key: value for key, value in payload.items() if value is not None}, path)


def test_state_of_this_run_is_resumed(tmp_path, trained_case):
    """A state with the run's fingerprint is restored: its loss rows and weights become the run's outputs."""
    resume = tmp_path / "resume.pt"
    write_state(resume, fingerprint_of(trained_case))
    saved = torch.load(resume, weights_only=True)
    losses = run("a", trained_case["encoder_images"], trained_case["sized_images"],
                 TrainConfig(epochs=1, batch_size=4), tmp_path / "encoder.pt", tmp_path / "loss.csv",
                 resume_path=resume)
    assert losses.values.tolist() == saved["rows"]
    _, encoder = load_encoder(tmp_path / "encoder.pt")
    for name, tensor in saved["encoder"].items():
        assert torch.equal(tensor, encoder.state_dict()[name]), name


CUDA_RNG_STATE = torch.zeros(16, dtype=torch.uint8)  # what a CUDA generator's get_state() gives: seed, offset


def write_unusable_state(kind, path, paths):
    """Write a resume state of ``kind`` that a run of case a must ignore; return what its warning must say."""
    if kind == "garbage":
        path.write_bytes(b"not a torch file")
        return "unreadable"
    if kind == "truncated":
        write_state(path, fingerprint_of(paths))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return "unreadable"
    if kind == "not a dict":
        torch.save([1, 2, 3], path)
        return "holds a list"
    if kind == "another config":
        write_state(path, "another run")
        return "another run"
    if kind == "saved on a GPU":  # device auto on a GPU, killed, then rerun on a machine without one
        write_state(path, fingerprint_of(paths, "cuda"), prior_rng=CUDA_RNG_STATE)
        return "another run"
    if kind == "missing a key":
        write_state(path, fingerprint_of(paths), prior_rng=None)
        return "lacks prior_rng"
    if kind == "weights of another case":
        write_state(path, fingerprint_of(paths), encoder=build_encoder("b").state_dict())
        return "encoder weights do not fit"
    if kind == "no optimisers":
        write_state(path, fingerprint_of(paths), optimizers=[])
        return "0 optimisers, not 2"
    assert kind == "RNG state of another generator"
    write_state(path, fingerprint_of(paths), prior_rng=CUDA_RNG_STATE)
    return "prior RNG state does not fit a cpu generator"


UNUSABLE_STATES = ["garbage", "truncated", "not a dict", "another config", "saved on a GPU", "missing a key",
                   "weights of another case", "no optimisers", "RNG state of another generator"]


@pytest.mark.parametrize("kind", UNUSABLE_STATES)
def test_unusable_state_is_warned_about_and_ignored(kind, tmp_path, trained_case, caplog):
    """An unreadable or foreign state is named in a warning and ignored: the run equals a fresh one."""
    resume = tmp_path / "resume.pt"
    reason = write_unusable_state(kind, resume, trained_case)
    run("a", trained_case["encoder_images"], trained_case["sized_images"], TrainConfig(epochs=1, batch_size=4),
        tmp_path / "encoder.pt", tmp_path / "loss.csv", resume_path=resume)
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1 and str(resume) in warnings[0] and reason in warnings[0], warnings
    assert_same_outputs(tmp_path, trained_case["loss"].parent)
    assert not resume.exists()


def test_fingerprint_covers_device_threads_code_and_torch(gray_images, monkeypatch):
    """Resuming on another device, thread count, library code or torch release would mix two runs."""
    def current(device="cpu"):
        return fingerprint("a", TrainConfig(), torch.device(device), gray_images)

    threads = torch.get_num_threads()
    base = current()
    assert current("cuda") != base
    try:
        torch.set_num_threads(threads + 1)
        assert current() != base
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setattr(sources, "digest", lambda stage: "edited code")
    assert current() != base
    monkeypatch.undo()
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert current() != base


def test_non_finite_loss_stops_with_epoch_and_step_and_writes_nothing(tmp_path, trained_case):
    """A NaN pixel makes the loss NaN: the run stops naming case, epoch and step; no output appears."""
    images = np.load(trained_case["encoder_images"])
    images[:, 40, 40] = np.nan
    np.save(tmp_path / "nan96.npy", images)
    with pytest.raises(NonFiniteLossError, match=r"train case a: non-finite loss .* at epoch 0, step 0"):
        run("a", tmp_path / "nan96.npy", trained_case["sized_images"], TrainConfig(epochs=1, batch_size=4),
            tmp_path / "encoder.pt", tmp_path / "loss.csv", resume_path=tmp_path / "resume.pt")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["nan96.npy"]
