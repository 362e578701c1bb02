"""How a job runs torch: its device, CPU threads, float precision and deterministic kernels, set once at
the job's start by ``set_up`` for every stage that runs an encoder, and described as set for the job's
provenance record (``Runtime.describe``).
"""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import dataclass

import torch

PRECISIONS = ("fp32", "tf32", "bf16")
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """'auto' → CUDA when present, else CPU; 'cuda' without a GPU is an error, not a silent fallback."""
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; expected {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("the device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


@dataclass(frozen=True)
class Runtime:
    """The torch settings a job runs under (made by ``set_up``)."""

    device: torch.device
    threads: int
    precision: str

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context the forward pass and loss run in: bfloat16 autocast for bf16, else none."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def describe(self) -> dict:
        """The device and float settings, for the provenance record."""
        tf32 = self.precision == "tf32"
        return {"device": str(self.device),
                "device_name": (torch.cuda.get_device_name(self.device) if self.device.type == "cuda"
                                else platform.processor() or platform.machine()),
                "torch_threads": self.threads, "precision": self.precision,
                "float32_matmul_precision": "high" if tf32 else "highest", "tf32_matmul": tf32, "tf32_cudnn": tf32,
                "deterministic_algorithms": True}


def set_up(device: str, threads: int, precision: str = "fp32") -> Runtime:
    """Set torch up for a job and return its settings.

    ``threads`` is fixed, not left to torch: its CPU results change in the last digits with the thread
    count. Kernels are deterministic (cuDNN's autotuner off). fp32 turns TF32 off everywhere (torch leaves
    cuDNN's on by default), so fp32 means fp32; tf32 lets CUDA matmuls and convolutions use it (no effect
    on a CPU); bf16 is fp32 plus bfloat16 autocast (``Runtime.autocast``).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if threads < 1:
        raise ValueError(f"threads must be ≥ 1, got {threads}")
    resolved = resolve_device(device)
    torch.set_num_threads(threads)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
    # torch.use_deterministic_algorithms would also import torch's compiler (2.4 s a job on a CPU machine)
    # to set a torch.compile flag; no stage compiles, so the kernels' switch is set alone.
    torch._C._set_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    return Runtime(resolved, threads, precision)
