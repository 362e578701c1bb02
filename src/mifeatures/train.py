"""Train stage: fit one encoder and its critics with the DeepInfoMax objective.

The training loop knows nothing of the case: it gets an encoder, the objective holding
the critics, batches already on the device and optimisers. Every random draw comes from
seeded generators, and their states are saved with the weights every few epochs, so a
killed run resumes to the same bytes as an uninterrupted one. The loop never waits for the
device within an epoch: the loss terms are read back, and checked, once per epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from mifeatures import provenance, sources
from mifeatures.grayscale import load_images
from mifeatures.io import atomic_write, discard_stale_temporaries
from mifeatures.models import INPUT_SIZE, build_encoder, map_size, resolve_device
from mifeatures.objective import DeepInfoMaxLoss, LossWeights
from mifeatures.protocols import ADVERSARIAL_PRIOR, PROTOCOLS

log = logging.getLogger(__name__)

LOSS_COLUMNS = ["epoch", "step", "loss", "local", "global", "prior"]
LOSS_TERMS = LOSS_COLUMNS[2:]
# Read back and checked with the logged terms in adversarial-prior mode, but not logged: the columns stay.
DISCRIMINATOR_TERM = "discriminator"
PRECISIONS = ("fp32", "tf32", "bf16")

# A state holds the weights and both Adam moments: 1.4–2.0 GB at the article's sizes, so it
# is not written after every epoch. How often never changes the numbers, only the work lost.
CHECKPOINT_EVERY = 5


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stops and writes no output."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (params.yaml: train, plus the case's overrides)."""

    epochs: int = 50
    batch_size: int = 10
    lr: float = 1e-4
    seed: int = 78
    alpha: float = 0.1
    beta: float = 0.1
    gamma: float = 0.8
    device: str = "cpu"
    precision: str = "fp32"
    adversarial_prior: bool = False  # the official DIM code's prior game; False is the article's one loss

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"train.epochs must be ≥ 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(f"train.batch_size must be ≥ 2 (negatives pair images within a batch), got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be fp32, tf32 or bf16, got {self.precision!r}")


def seed_everything(seed: int) -> None:
    """Seed torch and numpy and ask for deterministic kernels, so a config always gives the same run."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def use_precision(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Set torch's float32 flags for ``precision``; return the context the forward pass and loss run in.

    fp32 turns TF32 off everywhere (torch leaves cuDNN's on by default), so fp32 means fp32;
    tf32 lets CUDA matmuls and convolutions use it (no effect on a CPU); bf16 is fp32 plus
    bfloat16 autocast.
    """
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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


