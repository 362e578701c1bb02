"""Tests of the train stage on real images (a couple of steps each)."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from mifeatures.workflow import provenance, sources
from mifeatures.core.data.images import load_images
from mifeatures.core.networks.models import build_encoder
from mifeatures.core.networks.shapes import INPUT_SIZE, Critics, map_size
from mifeatures.core.networks.objective import DeepInfoMaxLoss, LossWeights
from mifeatures.core.information.maps import load_encoder
from mifeatures.workflow.memory import ALLOCATOR_TUNABLES
from mifeatures.workflow.params import load_params
from mifeatures.core.networks.resume import ResumeState, fingerprint
from mifeatures.stages.train import main
from mifeatures.core.networks.runtime import resolve_device, set_up
from mifeatures.core.networks.training import (LOSS_COLUMNS, Batches, NonFiniteLossError, TrainConfig, run,
                                               seed_everything, train)

from helpers import CRITICS, WEIGHTS, train_config


def test_loss_log_has_one_finite_row_per_step(trained_case):
    """Two steps of batch 4 over 8 images give two rows with finite terms that sum to the loss."""
    losses = pd.read_csv(trained_case["loss"])
    assert list(losses.columns) == LOSS_COLUMNS
    assert losses["step"].tolist() == [0, 1] and losses["epoch"].tolist() == [0, 0]
    assert np.isfinite(losses[LOSS_COLUMNS[2:]].to_numpy()).all()
    np.testing.assert_allclose(losses["local"] + losses["global"] + losses["prior"], losses["loss"], rtol=1e-6)


def test_training_moves_the_weights(trained_case):
    """The checkpoint differs from the seeded initial weights: the optimiser really stepped."""
    torch.manual_seed(train_config().seed)
    initial = build_encoder("a").state_dict()
    _, trained = load_encoder(trained_case["encoder"])
    assert not torch.equal(initial["c0.weight"], trained.state_dict()["c0.weight"])


def test_same_seed_gives_byte_identical_outputs(tmp_path, trained_case):
    """Rerunning with the same config reproduces the loss log byte for byte and the same weights."""
    run("a", trained_case["encoder_images"], trained_case["sized_images"], train_config(epochs=1, batch_size=4),
        tmp_path / "encoder.pt", tmp_path / "loss.csv", critics=CRITICS)
    assert (tmp_path / "loss.csv").read_bytes() == trained_case["loss"].read_bytes()
    _, first = load_encoder(trained_case["encoder"])
    _, second = load_encoder(tmp_path / "encoder.pt")
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name


def test_another_seed_gives_another_run(tmp_path, trained_case):
    """A different seed changes the loss log."""
    run("a", trained_case["encoder_images"], trained_case["sized_images"],
        train_config(epochs=1, batch_size=4, seed=1), tmp_path / "encoder.pt", tmp_path / "loss.csv", critics=CRITICS)
    assert (tmp_path / "loss.csv").read_bytes() != trained_case["loss"].read_bytes()


@pytest.mark.parametrize(
    ("change", "message"),
    [({"lr": 0.0}, "train.lr must be > 0"), ({"epochs": 0}, "train.epochs must be ≥ 1"),
     ({"batch_size": 1}, "train.batch_size must be ≥ 2"),
     ({"precision": "fp16"}, "train.precision must be fp32, tf32 or bf16, got 'fp16'")],
)
def test_config_rejects_bad_values(change, message):
    """Bad hyperparameters fail with the params.yaml key in the message."""
    with pytest.raises(ValueError, match=message):
        train_config(**change)


def test_batches_reshuffle_reproducibly_and_drop_the_short_batch(gray_images):
    """Batches cover floor(N/B)·B images, reshuffle each epoch, and repeat for the same seed."""
    def epochs(seed):
        batches = Batches(gray_images, gray_images, batch_size=3, seed=seed)
        return [[batch[0].sum().item() for batch in batches] for _ in range(2)]

    first = epochs(0)
    assert len(first[0]) == len(gray_images) // 3
    assert first[0] != first[1]
    assert first == epochs(0)


@pytest.mark.parametrize("batch_size", [3, 4])
def test_batches_follow_the_dataloader_order_and_generator_state(gray_images, batch_size):
    """Epoch after epoch, the batches are those DataLoader(shuffle=True, drop_last=True) gave with the same
    seeded generator, whether or not a short batch is dropped, and the generator ends in the same state."""
    dataset = TensorDataset(torch.as_tensor(gray_images, dtype=torch.float32).unsqueeze(1))
    generator = torch.Generator().manual_seed(78)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator)
    batches = Batches(gray_images, gray_images, batch_size, seed=78)
    for _ in range(3):
        for (expected,), (inputs, images) in zip(loader, batches, strict=True):
            assert torch.equal(inputs, expected) and torch.equal(images, expected)
    assert torch.equal(batches.generator.get_state(), generator.get_state())


def test_batches_reject_mismatched_inputs(gray_images):
    """Encoder and critic image counts must agree, and a batch must fit in the data."""
    with pytest.raises(ValueError, match="8 encoder images but 7 critic images"):
        Batches(gray_images, gray_images[:7], batch_size=2, seed=0)
    with pytest.raises(ValueError, match="batch_size 10 exceeds the 8 images"):
        Batches(gray_images, gray_images, batch_size=10, seed=0)


def run_with_dataloader(paths, config, out):
    """The train stage as it was before Batches, for case a without resume: DataLoader batches and every
    step's terms read on the host. The reference the device-side loop must match byte for byte on a CPU."""
    torch.set_num_threads(1)
    encoder_images = load_images(paths["encoder_images"], INPUT_SIZE)
    critic_images = load_images(paths["sized_images"], map_size("a"))
    seed_everything(config.seed)
    encoder = build_encoder("a").train()
    objective = DeepInfoMaxLoss(map_size("a"), LossWeights(config.alpha, config.beta, config.gamma), CRITICS).train()
    optimizers = [torch.optim.Adam(encoder.parameters(), lr=config.lr),
                  torch.optim.Adam(objective.parameters(), lr=config.lr)]
    dataset = TensorDataset(torch.as_tensor(encoder_images, dtype=torch.float32).unsqueeze(1),
                            torch.as_tensor(critic_images, dtype=torch.float32).unsqueeze(1))
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(config.seed))
    prior_generator = torch.Generator().manual_seed(config.seed)
    rows = []
    for epoch in range(config.epochs):
        for inputs, images in loader:
            for optimizer in optimizers:
                optimizer.zero_grad()
            terms = objective(encoder(inputs), images, prior_generator)
            rows.append([epoch, len(rows)] + [terms[key].item() for key in LOSS_COLUMNS[2:]])
            terms["loss"].backward()
            for optimizer in optimizers:
                optimizer.step()
    # Saved to a handle, as run() does: given a path, torch names the archive after the file.
    with open(out / "encoder.pt", "wb") as handle:
        torch.save({"case": "a", "config": asdict(config), "state_dict": encoder.state_dict()}, handle)
    pd.DataFrame(rows, columns=LOSS_COLUMNS).to_csv(out / "loss.csv", index=False)


