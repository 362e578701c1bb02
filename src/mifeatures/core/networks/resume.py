"""A training run's resume state, saved atomically every few epochs, and the fingerprint that ties a state
to the one run that may continue from it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from mifeatures.core.io import atomic_write
from mifeatures.core.networks.shapes import Critics

log = logging.getLogger(__name__)


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


def fingerprint(case: str, config, device: torch.device, code: str, *arrays: np.ndarray,
                fused_adam: bool = False, cuda_graph: bool = False, critics: Critics) -> str:
    """Identity of a run: case, hyperparameters (a dataclass), the critics' widths, input image bytes and all that
    changes its numbers.

    That is the device actually used (on CUDA: which GPU model, and the cuDNN release), ``code`` (a digest
    of the library code the run executes), the torch release and torch's thread count (read here, so set it
    first), whether Adam's kernel is the fused one (``fused_adam``, which changes the last bits) and whether
    the step is a CUDA graph's (``cuda_graph``, whose Adam keeps its step counts on the GPU): a run
    resumed after any of them changed would mix epochs of two different computations.
    """
    on_gpu = device.type == "cuda" and torch.cuda.is_available()
    identity = {"case": case, **asdict(config), "critics": asdict(critics), "resolved_device": str(device),
                "gpu": torch.cuda.get_device_name(device) if on_gpu else None,
                "cudnn": torch.backends.cudnn.version() if on_gpu else None,
                "code": code, "torch": torch.__version__,
                "threads": torch.get_num_threads(), "fused_adam": fused_adam}
    if cuda_graph:
        identity["cuda_graph"] = True
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