class ResumeState:
    """Everything a run needs to continue bit-identically, saved atomically every few epochs.

    The file carries a fingerprint of the run; a state that is unreadable, from another run or
    that does not fit this one is ignored with a warning (and later overwritten), never mixed in.
    """

    KEYS = ("fingerprint", "epochs_done", "rows", "encoder", "objective", "optimizers", "loader_rng",
            "prior_rng")

    def __init__(self, path: str | os.PathLike, fingerprint: str):
        self.path = Path(path)
        self.fingerprint = fingerprint

    def save(self, state: dict, epochs_done: int, rows: list) -> None:
        """Write weights, optimiser moments, RNG states and the loss rows so far."""
        payload = {
            "fingerprint": self.fingerprint,
            "epochs_done": epochs_done,
            "rows": rows,
            "encoder": state["encoder"].state_dict(),
            "objective": state["objective"].state_dict(),
            "optimizers": [optimizer.state_dict() for optimizer in state["optimizers"]],
            "loader_rng": state["loader"].get_state(),
            "prior_rng": state["prior"].get_state(),
        }
        with atomic_write(self.path) as handle:
            torch.save(payload, handle)

    def load(self, state: dict) -> tuple[int, list]:
        """Restore ``state`` in place from the file; return (first epoch to run, loss rows so far).

        The whole payload is checked before ``state`` is touched, so an unusable file leaves a
        fresh run exactly as it was.
        """
        if not self.path.exists():
            return 0, []
        payload, problem = self._read(state)
        if problem:
            log.warning("ignoring resume state %s: %s; training starts afresh", self.path, problem)
            return 0, []
        state["encoder"].load_state_dict(payload["encoder"])
        state["objective"].load_state_dict(payload["objective"])
        for optimizer, saved in zip(state["optimizers"], payload["optimizers"]):
            optimizer.load_state_dict(saved)
        state["loader"].set_state(payload["loader_rng"])
        state["prior"].set_state(payload["prior_rng"])
        log.info("resuming from %s after epoch %d", self.path, payload["epochs_done"])
        return payload["epochs_done"], payload["rows"]

    def _read(self, state: dict) -> tuple[dict | None, str | None]:
        """(payload, None) when the file can be restored into ``state``, else (None, why not)."""
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # whatever a truncated or foreign file raises, it cannot be resumed
            first_sentence = str(error).partition(". ")[0]  # torch's later ones advise unsafe loading
            return None, f"unreadable ({type(error).__name__}: {first_sentence})"
        if not isinstance(payload, dict):
            return None, f"holds a {type(payload).__name__}, not a resume state"
        if payload.get("fingerprint") != self.fingerprint:
            return None, "saved by another run (case, config, inputs, code, device, torch or threads differ)"
        missing = [key for key in self.KEYS if key not in payload]
        if missing:
            return None, f"lacks {', '.join(missing)}"
        # What load_state_dict or set_state would reject only after earlier parts were restored:
        for key in ("encoder", "objective"):
            if _shapes(payload[key]) != _shapes(state[key].state_dict()):
                return None, f"its {key} weights do not fit the model"
        if len(payload["optimizers"]) != len(state["optimizers"]):
            return None, f"it has {len(payload['optimizers'])} optimisers, not {len(state['optimizers'])}"
        for key in ("loader", "prior"):
            saved, own = payload[f"{key}_rng"], state[key].get_state()
            if not isinstance(saved, torch.Tensor) or saved.shape != own.shape or saved.dtype != own.dtype:
                return None, f"its {key} RNG state does not fit a {state[key].device} generator"
        return payload, None

    def discard(self) -> None:
        """Remove the state once the run's outputs are written."""
        self.path.unlink(missing_ok=True)


def _shapes(weights: object) -> dict | None:
    """{name: shape} of a state dict, or None if it is not one."""
    if not isinstance(weights, dict):
        return None
    return {name: getattr(tensor, "shape", None) for name, tensor in weights.items()}