@pytest.mark.slow
def test_device_loop_gives_the_bytes_of_the_dataloader_loop(tmp_path, trained_case):
    """Two epochs of two steps: the loss log and the encoder checkpoint are the old loop's, byte for byte."""
    config = train_config(epochs=2, batch_size=4)
    (tmp_path / "old").mkdir()
    run_with_dataloader(trained_case, config, tmp_path / "old")
    run("a", trained_case["encoder_images"], trained_case["sized_images"], config, tmp_path / "encoder.pt",
        tmp_path / "loss.csv", critics=CRITICS)
    assert pd.read_csv(tmp_path / "loss.csv")["epoch"].tolist() == [0, 0, 1, 1]
    for name in ("loss.csv", "encoder.pt"):
        assert (tmp_path / name).read_bytes() == (tmp_path / "old" / name).read_bytes(), name


FLOAT32_FLAGS = ("tf32_matmul", "tf32_cudnn", "matmul_precision")


def float32_flags():
    """torch's global float32 settings that train.precision sets, by FLOAT32_FLAGS name."""
    return dict(zip(FLOAT32_FLAGS, (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                                    torch.get_float32_matmul_precision())))


@pytest.fixture
def restore_float32_flags():
    """Put torch's float32 settings back after a test that changes them: they are process-wide."""
    saved = float32_flags()
    yield
    torch.set_float32_matmul_precision(saved["matmul_precision"])
    torch.backends.cuda.matmul.allow_tf32 = saved["tf32_matmul"]
    torch.backends.cudnn.allow_tf32 = saved["tf32_cudnn"]


