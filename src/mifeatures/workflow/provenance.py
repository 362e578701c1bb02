"""Provenance: which inputs, parameters, code and environment made each output, back to the dataset.

Every stage writes ``OUTPUT.prov.json`` beside each output, in the same job and atomically (the
workflow declares these records as outputs too). A record holds the sha256 of every input file and
embeds the inputs' own records, so a figure's record is the whole chain down to the raw dataset.
``mifeatures provenance`` (module ``mifeatures.workflow.audit``) prints and verifies that chain.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import mifeatures
from mifeatures.workflow import sources
from mifeatures.core.io import atomic_write

SUFFIX = ".prov.json"
# Set by the workflow to the config files it merged (a JSON list), so that a figure is verified against the
# config that made it.
CONFIG_FILES_VARIABLE = "MIFEATURES_CONFIG_FILES"
# Set by the workflow for its jobs: the ledger (mifeatures.workflow.records) in which each record written is noted, so
# that a later run can tell the records this checkout made from records that arrived from elsewhere.
LEDGER_VARIABLE = "MIFEATURES_LEDGER"
LEDGER = Path(".snakemake/mifeatures-records")
PACKAGES = ("torch", "numpy", "numba", "pandas", "scikit-image", "scikit-learn", "matplotlib", "snakemake", "dvc")


def sidecar(path: str | Path) -> Path:
    """Where the record of ``path`` lives."""
    return Path(f"{path}{SUFFIX}")


def sha256(path: str | Path) -> str:
    """Content hash of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _git(folder: Path, *args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def git_state(package: Path = sources.ROOT) -> tuple[str | None, bool | None]:
    """(commit, whether the package's own files differ from it, untracked ones included); None outside git.

    An edited params.yaml is not a change of code; a new module in the package is.
    """
    commit = _git(package, "rev-parse", "HEAD")
    status = _git(package, "status", "--porcelain", "--untracked-files=all", "--", ".")
    return (commit.strip() if commit else None), (bool(status.strip()) if status is not None else None)


def code_identity(*roots: str) -> dict[str, Any]:
    """Package version, git state, and a digest of each module the job runs (``mifeatures.workflow.sources``: its
    stage, and a module it imports by name), which is what ``--verify`` compares with the code as it is now."""
    commit, dirty = git_state()
    return {"mifeatures": mifeatures.__version__, "git_commit": commit, "git_dirty": dirty,
            "modules": sources.digests(*roots)}


@functools.cache
def _versions() -> dict[str, Any]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def environment(runtime: dict[str, Any] | None = None, code: tuple[str, ...] = ()) -> dict[str, Any]:
    """Python, platform and package versions (``packages``: every package the ``code`` modules import),
    and for a job that ran torch its build and ``runtime``: the device and float settings the job set itself
    up with (``Runtime.describe``). A job that never imported torch does not load it here: its environment
    need not hold it."""
    torch = sys.modules.get("torch")
    # Each package by its import name and own __version__, read from the modules the job has loaded: reading
    # installed distributions' metadata would cost most of a second per job.
    imported = sorted(sources.imported_packages(*sources.modules(*code))) if code else []
    versions = {"python": platform.python_version(), "platform": platform.platform(), **_versions(),
                "allocator": os.environ.get("GLIBC_TUNABLES"),  # glibc's malloc settings (mifeatures.workflow.memory)
                "packages": {name: getattr(sys.modules[name], "__version__", None) for name in imported
                             if name in sys.modules}}
    if torch is None:
        return versions | {"torch_build": None, "device": None}
    torch_build = {"version": torch.__version__, "git": torch.version.git_version, "cuda": torch.version.cuda,
                   "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    return versions | {"torch_build": torch_build, "cuda_available": torch.cuda.is_available(),
                       **(runtime or {"device": None})}


def record(stage: str, inputs: dict[str, str | Path], params: dict[str, Any], context: dict[str, Any] | None = None,
           runtime: dict[str, Any] | None = None, code: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The record of one job: its inputs (hashed, with their own records), params, code and environment.

    ``params`` maps params.yaml keys (``train.lr``) to the values the job used; ``context`` holds
    what selects among them (the case, whose per-case overrides apply) or describes the job
    without being a parameter (the URL a dataset came from); ``runtime`` the torch set-up it ran under;
    ``code`` the modules it ran from, when not the stage's imports alone.
    """
    roots = code or (f"stages.{stage}",)
    return {
        "stage": stage,
        "command": shlex.join(sys.orig_argv),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config_files": _config_files(),
        "context": context or {},
        "params": params,
        "inputs": {role: _input(path) for role, path in inputs.items()},
        "code": code_identity(*roots),
        "environment": environment(runtime, roots),
    }


def _config_files() -> list[str] | None:
    """The config files the workflow ran the job with: a JSON list (a name may hold any character)."""
    value = os.environ.get(CONFIG_FILES_VARIABLE)
    if not value:
        return None
    try:
        files = json.loads(value)
    except ValueError:
        files = None
    return files if isinstance(files, list) else [value]


def ledger_entry(ledger: Path, path: str | Path) -> Path:
    """The ledger's file for the record ``path`` (relative to the working directory)."""
    return ledger / urllib.parse.quote(os.path.normpath(str(path)), safe="")


def note(record_path: str | Path, ledger: str | Path) -> None:
    """Note in ``ledger`` that ``record_path`` holds, byte for byte, what this checkout's run wrote or accepted."""
    with atomic_write(ledger_entry(Path(ledger), record_path), "w") as handle:
        handle.write(hashlib.sha256(Path(record_path).read_bytes()).hexdigest())


def _input(path: str | Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": str(path), "sha256": sha256(path)}
    if sidecar(path).exists():
        entry["record"] = json.loads(sidecar(path).read_text())
    return entry


def write(outputs: list[str | Path], job: dict[str, Any]) -> None:
    """Write the record of each output (with the output's own hash) beside it, atomically."""
    for output in outputs:
        with atomic_write(sidecar(output), "w") as handle:
            json.dump({"output": {"path": str(output), "sha256": sha256(output)}, **job}, handle, indent=1)
            handle.write("\n")
        if ledger := os.environ.get(LEDGER_VARIABLE):
            note(sidecar(output), ledger)


def png_metadata(job: dict[str, Any]) -> dict[str, str]:
    """The essentials of a record as PNG text chunks: code, params and direct input hashes."""
    return {
        "Software": f"mifeatures {job['code']['mifeatures']}",
        "mifeatures:code": json.dumps(job["code"], sort_keys=True),
        "mifeatures:params": json.dumps(job["params"], sort_keys=True),
        "mifeatures:inputs": json.dumps({entry["path"]: entry["sha256"] for entry in job["inputs"].values()}),
    }