def fingerprint(case: str, config: TrainConfig, device: torch.device, *arrays: np.ndarray) -> str:
    """Identity of a run: case, hyperparameters, input image bytes and all that changes its numbers.

    That is the device actually used, the library code the stage runs, the torch release and
    torch's thread count (read here, so set it first): a run resumed after any of them changed
    would mix epochs of two different computations.
    """
    identity = {"case": case, **asdict(config), "resolved_device": str(device),
                "code": sources.digest("train"), "torch": torch.__version__,
                "threads": torch.get_num_threads()}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


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
    precision: str = "fp32",
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
    the epoch and the first bad step, before any state or output is written.
    """
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be ≥ 1, got {checkpoint_every}")
    encoder.to(device).train()
    objective.to(device).train()
    autocast = use_precision(precision, device)
    state = {"encoder": encoder, "objective": objective, "optimizers": optimizers,
             "loader": batches.generator, "prior": prior_generator}
    adversarial = objective.adversarial_prior
    checked = LOSS_TERMS + [DISCRIMINATOR_TERM] if adversarial else LOSS_TERMS
    first_epoch, rows = resume.load(state) if resume else (0, [])
    with tqdm(total=epochs * len(batches), initial=len(rows), desc=description, mininterval=5,
              unit="step") as bar:
        for epoch in range(first_epoch, epochs):
            epoch_terms = torch.empty(len(batches), len(checked), device=device)
            for step, (inputs, images) in enumerate(batches):
                for optimizer in optimizers:
                    optimizer.zero_grad()
                with autocast:
                    terms = objective(encoder(inputs), images, prior_generator)
                # detached: a copy of the graph's outputs would chain every step's graph to epoch_terms
                epoch_terms[step] = torch.stack([terms[name].detach() for name in checked])
                if adversarial:  # two disjoint graphs: each side gets the gradient of its own loss only
                    torch.autograd.backward([terms["loss"], terms[DISCRIMINATOR_TERM]])
                else:
                    terms["loss"].backward()
                for optimizer in optimizers:
                    optimizer.step()
                bar.update()
            for step, values in enumerate(epoch_terms.tolist(), start=len(rows)):
                if not all(map(math.isfinite, values)):
                    raise NonFiniteLossError(
                        f"{description}: non-finite loss terms {dict(zip(checked, values))} at epoch "
                        f"{epoch}, step {step}; no output written (check the input images and train.lr)"
                    )
                rows.append([epoch, step] + values[:len(LOSS_TERMS)])
            bar.set_postfix(epoch=epoch, loss=f"{rows[-1][2]:.4f}")
            if resume and (epoch + 1) % checkpoint_every == 0 and epoch + 1 < epochs:
                resume.save(state, epoch + 1, rows)
    return pd.DataFrame(rows, columns=LOSS_COLUMNS)


def run(case: str, encoder_images_path: str, critic_images_path: str, config: TrainConfig,
        encoder_out: str, loss_out: str, threads: int = 1, resume_path: str | None = None,
        checkpoint_every: int = CHECKPOINT_EVERY, discard_resume: bool = True) -> pd.DataFrame:
    """Train case ``case`` from the grayscale arrays and write the encoder checkpoint and loss log.

    ``threads`` is set here, not left to the caller: torch's CPU results change in the last
    digits with the thread count, so a fixed count is part of a reproducible run. With
    ``resume_path``, state is saved every ``checkpoint_every`` epochs, and a run killed after
    one continues from there when started again; the state is removed once the outputs are
    written, or left to a caller with more to write (``discard_resume=False``), so that
    nothing that can still fail runs after it is gone.
    """
    torch.set_num_threads(threads)
    size = map_size(case)
    encoder_images = load_images(encoder_images_path, INPUT_SIZE)
    critic_images = load_images(critic_images_path, size)
    device = resolve_device(config.device)
    seed_everything(config.seed)
    encoder = build_encoder(case)
    objective = DeepInfoMaxLoss(size, LossWeights(config.alpha, config.beta, config.gamma),
                                adversarial_prior=config.adversarial_prior)
    # Fused Adam is one kernel per step on a GPU; on a CPU torch's default keeps the numbers of earlier runs.
    fused = True if device.type == "cuda" else None
    optimizers = [
        torch.optim.Adam(encoder.parameters(), lr=config.lr, fused=fused),
        torch.optim.Adam(objective.parameters(), lr=config.lr, fused=fused),
    ]
    batches = Batches(encoder_images, critic_images, config.batch_size, config.seed, device)
    prior_generator = torch.Generator(device=device).manual_seed(config.seed)
    resume = (ResumeState(resume_path, fingerprint(case, config, device, encoder_images, critic_images))
              if resume_path else None)
    if resume_path:  # a save killed mid-way left its temporary file (as large as a state)
        discard_stale_temporaries(resume_path)
    losses = train(encoder, objective, batches, optimizers, config.epochs, device, prior_generator,
                   description=f"train case {case}", resume=resume, checkpoint_every=checkpoint_every,
                   precision=config.precision)
    checkpoint = {"case": case, "config": asdict(config), "state_dict": encoder.cpu().state_dict()}
    with atomic_write(encoder_out) as handle:
        torch.save(checkpoint, handle)
    with atomic_write(loss_out, "w") as handle:
        losses.to_csv(handle, index=False)
    if resume and discard_resume:
        resume.discard()
    return losses


def main(argv: list[str] | None = None) -> None:
    """CLI: train one case."""
    parser = argparse.ArgumentParser(prog="mifeatures train", description=__doc__.splitlines()[0])
    parser.add_argument("--case", required=True, help="encoder case: a, b, c or d")
    parser.add_argument("--encoder-images", required=True, help="96×96 grayscale .npy (encoder input)")
    parser.add_argument("--critic-images", required=True, help="grayscale .npy at the case's map size")
    parser.add_argument("--encoder-out", required=True, help="checkpoint to write (.pt)")
    parser.add_argument("--loss-out", required=True, help="per-step loss log to write (.csv)")
    # params.yaml owns these values (train.*): the CLI takes them as given, with no second default.
    parser.add_argument("--epochs", type=int, required=True, help="passes over the images (train.epochs)")
    parser.add_argument("--batch-size", type=int, required=True, help="images per step (train.batch_size)")
    parser.add_argument("--lr", type=float, required=True, help="Adam learning rate (train.lr)")
    parser.add_argument("--seed", type=int, required=True, help="the run's seed (one of train.seeds)")
    parser.add_argument("--alpha", type=float, required=True, help="global weight (train.alpha)")
    parser.add_argument("--beta", type=float, required=True, help="local weight (train.beta)")
    parser.add_argument("--gamma", type=float, required=True, help="prior weight (train.gamma)")
    parser.add_argument("--device", required=True, help="auto, cpu or cuda (train.device)")
    parser.add_argument("--precision", choices=PRECISIONS, required=True,
                        help="fp32 (no TF32), tf32 (CUDA only) or bf16 autocast (train.precision)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="faithful",
                        help="faithful: the article's single loss; corrected: the prior played adversarially, "
                             "as the official DIM code does (the encoder fools a discriminator trained on "
                             "detached maps); default: %(default)s")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch; default: %(default)s")
    parser.add_argument("--resume-state", help="state to resume from and save to; default: none")
    parser.add_argument("--checkpoint-every", type=int, required=True,
                        help="epochs between saved resume states (train.checkpoint_every)")
    args = parser.parse_args(argv)
    if args.checkpoint_every < 1:
        parser.error(f"--checkpoint-every must be ≥ 1, got {args.checkpoint_every}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = TrainConfig(args.epochs, args.batch_size, args.lr, args.seed, args.alpha, args.beta,
                         args.gamma, args.device, args.precision, ADVERSARIAL_PRIOR[args.protocol])
    losses = run(args.case, args.encoder_images, args.critic_images, config, args.encoder_out, args.loss_out,
                 args.threads, args.resume_state, args.checkpoint_every, discard_resume=False)
    # Protocol and seed say which run this is, as the case does: context. The params are params.yaml's
    # train keys (train.seeds holds the seed; the protocol sets adversarial_prior).
    params = {f"train.{key}": value for key, value in asdict(config).items()
              if key not in ("seed", "adversarial_prior")}
    job = provenance.record(
        "train", {"encoder_images": args.encoder_images, "critic_images": args.critic_images}, params,
        {"case": args.case, "protocol": args.protocol, "seed": args.seed}, device=str(resolve_device(config.device)))
    provenance.write([args.encoder_out, args.loss_out], job)
    if args.resume_state:  # only now is the job's output complete
        Path(args.resume_state).unlink(missing_ok=True)
    final = losses[losses.epoch == losses.epoch.max()].loss.mean()
    print(f"case {args.case}: {len(losses)} steps, last-epoch mean loss {final:.4f}; wrote "
          f"{Path(args.encoder_out)} and {Path(args.loss_out)}")


if __name__ == "__main__":
    main()