def test_precision_sets_the_float32_flags(restore_float32_flags):
    """fp32 turns off TF32, cuDNN's included (on by default); tf32 turns it on; bf16 is fp32 plus autocast.
    What the record says of them is what was set."""
    torch.backends.cudnn.allow_tf32 = True
    for precision, flags in (("fp32", {"tf32_matmul": False, "tf32_cudnn": False, "matmul_precision": "highest"}),
                             ("tf32", {"tf32_matmul": True, "tf32_cudnn": True, "matmul_precision": "high"}),
                             ("bf16", {"tf32_matmul": False, "tf32_cudnn": False, "matmul_precision": "highest"})):
        runtime = set_up("cpu", 1, precision)
        assert float32_flags() == flags
        described = runtime.describe()
        assert {"tf32_matmul": described["tf32_matmul"], "tf32_cudnn": described["tf32_cudnn"],
                "matmul_precision": described["float32_matmul_precision"]} == flags
        assert torch.are_deterministic_algorithms_enabled() and described["deterministic_algorithms"]
        autocast = runtime.autocast()
        if precision == "bf16":
            assert isinstance(autocast, torch.autocast) and autocast.fast_dtype == torch.bfloat16
        else:
            assert isinstance(autocast, contextlib.nullcontext)


def test_a_jobs_set_up_makes_kernels_deterministic_without_importing_the_compiler():
    """torch.use_deterministic_algorithms imports torch's compiler (torch._inductor, 2.4 s a job on this
    project's CPU machine) to set a flag of torch.compile, which no stage uses; set_up sets the kernels'
    switch alone, in a fresh process, and torch reports it on (warnings, not errors, for kernels without a
    deterministic version)."""
    probe = ("import sys; from mifeatures.core.networks.runtime import set_up; import torch; set_up('cpu', 1); "
             "print(torch.are_deterministic_algorithms_enabled(), "
             "torch.is_deterministic_algorithms_warn_only_enabled(), 'torch._inductor' in sys.modules)")
    said = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert said.split() == ["True", "True", "False"]


def test_tf32_changes_nothing_on_a_cpu(tmp_path, trained_case, restore_float32_flags):
    """TF32 exists only on CUDA: on a CPU, tf32 gives the fp32 loss log byte for byte."""
    run("a", trained_case["encoder_images"], trained_case["sized_images"],
        train_config(epochs=1, batch_size=4, precision="tf32"), tmp_path / "encoder.pt", tmp_path / "loss.csv",
        critics=CRITICS)
    assert (tmp_path / "loss.csv").read_bytes() == trained_case["loss"].read_bytes()


@pytest.mark.slow
def test_cli_bf16_trains_in_bfloat16_and_records_it(tmp_path, trained_case, restore_float32_flags):
    """--precision bf16 gives finite losses unlike fp32's, and the checkpoint and provenance name it."""
    out = tmp_path / "encoder.pt"
    main([*SETTINGS, "--case", "a", "--precision", "bf16",
          "--encoder-images", str(trained_case["encoder_images"]),
          "--critic-images", str(trained_case["sized_images"]),
          "--encoder-out", str(out), "--loss-out", str(tmp_path / "loss.csv")])
    losses, fp32 = pd.read_csv(tmp_path / "loss.csv"), pd.read_csv(trained_case["loss"])
    assert np.isfinite(losses[LOSS_COLUMNS[2:]].to_numpy()).all()
    assert not np.array_equal(losses["loss"], fp32["loss"])
    assert torch.load(out, weights_only=True)["config"]["precision"] == "bf16"
    record = json.loads(provenance.sidecar(out).read_text())
    assert record["params"]["train.precision"] == "bf16" and record["environment"]["precision"] == "bf16"


def test_the_critics_widths_reach_the_training_and_its_record(tmp_path, trained_case):
    """train.critic_channels and train.global_units were constants (64, 256): the CLI trains critics of the widths
    it is given, which changes the losses, and the record states them; the checkpoint, which holds the encoder,
    keeps the keys it had."""
    out = tmp_path / "encoder.pt"
    main([*SETTINGS, "--case", "a", "--critic-channels", "8", "--global-units", "16",
          "--encoder-images", str(trained_case["encoder_images"]), "--critic-images", str(trained_case["sized_images"]),
          "--encoder-out", str(out), "--loss-out", str(tmp_path / "loss.csv")])
    assert not np.array_equal(pd.read_csv(tmp_path / "loss.csv")["loss"], pd.read_csv(trained_case["loss"])["loss"])
    record = json.loads(provenance.sidecar(out).read_text())
    assert (record["params"]["train.critic_channels"], record["params"]["train.global_units"]) == (8, 16)
    saved, article = torch.load(out, weights_only=True), torch.load(trained_case["encoder"], weights_only=True)
    assert saved["config"].keys() == article["config"].keys() == set(asdict(train_config()))


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--precision", "fp16", "invalid choice: 'fp16'"),
    ("--checkpoint-every", "0", "--checkpoint-every must be ≥ 1, got 0"),
    ("--threads", "0", "--threads 0: threads must be ≥ 1, got 0"),
    ("--protocol", "adversarial", "invalid choice: 'adversarial'"),
    ("--global-units", "0", "--critic-channels 64, --global-units 0: the critics' widths must be ≥ 1"),
])
def test_cli_rejects_a_bad_option_before_any_work(tmp_path, trained_case, capsys, option, value, message):
    """A bad value is a usage error naming it, and nothing is written."""
    with pytest.raises(SystemExit):
        main([*SETTINGS, "--case", "a", "--encoder-images", str(trained_case["encoder_images"]),
              "--critic-images", str(trained_case["sized_images"]),
              "--encoder-out", str(tmp_path / "encoder.pt"), "--loss-out", str(tmp_path / "loss.csv"),
              option, value])
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_device_choice():
    """'auto' picks what exists; 'cuda' without a GPU and unknown names are errors."""
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="expected auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")


def test_cli_rejects_images_of_the_wrong_size(tmp_path, trained_case):
    """Critic images must have the case's map size; nothing is written otherwise."""
    out = tmp_path / "encoder.pt"
    with pytest.raises(ValueError, match=f"expected {map_size('b')}×{map_size('b')} images"):
        main([*SETTINGS, "--case", "b", "--encoder-images", str(trained_case["encoder_images"]),
              "--critic-images", str(trained_case["sized_images"]), "--encoder-out", str(out),
              "--loss-out", str(tmp_path / "loss.csv")])
    assert list(tmp_path.iterdir()) == []


# Every value params.yaml owns, as the workflow passes it (the CLI has no defaults for them); later
# arguments override these.
SETTINGS = ["--epochs", "1", "--batch-size", "4", "--lr", "0.0001", "--seed", "78", "--alpha", "0.1", "--beta", "0.1",
            "--gamma", "0.8", "--critic-channels", "64", "--global-units", "256",
            "--device", "cpu", "--precision", "fp32", "--no-fused-adam", "--no-together",
            "--no-cuda-graph", "--checkpoint-every", "5"]


def test_cli_had_its_own_defaults_for_what_params_yaml_owns(tmp_path, trained_case, capsys):
    """TrainConfig's 50 epochs were the CLI's default against params.yaml's 2: every train.* value is now
    required, so a job can only run with the values its rule passed."""
    with pytest.raises(SystemExit):
        main(["--case", "a", "--encoder-images", str(trained_case["encoder_images"]),
              "--critic-images", str(trained_case["sized_images"]),
              "--encoder-out", str(tmp_path / "encoder.pt"), "--loss-out", str(tmp_path / "loss.csv")])
    said = capsys.readouterr().err
    for option in ("--epochs", "--batch-size", "--lr", "--seed", "--alpha", "--precision", "--checkpoint-every"):
        assert option in said
    assert list(tmp_path.iterdir()) == []


def train_command(paths, out, epochs, checkpoint_every):
    """The train CLI as the workflow runs it, for case a in batches of 4."""
    return [sys.executable, "-m", "mifeatures.stages.train", *SETTINGS, "--case", "a", "--epochs", str(epochs),
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
        train_config(epochs=EPOCHS, batch_size=4), folder / "encoder.pt", folder / "loss.csv", critics=CRITICS)
    return folder


@pytest.mark.slow
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


@pytest.mark.slow
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
    config = train_config(epochs=1, batch_size=4)
    # run()'s code: ""
    return fingerprint("a", config, torch.device(device), "", encoder_images, critic_images, critics=CRITICS)


def write_state(path, run_fingerprint, **changes):
    """A state of case a after epoch 1 with a marker loss row and weights seeded unlike any run; ``changes``
    replace payload entries (None removes one)."""
    torch.manual_seed(12345)
    encoder, objective = build_encoder("a"), DeepInfoMaxLoss(map_size("a"), WEIGHTS, CRITICS)
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
                 train_config(epochs=1, batch_size=4), tmp_path / "encoder.pt", tmp_path / "loss.csv",
                 resume_path=resume, critics=CRITICS)
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
    run("a", trained_case["encoder_images"], trained_case["sized_images"], train_config(epochs=1, batch_size=4),
        tmp_path / "encoder.pt", tmp_path / "loss.csv", resume_path=resume, critics=CRITICS)
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1 and str(resume) in warnings[0] and reason in warnings[0], warnings
    assert_same_outputs(tmp_path, trained_case["loss"].parent)
    assert not resume.exists()


def test_fingerprint_covers_device_threads_code_torch_and_critics(gray_images, monkeypatch):
    """Resuming on another device or GPU model, thread count, library code or torch release would mix two runs."""
    def current(device="cpu", code=sources.digest("stages.train")):
        return fingerprint("a", train_config(), torch.device(device), code, gray_images, critics=CRITICS)

    threads = torch.get_num_threads()
    base = current()
    assert current("cuda") != base
    try:
        torch.set_num_threads(threads + 1)
        assert current() != base
    finally:
        torch.set_num_threads(threads)
    assert current(code="edited code") != base
    assert fingerprint("a", train_config(), torch.device("cpu"), sources.digest("stages.train"), gray_images,
                       fused_adam=True, critics=CRITICS) != base  # Adam's fused kernel changes the last bits
    assert fingerprint("a", train_config(), torch.device("cpu"), sources.digest("stages.train"), gray_images,
                       cuda_graph=True, critics=CRITICS) != base  # a graph's Adam keeps its step counts on the GPU
    assert fingerprint("a", train_config(), torch.device("cpu"), sources.digest("stages.train"), gray_images,
                       critics=Critics(8, 256)) != base  # other critics
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # two GPU models, as a CUDA machine names them
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91000)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    h100 = current("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert current("cuda") != h100
    monkeypatch.undo()
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert current() != base


def test_non_finite_loss_stops_with_epoch_and_step_and_writes_nothing(tmp_path, trained_case):
    """A NaN pixel makes the loss NaN: the run stops naming case, epoch and step; no output appears."""
    images = np.load(trained_case["encoder_images"])
    images[:, 40, 40] = np.nan
    np.save(tmp_path / "nan96.npy", images)
    with pytest.raises(NonFiniteLossError, match=r"train case a: non-finite loss .* at epoch 0, step 0"):
        run("a", tmp_path / "nan96.npy", trained_case["sized_images"], train_config(epochs=1, batch_size=4),
            tmp_path / "encoder.pt", tmp_path / "loss.csv", resume_path=tmp_path / "resume.pt", critics=CRITICS)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["nan96.npy"]


def test_non_finite_loss_names_the_first_bad_step_and_saves_no_state(tmp_path, trained_case):
    """A NaN image in the second batch only: the epoch's terms are checked once it ends, the run stops naming
    step 1, and neither the resume state due after that epoch nor any output is written."""
    images = np.load(trained_case["encoder_images"])
    second_batch = list(Batches(images, images, batch_size=4, seed=train_config().seed))[1][0]
    in_second = next(i for i, image in enumerate(images)
                     if np.array_equal(image.astype(np.float32), second_batch[0, 0].numpy()))
    images[in_second, 40, 40] = np.nan
    np.save(tmp_path / "nan96.npy", images)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss .* at epoch 0, step 1; no output written"):
        run("a", tmp_path / "nan96.npy", trained_case["sized_images"], train_config(epochs=2, batch_size=4),
            tmp_path / "encoder.pt", tmp_path / "loss.csv", resume_path=tmp_path / "resume.pt",
            checkpoint_every=1, critics=CRITICS)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["nan96.npy"]


# The adversarial prior: TrainConfig.adversarial_prior, set by --protocol corrected.


def test_cli_corrected_protocol_plays_the_prior_adversarially_and_records_it(tmp_path, trained_case):
    """--protocol corrected: finite rows in the same columns, loss = local + global + prior; the first step's
    local and global terms are the faithful run's (same weights, same batch) but its prior term and every
    later value differ; run() repeats the log byte for byte; the checkpoint names the flag, and the
    record the protocol and seed as context, leaving no param that params.yaml lacks."""
    out = tmp_path / "cli"
    out.mkdir()
    main([*SETTINGS, "--case", "a", "--protocol", "corrected",
          "--encoder-images", str(trained_case["encoder_images"]),
          "--critic-images", str(trained_case["sized_images"]),
          "--encoder-out", str(out / "encoder.pt"), "--loss-out", str(out / "loss.csv")])
    losses, faithful = pd.read_csv(out / "loss.csv"), pd.read_csv(trained_case["loss"])
    assert list(losses.columns) == LOSS_COLUMNS and losses["step"].tolist() == [0, 1]
    assert np.isfinite(losses[LOSS_COLUMNS[2:]].to_numpy()).all()
    np.testing.assert_allclose(losses["local"] + losses["global"] + losses["prior"], losses["loss"],
                               rtol=1e-6)
    first, first_faithful = losses.loc[0], faithful.loc[0]
    assert first["local"] == first_faithful["local"] and first["global"] == first_faithful["global"]
    assert first["prior"] != first_faithful["prior"]
    assert (losses.loc[1, LOSS_COLUMNS[2:]] != faithful.loc[1, LOSS_COLUMNS[2:]]).all()
    _, adversarial_encoder = load_encoder(out / "encoder.pt")
    _, faithful_encoder = load_encoder(trained_case["encoder"])
    assert not torch.equal(adversarial_encoder.state_dict()["c0.weight"],
                           faithful_encoder.state_dict()["c0.weight"])
    assert torch.load(out / "encoder.pt", weights_only=True)["config"]["adversarial_prior"] is True
    record = json.loads(provenance.sidecar(out / "encoder.pt").read_text())
    assert record["context"] == {"case": "a", "protocol": "corrected", "seed": train_config().seed}
    assert not {"train.adversarial_prior", "train.seed"} & record["params"].keys()

    run("a", trained_case["encoder_images"], trained_case["sized_images"],
        train_config(epochs=1, batch_size=4, adversarial_prior=True), tmp_path / "encoder.pt",
        tmp_path / "loss.csv", critics=CRITICS)
    assert (tmp_path / "loss.csv").read_bytes() == (out / "loss.csv").read_bytes()


def test_the_config_has_no_defaults_and_the_prior_is_part_of_the_fingerprint(gray_images):
    """params.yaml owns every training value: TrainConfig takes each one, the protocol's prior included; the
    prior changes the run's fingerprint."""
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'adversarial_prior'"):
        TrainConfig(**{key: value for key, value in asdict(train_config()).items() if key != "adversarial_prior"})
    cpu = torch.device("cpu")
    assert (fingerprint("a", train_config(adversarial_prior=True), cpu, "", gray_images, critics=CRITICS)
            != fingerprint("a", train_config(), cpu, "", gray_images, critics=CRITICS))


class CentreCrop(torch.nn.Module):
    """A case-c encoder whose maps are cut to their centre 12×12, to keep the critics small."""

    def __init__(self):
        super().__init__()
        self.encoder = build_encoder("c")

    def forward(self, inputs):
        return self.encoder(inputs)[..., 42:54, 42:54]


def test_adversarial_step_steps_each_side_on_its_own_loss(gray_images):
    """Two steps of train() with the adversarial prior give the weights and terms of a hand-written two-phase
    update: encoder and local/global critics step on local + global + the encoder's prior term, the prior
    discriminator, with an optimiser of its own, on its loss on detached maps (same batches, same draws)."""
    critic_images = np.ascontiguousarray(gray_images[:, 42:54, 42:54])
    torch.manual_seed(3)
    encoder, objective = CentreCrop(), DeepInfoMaxLoss(12, WEIGHTS, CRITICS, adversarial_prior=True)
    hand_encoder, hand_objective = copy.deepcopy(encoder), copy.deepcopy(objective)

    optimizers = [torch.optim.Adam(encoder.parameters(), lr=1e-3),
                  torch.optim.Adam(objective.parameters(), lr=1e-3)]
    losses = train(encoder, objective, Batches(gray_images, critic_images, 4, seed=0), optimizers, epochs=1,
                   device=torch.device("cpu"), prior_generator=torch.Generator().manual_seed(0))

    critic = hand_objective.prior_critic
    cooperative = [*hand_encoder.parameters(), *hand_objective.local_critic.parameters(),
                   *hand_objective.global_critic.parameters()]
    cooperative_optimizer = torch.optim.Adam(cooperative, lr=1e-3)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=1e-3)
    prior_generator, rows = torch.Generator().manual_seed(0), []
    hand_encoder.train()
    hand_objective.train()
    for inputs, images in Batches(gray_images, critic_images, 4, seed=0):
        cooperative_optimizer.zero_grad()
        critic_optimizer.zero_grad()
        terms = hand_objective(hand_encoder(inputs), images, prior_generator)
        rows.append([terms[name].item() for name in LOSS_COLUMNS[2:]])
        terms["loss"].backward()  # phase 1: the encoder's side
        assert all(parameter.grad is None for parameter in critic.parameters())
        cooperative_optimizer.step()
        # phase 2: the discriminator, on the maps of this step's forward pass, detached
        terms["discriminator"].backward()
        critic_optimizer.step()

    assert losses[LOSS_COLUMNS[2:]].values.tolist() == rows
    for mine, theirs in ((encoder, hand_encoder), (objective, hand_objective)):
        for name, tensor in theirs.state_dict().items():
            assert torch.equal(mine.state_dict()[name], tensor), name


@pytest.mark.slow
def test_sigkill_while_a_resume_state_is_written_leaves_a_temporary_file(tmp_path, trained_case, uninterrupted):
    """A save killed mid-way left `.resume.pt.XXXXXXXX.tmp` (289 MB at the tiny config), which outlived the
    successful rerun; the rerun now removes it when it starts, and resumes to the same bytes."""
    kill_at_first_state(train_command(trained_case, tmp_path, EPOCHS, 1), tmp_path / "resume.pt")
    stale = tmp_path / ".resume.pt.k3j_x9ab.tmp"  # what atomic_write's mkstemp names look like
    stale.write_bytes(b"half a state")
    subprocess.run(train_command(trained_case, tmp_path, EPOCHS, 1), check=True, capture_output=True, timeout=600)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "encoder.pt", "encoder.pt.prov.json", "loss.csv", "loss.csv.prov.json"]
    assert_same_outputs(tmp_path, uninterrupted)


@pytest.mark.slow
def test_provenance_failing_after_training_loses_the_resume_state(tmp_path, trained_case, uninterrupted):
    """The resume state was deleted before the provenance was written, so a failure there (here: the record's
    path is taken by a folder) cost every step; the state now outlives it and the rerun resumes from it."""
    blocker = tmp_path / "encoder.pt.prov.json"
    blocker.mkdir()
    failed = subprocess.run(train_command(trained_case, tmp_path, EPOCHS, 1), capture_output=True, text=True,
                            timeout=600)
    assert failed.returncode != 0 and "IsADirectoryError" in failed.stderr, failed.stderr[-2000:]
    assert torch.load(tmp_path / "resume.pt", weights_only=True)["epochs_done"] == EPOCHS - 1
    blocker.rmdir()
    rerun = subprocess.run(train_command(trained_case, tmp_path, EPOCHS, 1), check=True, capture_output=True,
                           text=True, timeout=600)
    assert f"after epoch {EPOCHS - 1}" in rerun.stderr and not (tmp_path / "resume.pt").exists()
    assert_same_outputs(tmp_path, uninterrupted)


@pytest.mark.slow
def test_progress_file_shows_a_running_job_and_its_end(tmp_path, trained_case):
    """While the CLI trains (3 epochs of 2 steps), its progress file says how many steps are done of how many,
    the time left and the last epoch's loss, rewritten as it goes; at the end it says all of them are."""
    progress = tmp_path / "progress/a.txt"
    command = [*train_command(trained_case, tmp_path, EPOCHS, 5), "--progress", str(progress)]
    job = subprocess.Popen(command, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    seen = set()
    while job.poll() is None:
        if progress.exists():
            seen.add(progress.read_text())
        time.sleep(0.05)
    assert job.returncode == 0
    final = progress.read_text()
    assert "train case a: 100%" in final and f"{2 * EPOCHS}/{2 * EPOCHS}" in final and "loss=" in final
    running = [line for line in seen if "100%" not in line]
    assert any(re.search(rf"\b[1-5]/{2 * EPOCHS} \[\d\d:\d\d<\d\d:\d\d", line) for line in running), seen
    assert any("epoch=0" in line for line in running)


def test_glibc_heap_settings_keep_the_losses_bit_identical(tmp_path, trained_case):
    """The allocator settings every workflow job runs under (mifeatures.workflow.memory: no mmap per large tensor, no
    trimming) made a step up to 1.6× faster: the same run under them gives the loss log's bytes and the
    weights of the run without them (the in-process reference), and its record names them."""
    command = [sys.executable, "-m", "mifeatures.stages.train", *SETTINGS, "--case", "a",
               "--encoder-images", str(trained_case["encoder_images"]),
               "--critic-images", str(trained_case["sized_images"]),
               "--encoder-out", str(tmp_path / "encoder.pt"), "--loss-out", str(tmp_path / "loss.csv")]
    subprocess.run(command, check=True, capture_output=True, env=os.environ | {"GLIBC_TUNABLES": ALLOCATOR_TUNABLES})
    assert_same_outputs(tmp_path, trained_case["encoder"].parent)
    record = json.loads(provenance.sidecar(tmp_path / "loss.csv").read_text())
    assert record["environment"]["allocator"] == ALLOCATOR_TUNABLES


def test_fused_adam_is_a_setting_that_changes_the_last_bits_only(tmp_path, trained_case):
    """Adam's fused CPU kernel (train.fused_adam) is faster but not bit-identical: off by default, the losses it
    gives stay within 1e-6 of the unfused ones, and its record says it was on."""
    main([*SETTINGS, "--case", "a", "--fused-adam", "--encoder-images", str(trained_case["encoder_images"]),
          "--critic-images", str(trained_case["sized_images"]), "--encoder-out", str(tmp_path / "encoder.pt"),
          "--loss-out", str(tmp_path / "loss.csv")])
    fused, unfused = pd.read_csv(tmp_path / "loss.csv"), pd.read_csv(trained_case["loss"])
    np.testing.assert_allclose(fused.loss, unfused.loss, rtol=1e-6)
    assert json.loads(provenance.sidecar(tmp_path / "loss.csv").read_text())["params"]["train.fused_adam"] is True
    assert load_params([Path(__file__).parents[1] / "params.yaml"])["train"]["fused_adam"] is False


def test_an_unknown_case_is_one_line_naming_the_choices(capsys):
    """`mifeatures train --case e` gave a KeyError traceback; argparse now names the cases there are."""
    with pytest.raises(SystemExit) as exit_:
        main(["--case", "e"])
    said = capsys.readouterr().err
    choices = said.partition("argument --case: invalid choice: 'e' (choose from ")[2].partition(")")[0]
    assert exit_.value.code == 2 and choices.replace("'", "") == "a, b, c, d"
    assert "Traceback" not in said
